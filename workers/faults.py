"""Fault injection for the grid engine's fault tests and benches (off unless configured).

QUANTGRID_FAULTS is a JSON list of {"at": method, "match": substring, "fault": kind, "times": n}:
the worker calls `inject(method, name)` at the start of build_model / quantize / open_engine /
evaluate (and open_encoder / compare, open_server / benchmark), where `name` is "model/format/task".
Kinds: oom (raises MemoryError, what an allocator failure looks like to Python), error (a
deterministic RuntimeError), hang (blocks the call, the actor's heartbeat still answers), crash
(the process exits), server_unhealthy / port_in_use / load_generator_failed (the perf stage's
errors). QUANTGRID_FAULTS_DIR holds one file per firing so `times` counts across processes: a
retried attempt on a new actor sees the fault only as often as asked.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def inject(method: str, name: str) -> None:
    spec = os.environ.get("QUANTGRID_FAULTS")
    if not spec:
        return
    state = Path(os.environ.get("QUANTGRID_FAULTS_DIR") or "/tmp/quantgrid-faults")
    state.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(json.loads(spec)):
        if f.get("at") != method or f.get("match", "") not in name:
            continue
        for n in range(int(f.get("times", 1))):
            try:  # O_EXCL: exactly one firing per slot, even across concurrent actors
                os.close(os.open(state / f"{i}-{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            kind = f.get("fault")
            if kind == "oom":
                raise MemoryError(f"injected out of memory in {method}({name})")
            if kind == "error":
                raise RuntimeError(f"injected deterministic error in {method}({name})")
            if kind == "hang":
                time.sleep(float(f.get("seconds", 1e6)))
                return
            if kind == "crash":
                os._exit(17)
            if kind in ("server_unhealthy", "port_in_use", "load_generator_failed"):  # the perf stage's failures
                from workers.stages import perf

                cls = {
                    "server_unhealthy": perf.ServerUnhealthy,
                    "port_in_use": perf.PortInUse,
                    "load_generator_failed": perf.LoadGeneratorFailed,
                }[kind]
                raise cls(f"injected {kind} in {method}({name})")
            raise ValueError(f"QUANTGRID_FAULTS: unknown fault kind {kind!r}")
        return
