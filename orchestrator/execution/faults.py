"""Driver-side fault injection for the nothing-lost fault tests (off unless configured).

The actor side has workers/faults.py; some faults can only happen in the driver itself: the
driver dying between writing a result's files and committing it, or its event loop stalling past
the lease while a live actor's result waits. QUANTGRID_DRIVER_FAULTS is a JSON list of
{"at": point, "nth": n, "fault": "crash" | "stall", "seconds": s}: the n-th time (1-based, counted
in this process) the driver reaches `point`, it exits at once (SIGKILL-like: no cleanup, no
finally) or sleeps. Points: "after_samples" (files written, ledger not yet committed) and
"before_result" (a result arrived, not yet handled).
"""

from __future__ import annotations

import json
import os
import time

_seen: dict[str, int] = {}


def driver_fault(point: str) -> None:
    spec = os.environ.get("QUANTGRID_DRIVER_FAULTS")
    if not spec:
        return
    _seen[point] = n = _seen.get(point, 0) + 1
    for f in json.loads(spec):
        if f.get("at") == point and int(f.get("nth", 1)) == n:
            if f.get("fault") == "crash":
                os._exit(19)
            if f.get("fault") == "stall":
                time.sleep(float(f.get("seconds", 10)))
