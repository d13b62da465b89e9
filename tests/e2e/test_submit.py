"""`quantgrid submit` against a real local Ray cluster: a head (dashboard on 127.0.0.1) plus a
second node, both started with `ray start --block` (stopped by this test alone), a tiny-llama
sweep submitted through Ray's job API, finished with its results in the ledger and MLflow."""

import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(local_cluster):
    c = local_cluster(head_cpus=2, node_cpus=[1])
    return c.dashboard, c.env


def test_submitted_sweep_finishes_with_results_in_mlflow(cluster, tmp_path, tiny_llama):
    address, env = cluster
    run_dir = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "submit",
            "sweep=tiny",
            "sweep.formats=[bf16]",
            "sweep.tasks=[ppl_local]",
            f"run_dir={run_dir}",
            "--address",
            address,
            "--wait",
            "600",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=700,
    )
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert "submitted sweep tiny as Ray job quantgrid-tiny-" in proc.stdout
    assert proc.returncode == 0 and "SUCCEEDED" in proc.stdout
    db = sqlite3.connect(run_dir / "tiny" / "ledger.db")
    assert db.execute("SELECT state, COUNT(*) FROM cells GROUP BY state").fetchall() == [("done", 1)]
    ml = sqlite3.connect(run_dir / "tiny" / "mlflow.db")
    assert ml.execute("SELECT COUNT(*) FROM metrics WHERE key='ppl_local/word_perplexity'").fetchone()[0] == 1
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "status", "tiny", "--run-dir", str(run_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0 and "tiny-llama" in status.stdout
    # from a machine that does not see the run directory: the job API only
    elsewhere = ["--run-dir", str(tmp_path / "not-here"), "--address", address]
    cli = lambda *a: subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *a], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    st = cli("status", "tiny", *elsewhere)
    assert st.returncode == 0 and re.search(r"job quantgrid-tiny-\S+: SUCCEEDED \(started ", st.stdout), (
        st.stdout + st.stderr
    )
    logs = cli("logs", "tiny", *elsewhere, "-n", "400")
    assert logs.returncode == 0 and "driver log" in logs.stdout and "ppl_local" in logs.stdout, logs.stdout[-2000:]
    # a second submission, cancelled through the job API while it runs
    second = cli(
        "submit",
        "sweep=tiny",
        "sweep.formats=[bf16]",
        "sweep.tasks=[ppl_local]",
        f"run_dir={tmp_path / 'runs2'}",
        "--address",
        address,
    )
    assert second.returncode == 0, second.stderr
    time.sleep(1)
    cancel = cli("cancel", "tiny", *elsewhere)
    assert cancel.returncode == 0 and "stopped Ray job(s) quantgrid-tiny-" in cancel.stdout, (
        cancel.stdout + cancel.stderr
    )
    deadline = time.time() + 120
    while time.time() < deadline and "STOPPED" not in (st := cli("status", "tiny", *elsewhere)).stdout:
        time.sleep(2)
    assert st.stdout.count("SUCCEEDED") == 1 and st.stdout.count("STOPPED") == 1, st.stdout
    assert "no running Ray job" in cli("cancel", "tiny", *elsewhere).stdout


def test_unreachable_job_api_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "submit",
            "sweep=tiny",
            f"run_dir={tmp_path}",
            "--address",
            f"http://127.0.0.1:{_port()}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Ray job API at http://127.0.0.1:" in proc.stderr
