"""A real local multi-node Ray cluster for the e2e tests: a head plus worker nodes, each started
with `ray start --block` in a session of its own (stopped by the test alone), each worker node
with its own temp dir, as a second machine has."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    gcs: str  # 127.0.0.1:PORT, for ray_address=
    dashboard: str  # http://127.0.0.1:PORT, the job API
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)  # head first
    temp_dirs: list[str] = field(default_factory=list)  # per worker node, in start order

    def node_of_pid(self, pid: int) -> int | None:
        """Which worker node (1-based; 0 = head) a process belongs to: Ray's workers are
        started by their node's raylet, in the session of that node's `ray start`."""
        try:
            sid = os.getsid(pid)
        except ProcessLookupError:
            return None
        return next((i for i, p in enumerate(self.procs) if p.pid == sid), None)

    def kill_node(self, i: int) -> None:
        """The machine goes away: SIGKILL every process of node i (raylet, agents, workers)."""
        sid = self.procs[i].pid
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == sid:
                        os.kill(int(entry.name), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.procs[i].wait(10)

    def stop(self) -> None:
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10  # `ray start --block` stops its node's processes on SIGTERM
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def start_cluster(
    token_dir: Path, head_cpus: int, node_cpus: list[int], head_env: dict[str, str] | None = None
) -> LocalCluster:
    # Ray 2.60 starts clusters with token authentication on; a client sends the token when
    # RAY_AUTH_MODE=token. `ray start --head` refuses to start without a token (it creates none:
    # ray/scripts/scripts.py, ensure_token_if_auth_enabled(create_token_if_missing=False)), so the
    # cluster gets its own, not whatever ~/.ray/auth_token an earlier local ray.init() left.
    token = token_dir / "auth_token"
    token.write_text(uuid.uuid4().hex)
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    gcs, dash = free_port(), free_port()
    common = ["--block", "--disable-usage-stats"]
    cluster = LocalCluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", env)
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={gcs}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--num-cpus={head_cpus}",
            *common,
        ],
        env={**env, **(head_env or {})},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cluster.procs.append(head)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{cluster.dashboard}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # up, and asking for Ray's auth token
                break
            except OSError:
                if head.poll() is not None:
                    pytest.fail(f"`ray start --head` exited with {head.returncode} before its dashboard came up")
                time.sleep(1)
        else:
            pytest.fail("the local Ray head's dashboard did not come up within 120 s")
        for cpus in node_cpus:
            # Each node's own temp dir: nodes sharing one session dir share runtime_resources/, and a
            # node's runtime-env agent deletes the job's working_dir (the driver's cwd and PYTHONPATH,
            # on the head) when its own actors end.
            tmp = tempfile.mkdtemp(prefix="qg-ray-node-", dir="/tmp")  # short: Ray's socket paths
            cluster.temp_dirs.append(tmp)
            cluster.procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "ray"),
                        "start",
                        f"--address={cluster.gcs}",
                        "--node-ip-address=127.0.0.1",
                        f"--num-cpus={cpus}",
                        f"--temp-dir={tmp}",
                        *common,
                    ],
                    env=env,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    """`start(head_cpus, node_cpus, head_env)` -> LocalCluster; every cluster stopped at the end."""
    started: list[LocalCluster] = []

    def start(head_cpus: int, node_cpus: list[int], head_env: dict[str, str] | None = None) -> LocalCluster:
        started.append(start_cluster(tmp_path_factory.mktemp("ray-auth"), head_cpus, node_cpus, head_env))
        return started[-1]

    yield start
    for c in started:
        c.stop()
