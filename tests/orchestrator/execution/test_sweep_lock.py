"""One driver per sweep (an OS lock naming its owner) and a ledger only on a local filesystem."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import ConfigError
from orchestrator.execution.sweep_lock import SweepLock, check_local, filesystem_type

ROOT = Path(__file__).resolve().parents[3]
MOUNTS = """/dev/vda / ext4 rw,relatime 0 0
fs-0123.efs.us-east-1.amazonaws.com:/ /shared nfs4 rw,vers=4.1 0 0
/dev/vdb /shared/local xfs rw 0 0
//srv/share /mnt/smb cifs rw 0 0
gcsfuse /mnt/bucket fuse.gcsfuse rw 0 0
"""


@pytest.mark.parametrize(
    "path,kind",
    [
        ("/work/runs", "ext4"),
        ("/shared/runs", "nfs4"),
        ("/shared/local/runs", "xfs"),
        ("/shared", "nfs4"),
        ("/mnt/smb/x", "cifs"),
        ("/mnt/bucket/runs", "fuse.gcsfuse"),
    ],
)
def test_the_longest_mount_point_names_the_filesystem(path, kind):
    assert filesystem_type(Path(path), MOUNTS) == kind


@pytest.mark.parametrize("path", ["/shared/runs", "/mnt/smb/x", "/mnt/bucket/runs"])
def test_a_run_dir_on_a_network_filesystem_is_refused_in_one_line(path):
    with pytest.raises(ConfigError, match=r"is on a network filesystem \(.+\): the ledger \(SQLite WAL\)") as e:
        check_local(Path(path), MOUNTS)
    assert "\n" not in str(e.value)
    check_local(Path("/shared/local/runs"), MOUNTS)  # a local volume under the shared mount is fine


def test_this_machines_run_dir_is_local(tmp_path):
    check_local(tmp_path)


def test_a_second_driver_is_refused_naming_the_owner_and_the_lock_goes_with_the_owner(tmp_path):
    with SweepLock(tmp_path, "tiny"):
        with pytest.raises(ConfigError, match=rf"sweep tiny is already running: driver pid {os.getpid()} on ") as e:
            SweepLock(tmp_path, "tiny").acquire()
        assert "\n" not in str(e.value)
    SweepLock(tmp_path, "tiny").acquire().release()  # released: the next driver takes it
    # A driver killed with SIGKILL holds nothing: the kernel drops its lock with the process.
    code = (
        "import os, sys; from pathlib import Path; from orchestrator.execution.sweep_lock import SweepLock; "
        f"SweepLock(Path({str(tmp_path)!r}), 'tiny').acquire(); print('held', flush=True); os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9 and "held" in proc.stdout
    with SweepLock(tmp_path, "tiny") as lock:
        assert lock.owner()["pid"] == os.getpid()
