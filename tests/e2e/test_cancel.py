"""`quantgrid cancel` stops a running sweep (the in-flight result is fenced off); `resume` finishes it."""

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _count(ledger: Path, state: str) -> int:
    try:
        with sqlite3.connect(ledger, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM cells WHERE state=?", (state,)).fetchone()[0]
    except sqlite3.Error:
        return 0


def test_cancel_then_resume(tmp_path, tiny_llama):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cli = [sys.executable, "-m", "orchestrator.cli"]
    proc = subprocess.Popen(
        [
            *cli,
            "run",
            "sweep=tiny",
            "sweep.formats=[bf16]",
            "sweep.tasks=[mmlu_local,humaneval_local,ppl_local]",
            f"run_dir={tmp_path}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ledger = tmp_path / "tiny" / "ledger.db"
    deadline = time.time() + 300
    while _count(ledger, "leased") < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)  # cancel while the engine group is in flight
    cancel = subprocess.run(
        [*cli, "cancel", "tiny", "--run-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cancel.returncode == 0, cancel.stderr
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "cancelled" in out, out[-2000:]
    assert _count(ledger, "done") < 3
    with sqlite3.connect(ledger) as db:  # the in-flight cell's result was fenced off, not recorded
        assert db.execute("SELECT COUNT(*) FROM attempts WHERE state='cancelled'").fetchone()[0] == 1
    resumed = subprocess.run(
        [*cli, "resume", "tiny", "--run-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    assert _count(ledger, "done") == 3
