"""`quantgrid submit` against a real local Ray cluster: a head (dashboard on 127.0.0.1) plus a
second node, both started with `ray start --block` (stopped by this test alone), a tiny-llama
sweep submitted through Ray's job API, finished with its results in the ledger and MLflow."""

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Ray 2.60 starts clusters with token authentication on; a client sends the token when
    # RAY_AUTH_MODE=token. `ray start --head` refuses to start without a token (it creates none:
    # ray/scripts/scripts.py, ensure_token_if_auth_enabled(create_token_if_missing=False)), so the
    # cluster gets its own, not whatever ~/.ray/auth_token an earlier local ray.init() left.
    token = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    token.write_text(uuid.uuid4().hex)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("MLFLOW_TRACKING_URI", None)
    gcs, dash = _port(), _port()
    common = ["--block", "--disable-usage-stats"]
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", *common],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [head]
    # The second node gets a temp dir of its own, as a second machine has: nodes sharing one
    # session dir share runtime_resources/, and the second node's runtime-env agent deletes the
    # job's working_dir (the driver's cwd and PYTHONPATH, on the head) when its own actors end.
    node2_tmp = tempfile.mkdtemp(prefix="qg-ray-node2-", dir="/tmp")  # short: Ray's socket paths
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # up, and asking for Ray's auth token (~/.ray/auth_token)
                break
            except OSError:
                if head.poll() is not None:
                    pytest.fail(f"`ray start --head` exited with {head.returncode} before its dashboard came up")
                time.sleep(1)
        else:
            pytest.fail("the local Ray head's dashboard did not come up within 120 s")
        procs.append(subprocess.Popen([str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1",
                                       "--num-cpus=1", f"--temp-dir={node2_tmp}", *common], env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield address, env
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10  # `ray start --block` stops its node's processes on SIGTERM
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        shutil.rmtree(node2_tmp, ignore_errors=True)


def test_submitted_sweep_finishes_with_results_in_mlflow(cluster, tmp_path, tiny_llama):
    address, env = cluster
    run_dir = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", "sweep=tiny", "sweep.formats=[bf16]",
                           "sweep.tasks=[ppl_local]", f"run_dir={run_dir}", "--address", address, "--wait", "600"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=700)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert "submitted sweep tiny as Ray job quantgrid-tiny-" in proc.stdout
    assert proc.returncode == 0 and "SUCCEEDED" in proc.stdout
    db = sqlite3.connect(run_dir / "tiny" / "ledger.db")
    assert db.execute("SELECT state, COUNT(*) FROM cells GROUP BY state").fetchall() == [("done", 1)]
    ml = sqlite3.connect(run_dir / "tiny" / "mlflow.db")
    assert ml.execute("SELECT COUNT(*) FROM metrics WHERE key='ppl_local/word_perplexity'").fetchone()[0] == 1
    status = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", "tiny", "--run-dir", str(run_dir)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "tiny-llama" in status.stdout
    # from a machine that does not see the run directory: the job API only
    elsewhere = ["--run-dir", str(tmp_path / "not-here"), "--address", address]
    cli = lambda *a: subprocess.run([sys.executable, "-m", "orchestrator.cli", *a], cwd=ROOT, env=env,
                                    capture_output=True, text=True, timeout=120)
    st = cli("status", "tiny", *elsewhere)
    assert st.returncode == 0 and re.search(r"job quantgrid-tiny-\S+: SUCCEEDED \(started ", st.stdout), st.stdout + st.stderr
    logs = cli("logs", "tiny", *elsewhere, "-n", "400")
    assert logs.returncode == 0 and "driver log" in logs.stdout and "ppl_local" in logs.stdout, logs.stdout[-2000:]
    # a second submission, cancelled through the job API while it runs
    second = cli("submit", "sweep=tiny", "sweep.formats=[bf16]", "sweep.tasks=[ppl_local]", f"run_dir={tmp_path / 'runs2'}",
                 "--address", address)
    assert second.returncode == 0, second.stderr
    time.sleep(1)
    cancel = cli("cancel", "tiny", *elsewhere)
    assert cancel.returncode == 0 and "stopped Ray job(s) quantgrid-tiny-" in cancel.stdout, cancel.stdout + cancel.stderr
    deadline = time.time() + 120
    while time.time() < deadline and "STOPPED" not in (st := cli("status", "tiny", *elsewhere)).stdout:
        time.sleep(2)
    assert st.stdout.count("SUCCEEDED") == 1 and st.stdout.count("STOPPED") == 1, st.stdout
    assert "no running Ray job" in cli("cancel", "tiny", *elsewhere).stdout


def test_unreachable_job_api_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", "sweep=tiny", f"run_dir={tmp_path}",
                           "--address", f"http://127.0.0.1:{_port()}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Ray job API at http://127.0.0.1:" in proc.stderr
