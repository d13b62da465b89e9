"""Two sweeps started at the same moment on one machine, in different run directories: each driver
starts its own local Ray (`ray.init(address="local")`, never a cluster someone started here) and
neither breaks the other. A user once saw the first driver die with "The current node timed out
during startup" when two local Ray heads started together."""

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_two_sweeps_in_different_directories_both_finish(tmp_path, tiny_llama):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    t0 = time.time()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "run",
                "sweep=tiny",
                "sweep.formats=[bf16]",
                f"sweep.tasks=[{task}]",
                f"run_dir={tmp_path / name}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, task in (("a", "ppl_local"), ("b", "arith_local"))
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    for name, task in (("a", "ppl_local"), ("b", "arith_local")):
        with sqlite3.connect(tmp_path / name / "tiny" / "ledger.db") as db:
            assert db.execute("SELECT task, state FROM cells").fetchall() == [(task, "done")]
            assert db.execute("SELECT state FROM sweeps").fetchall() == [("done",)]
    print(f"two sweeps at once: both done in {time.time() - t0:.0f} s")
