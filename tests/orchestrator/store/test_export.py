"""The MLflow exporter: ledger -> MLflow, idempotent (fixed timestamps), buffered while the
server is down, safe to kill mid-batch; a real `mlflow server` process for the fault cases."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.synthetic_sweeps import wide_sweep
from orchestrator.store.export import Exporter
from orchestrator.store.ledger import Ledger
from orchestrator.planning.plan import expand
from quantgrid.types import TaskResult

ROOT = Path(__file__).resolve().parents[3]


def filled_ledger(root: Path, models=2, recipes=3, tasks=4, seeds=1):
    sweep = replace(wide_sweep(models=models, recipes=recipes, tasks=tasks, seeds=seeds, seed=5), run_dir=root)
    plan = expand(sweep)
    ledger = Ledger(root / "synthetic" / "ledger.db")
    ledger.open_sweep("synthetic", [], [], plan.cells)
    token = ledger.lease("synthetic", "all", [c.key for c in plan.cells], 600)
    for i, c in enumerate(plan.cells):
        ledger.commit_result(
            "synthetic",
            token,
            TaskResult(
                c.key,
                c.model.name,
                c.format.name,
                c.task.name,
                {"acc,none": (i % 7) / 7, "acc_stderr,none": 0.01},
                [],
                0,
                1.5,
                {"git_commit": "abc"},
                primary_metric="acc,none",
            ),
        )
    ledger.close()
    return plan, root / "synthetic" / "ledger.db"


def history_lengths(uri: str, sweep="synthetic") -> dict[tuple[str, str], int]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(f"quantgrid/{sweep}")
    out = {}
    for run in c.search_runs([exp.experiment_id], "tags.`quantgrid.kind` = 'engine_group'", max_results=1000):
        for key in run.data.metrics:
            out[(run.info.run_id, key)] = len(c.get_metric_history(run.info.run_id, key))
    return out


def test_export_twice_and_after_a_crash_mid_batch_leaves_one_history_entry(tmp_path, monkeypatch):
    plan, db = filled_ledger(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ex = Exporter(db, "synthetic", uri, plan, batch_cells=7)
    from mlflow.tracking import MlflowClient

    calls = {"n": 0}
    real = MlflowClient.log_batch

    def flaky(self, *a, **k):  # the exporter dies after a few batches, mid-push
        calls["n"] += 1
        if calls["n"] == 4:
            raise ConnectionError("killed mid-batch")
        return real(self, *a, **k)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    with pytest.raises(ConnectionError):
        ex.push()
    led = Ledger(db)
    total, acked = led.export_counts("synthetic", uri)
    assert 0 < acked < total
    monkeypatch.setattr(MlflowClient, "log_batch", real)
    assert Exporter(db, "synthetic", uri, plan).push() == total - acked  # a fresh exporter: only the rest
    led.db.execute("DELETE FROM exports")  # forget the acknowledgements: export everything again
    assert Exporter(db, "synthetic", uri, plan).push() == total
    hist = history_lengths(uri)
    groups = len(plan.evaluate_stages)
    assert len({run for run, _ in hist}) == groups  # one run per (model, format), not per cell
    assert set(hist.values()) == {1}  # 0 duplicates after a crash and two full exports
    metric_keys = {k for _, k in hist}
    assert {f"{t.name}/acc" for t in plan.sweep.tasks} <= metric_keys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tracking_server_down_for_the_whole_sweep_then_back(tmp_path):
    plan, db = filled_ledger(tmp_path, models=2, recipes=2, tasks=3)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    cli = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "export",
        "synthetic",
        "--run-dir",
        str(tmp_path),
        "--tracking-uri",
        uri,
    ]
    fail_fast = {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    down = subprocess.run(cli, cwd=ROOT, env=fail_fast, capture_output=True, text=True, timeout=120)
    assert down.returncode == 2 and "unreachable" in down.stderr and "0 of" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    from orchestrator.monitor.ui import start_server, stop

    server, _ = start_server(
        f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts", tmp_path / "server.log", port=port
    )
    try:
        up = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        again = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "exported 0 results" in again.stdout
        with sqlite3.connect(db) as con:  # forget acknowledgements: a full re-export to the same server
            con.execute("DELETE FROM exports")
        full = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert full.returncode == 0 and f"exported {len(plan.cells)} results" in full.stdout
        hist = history_lengths(uri)
        assert len({k for _, k in hist}) >= len(plan.sweep.tasks) * 4 and set(hist.values()) == {1}  # 0 lost, 0 doubled
    finally:
        stop(server)


class _FakeExporter:
    """An Exporter stand-in: `hang` makes every push block like MLflow's HTTP retries on a dead server."""

    def __init__(self, hang: bool):
        self.hang, self.pushes, self.finished, self.last_error = hang, 0, None, ""

    def push(self, run_dir, wait_for_samples=False):
        if self.hang:
            import time

            time.sleep(600)
        self.pushes += 1
        return 0

    def finish(self, summary, status):
        self.finished = (summary, status)


def test_the_last_export_is_bounded_whatever_the_server_does(tmp_path):
    import time

    from orchestrator.store.export import BackgroundExport

    ok = _FakeExporter(hang=False)
    started = []
    bg = BackgroundExport(ok, tmp_path, interval_s=0.05, first=lambda: started.append(1)).start()
    time.sleep(0.3)
    assert bg.drain({"cells_done": 3}, "FINISHED", 5.0) is True
    assert started == [1] and ok.pushes >= 2 and ok.finished == ({"cells_done": 3}, "FINISHED")
    dead = _FakeExporter(hang=True)
    bg = BackgroundExport(dead, tmp_path, interval_s=0.05).start()
    t0 = time.perf_counter()
    assert bg.drain({}, "FINISHED", 0.5) is False
    assert time.perf_counter() - t0 < 1.5 and dead.finished is None


class _FailingExporter(_FakeExporter):
    def push(self, run_dir, wait_for_samples=False):
        self.pushes += 1
        raise FileNotFoundError("[Errno 2] No such file or directory")


def test_a_local_store_that_keeps_failing_is_given_up_after_a_few_final_tries(tmp_path):
    """A broken local store (e.g. a deleted working directory) must not hold the exit for the
    full local grace: the drain stops after FINAL_TRIES failed final rounds, the error kept."""
    import time

    from orchestrator.store.export import BackgroundExport

    broken = _FailingExporter(hang=False)
    bg = BackgroundExport(broken, tmp_path, interval_s=0.05).start()
    t0 = time.perf_counter()
    assert bg.drain({}, "FINISHED", 600.0, stop_on_error=True) is False
    assert time.perf_counter() - t0 < 30 and bg.errors >= BackgroundExport.FINAL_TRIES and broken.finished is None
    assert "FileNotFoundError" in broken.last_error
