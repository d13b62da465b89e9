"""Kill the driver mid-sweep (SIGKILL, whole process group: Ray's local cluster dies with it),
delete the MLflow store, then `quantgrid resume`: the sweep finishes from the ledger alone with
0 scoring calls for cells already done, 0 results lost, 0 duplicated."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["sweep=tiny", "sweep.formats=[int8]", "sweep.tasks=[ppl_local,mmlu_local]"]


def _done(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    try:
        with sqlite3.connect(ledger, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM cells WHERE state='done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_driver_killed_then_resume_from_ledger_alone(tmp_path, tiny_llama):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", *ARGS, f"run_dir={tmp_path}"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ledger = tmp_path / "tiny" / "ledger.db"
    deadline = time.time() + 300
    while _done(ledger) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    done_before = _done(ledger)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= done_before < 4, "the kill must land mid-sweep"
    shutil.rmtree(tmp_path / "tiny" / "mlartifacts", ignore_errors=True)
    (tmp_path / "tiny" / "mlflow.db").unlink()

    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "resume", "tiny", "--run-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"{4 - done_before} cells scored, {done_before} already done" in " ".join(out.stdout.split())
    with sqlite3.connect(ledger) as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM cells GROUP BY state").fetchall())
        results = db.execute("SELECT cell_key, COUNT(*) FROM results GROUP BY cell_key").fetchall()
        rejected = db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
    assert states == {"done": 4}
    assert len(results) == 4 and all(n == 1 for _, n in results)  # 0 lost, 0 duplicated
    assert rejected == 0
    # The new MLflow store holds every result, the ones done before the kill included (the
    # ledger re-exports to a store that lacks the sweep), each metric logged once.
    with sqlite3.connect(tmp_path / "tiny" / "mlflow.db") as db:
        rows = db.execute(
            "SELECT run_uuid, key, COUNT(*) FROM metrics WHERE key IN ('mmlu_local/acc', 'ppl_local/word_perplexity') "
            "GROUP BY run_uuid, key"
        ).fetchall()
    assert len(rows) == 4 and {n for _, _, n in rows} == {1}  # (bf16, int8) x (mmlu, ppl), each logged once
