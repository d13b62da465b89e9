"""`quantgrid gc`: remove content-addressed checkpoints no ledger references.

Every built or quantized checkpoint a sweep used is recorded in its ledger (`artifacts`); what
no ledger under the given run roots names is garbage. A checkpoint being built right now holds
its build lock, so gc skips it; half-written temp dirs of crashed builds go too once their lock
is free.
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

from orchestrator.store.ledger import Ledger


def referenced(run_roots: list[Path]) -> set[str]:
    paths: set[str] = set()
    for root in run_roots:
        for db in sorted(Path(root).glob("*/ledger.db")):
            led = Ledger(db)
            try:
                paths |= {str(Path(p).resolve()) for p in led.artifact_paths()}
            finally:
                led.close()
    return paths


def _unlocked(target: Path) -> bool:
    lock = Path(str(target) + ".lock")
    if not lock.exists():
        return True
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a build is running
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def collect(cache: Path, run_roots: list[Path], dry_run: bool = False) -> tuple[list[tuple[Path, int]], int]:
    """(removed [(path, bytes)], kept count) over cache/checkpoints and cache/models."""
    keep = referenced(run_roots)
    removed: list[tuple[Path, int]] = []
    kept = 0
    for kind in ("checkpoints", "models"):
        base = cache / kind
        if not base.is_dir():
            continue
        for d in sorted(p for p in base.iterdir() if p.is_dir()):
            tmp = d.name.startswith(".")
            target = base / d.name[1:].rsplit(".", 1)[0] if tmp else d  # .NAME.random -> NAME
            if str(d.resolve()) in keep or not _unlocked(target):
                kept += 1
                continue
            size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            removed.append((d, size))
            if not dry_run:
                shutil.rmtree(d, ignore_errors=True)
                lock = Path(str(d) + ".lock")
                if not tmp and lock.exists():
                    lock.unlink(missing_ok=True)
    return removed, kept
