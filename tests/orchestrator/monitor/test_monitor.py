"""`status`, `logs` and `gc` read the ledger: rates and ETA, attempts with their logs, and
unreferenced checkpoints removed while referenced and in-progress ones stay."""

import fcntl
import time

import pytest

from orchestrator.cli import main
from orchestrator.config import compose, load_sweep
from orchestrator.store.ledger import Ledger
from orchestrator.planning.plan import expand
from quantgrid.types import TaskResult


@pytest.fixture()
def sweep_dir(tmp_path):
    plan = expand(
        load_sweep(
            compose(["sweep=tiny", "sweep.formats=[bf16]", "sweep.tasks=[ppl_local,mmlu_local,humaneval_local]"])
        )
    )
    ledger = Ledger(tmp_path / "tiny" / "ledger.db")
    ledger.open_sweep("tiny", ["sweep=tiny"], [], plan.cells, host=plan.sweep.host.as_dict())
    log = tmp_path / "tiny" / "logs" / "evaluate_tiny-llama_bf16-try1.log"
    log.parent.mkdir(parents=True)
    log.write_text("loading engine\nINFO scoring ppl_local\n")
    c0, c1, c2 = plan.cells
    token = ledger.lease(
        "tiny",
        "evaluate/tiny-llama/bf16",
        [c.key for c in plan.cells],
        60,
        worker_pid=4242,
        node="0",
        fallback={"steps": ["halve_batch_size"]},
        log_path=str(log),
    )
    ledger.start_cell("tiny", c0.key)
    time.sleep(0.05)
    assert ledger.commit_result(
        "tiny",
        token,
        TaskResult(
            c0.key,
            "tiny-llama",
            "bf16",
            "ppl_local",
            {"x": 1.0},
            [],
            1,
            2.0,
            {"oom_fallback": {"steps": ["halve_max_model_len"], "may_change_scores": True}},
        ),
    )
    ledger.start_cell("tiny", c1.key)
    ledger.fail_cells("tiny", [c2.key], "error", "RuntimeError: boom")
    ledger.record_artifact("tiny", "build_model/tiny-llama", str(tmp_path / "cache" / "models" / "kept"), "abc")
    ledger.close()
    return tmp_path, plan.cells


def test_status_shows_progress_rate_running_attempt_and_failure(sweep_dir, capsys):
    root, _ = sweep_dir
    assert main(["status", "tiny", "--run-dir", str(root)]) == 1  # a failed cell: exit 1
    out = " ".join(capsys.readouterr().out.replace("│", " ").replace("┃", " ").split())
    assert "1 done" in out and "1 failed" in out and "1 running" in out
    assert "tiny-llama bf16 native 1 1 1 0" in out  # execution, done failed running pending
    assert "host cpu:" in out  # the machine class the sweep was planned for
    assert "pid 4242" in out and "OOM fallback ['halve_batch_size']" in out
    assert "failed tiny-llama/bf16/humaneval_local: error: RuntimeError: boom" in out
    assert "cells left" in out
    assert "scored after OOM fallback halve_max_model_len (may change scores): tiny-llama/bf16 ppl_local" in out


def test_logs_for_a_cell_show_its_attempts_and_log_tail(sweep_dir, capsys):
    root, cells = sweep_dir
    assert main(["logs", "tiny", "tiny-llama/bf16/ppl_local", "--run-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert cells[0].key in out and "INFO scoring ppl_local" in out and "4242" in out
    assert main(["logs", "tiny", "nope/none", "--run-dir", str(root)]) == 2
    assert "has no cell 'nope/none'" in capsys.readouterr().err


def test_gc_removes_only_unreferenced_unlocked_artifacts(sweep_dir, monkeypatch, capsys):
    root, _ = sweep_dir
    cache = root / "cache"
    monkeypatch.setenv("QUANTGRID_CACHE", str(cache))
    for d in ("models/kept", "checkpoints/stale", "checkpoints/building", "checkpoints/.crashed.x1y2"):
        (cache / d).mkdir(parents=True)
        (cache / d / "model.safetensors").write_bytes(b"0" * 1024)
    with open(cache / "checkpoints" / "building.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a build in progress holds its lock
        assert main(["gc", "--run-dir", str(root), "--dry-run"]) == 0
        assert (cache / "checkpoints" / "stale").exists()
        assert main(["gc", "--run-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert not (cache / "checkpoints" / "stale").exists() and not (cache / "checkpoints" / ".crashed.x1y2").exists()
    assert (cache / "models" / "kept").exists() and (cache / "checkpoints" / "building").exists()
    assert "removed 2 unreferenced artifacts" in out
