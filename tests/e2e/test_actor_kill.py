"""kill -9 of a worker actor mid-evaluation: the group is retried on a fresh actor; 0 results
lost, 0 duplicated, and the lost attempt stays in the ledger as given up (actor_died)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _leased_pid(ledger: Path):
    if not ledger.exists():
        return None
    try:
        with sqlite3.connect(ledger, timeout=1) as db:
            # The evaluate attempt while it scores (build/quantize attempts hold leases too, and
            # their actor may already be gone by the time we look).
            row = db.execute(
                "SELECT a.worker_pid FROM attempts a JOIN cells c ON c.state='running' "
                "WHERE a.state='leased' AND a.stage LIKE 'evaluate/%' AND a.worker_pid IS NOT NULL"
            ).fetchone()
            return row[0] if row else None
    except sqlite3.Error:
        return None


def test_worker_killed_mid_evaluation_is_retried(tmp_path, tiny_llama):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "run",
        "sweep=tiny",
        "sweep.formats=[bf16]",
        "sweep.tasks=[mmlu_local,ppl_local]",
        f"run_dir={tmp_path}",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ledger = tmp_path / "tiny" / "ledger.db"
    deadline = time.time() + 300
    pid = None
    while pid is None and time.time() < deadline and proc.poll() is None:
        pid = _leased_pid(ledger)
        time.sleep(0.2)
    assert pid, "no worker ever leased the group"
    os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "actor_died" in out and "attempt 2" in out
    with sqlite3.connect(ledger) as db:
        assert dict(db.execute("SELECT state, COUNT(*) FROM cells GROUP BY state").fetchall()) == {"done": 2}
        counts = db.execute("SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM results").fetchone()
        lost = db.execute("SELECT failure_class FROM attempts WHERE state='given_up'").fetchall()
    assert counts == (2, 2)  # 0 lost, 0 duplicated
    assert lost == [("actor_died",)]
