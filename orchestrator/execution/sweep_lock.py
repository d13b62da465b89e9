"""One driver per sweep, and a ledger only where SQLite can keep it.

A second driver on a live sweep (`run` again, `resume`, a submitted job landing on the same run
directory) used to abandon the first one's leases in `Ledger.open_sweep`, so both scored the same
cells and fenced each other's results. Now the driver holds an exclusive OS lock (flock) on
`runs/NAME/driver.lock` for as long as it runs, with its host, pid and start time written inside:
a second driver is refused in one line naming the owner. The kernel drops the lock the moment the
owning process dies (SIGKILL included), so a dead owner never needs a takeover; a live one is
stopped with `quantgrid cancel`. The file is opened non-inheritable (PEP 446), so the Ray
processes the driver starts never hold it past the driver.

flock, like SQLite's WAL, needs a local filesystem: on NFS (EFS is NFS 4.1), SMB or FUSE mounts
both locking and WAL's shared memory are unreliable (https://www.sqlite.org/wal.html, "WAL does
not work over a network filesystem"). A run directory on one is refused in one line; on a cluster
the ledger lives on the head's local volume and checkpoints in the shared cache (docker/).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from orchestrator.config import ConfigError

# Filesystem types (as /proc/mounts names them) where SQLite WAL and flock cannot be trusted.
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "9p", "afs")


def filesystem_type(path: Path, mounts: str | None = None) -> str:
    """The type of the filesystem holding `path`: the longest mount point that contains it."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return ""
    path = Path(path).resolve()
    best, kind = "", ""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (path == Path(point) or Path(point) in path.parents) and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def check_local(run_dir: Path, mounts: str | None = None) -> None:
    kind = filesystem_type(run_dir, mounts)
    if kind in NETWORK_FS or kind.startswith("fuse"):
        raise ConfigError(
            f"run_dir {run_dir} is on a network filesystem ({kind}): the ledger (SQLite WAL) and the "
            "driver lock need a local disk; put run_dir on a local volume (checkpoints may stay on "
            "shared storage in QUANTGRID_CACHE)"
        )


class SweepLock:
    """Held by the one driver of a sweep for as long as it runs (a context manager)."""

    def __init__(self, run_dir: Path, sweep: str):
        self.path = Path(run_dir) / "driver.lock"
        self.sweep = sweep
        self._fd: int | None = None

    def owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def acquire(self) -> "SweepLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # O_CLOEXEC by default (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            o = self.owner() or {}
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(o["started"])) if o.get("started") else "?"
            raise ConfigError(
                f"sweep {self.sweep} is already running: driver pid {o.get('pid', '?')} on "
                f"{o.get('host', '?')} since {since} holds {self.path}; wait for it, watch it with "
                f"`quantgrid status {self.sweep}`, or stop it with `quantgrid cancel {self.sweep}`"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "SweepLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
