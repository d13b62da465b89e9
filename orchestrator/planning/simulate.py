"""Discrete-event simulation of a sweep on a cluster, driven by the real placement policy.

Same `PlacementPolicy.jobs()` / `dispatch()` and `ClusterState` as the Ray scheduler; only the
clock is simulated (each job takes its cost-model seconds). Reports the makespan against the
lower bound max(total work / devices, longest chain), computed on the unsplit plan (one engine
load per group), so extra data-parallel loads count against us, never for us.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from typing import Iterable

from orchestrator.planning.placement import ClusterState, NodeShape
from orchestrator.planning.policy import Job, PlacementPolicy, ReadyQueue
from quantgrid.types import Stage, StageKind


@dataclass
class SimResult:
    makespan_s: float
    lower_bound_s: float
    engine_loads: int
    min_engine_loads: int
    jobs: int
    devices: int
    utilization: float  # busy device-seconds / (devices x makespan)

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.lower_bound_s if self.lower_bound_s else float("nan")

    def as_dict(self) -> dict:
        return {
            "makespan_s": round(self.makespan_s, 1),
            "lower_bound_s": round(self.lower_bound_s, 1),
            "ratio": round(self.ratio, 4),
            "engine_loads": self.engine_loads,
            "min_engine_loads": self.min_engine_loads,
            "jobs": self.jobs,
            "devices": self.devices,
            "utilization": round(self.utilization, 4),
        }


def lower_bound(policy: PlacementPolicy, stages: list[Stage]) -> tuple[float, int]:
    """(max(total device-seconds / devices, longest chain), engine loads without DP)."""
    unsplit = PlacementPolicy(policy.nodes, replace(policy.cfg, data_parallel="off"), policy.cost)
    jobs = {j.id: j for j in unsplit.jobs(stages)}
    unit, devices = unsplit._capacity_units()
    per = (lambda j: j.demand.gpus) if unit == "gpus" else (lambda j: j.demand.cpus)
    work = sum(j.seconds * per(j) for j in jobs.values())
    chain = 0.0
    for j in jobs.values():
        if j.kind is StageKind.EVALUATE:
            # A group can be split down to one cell per replica: its own chain is load + longest cell.
            load = policy.cost.load_seconds(j.stage.model, j.cells[0].engine.accelerator)
            longest = max(policy.cost.cell_seconds(c) for c in j.cells)
            chain = max(chain, PlacementPolicy._chain(jobs, j.deps[0]) + load + longest if j.deps else load + longest)
    loads = sum(j.kind is StageKind.EVALUATE for j in jobs.values())
    return max(work / max(1, devices), chain), loads


def simulate(stages: Iterable[Stage], nodes: list[NodeShape], resources=None, cost=None) -> SimResult:
    stages = list(stages)
    policy = PlacementPolicy(nodes, resources, cost)
    jobs = policy.jobs(stages)
    lb, min_loads = lower_bound(policy, stages)
    state = ClusterState(nodes)
    waiting = {j.id: len(j.deps) for j in jobs}
    children: dict[str, list[Job]] = {}
    for j in jobs:
        for d in j.deps:
            children.setdefault(d, []).append(j)
    ready = ReadyQueue()
    for j in jobs:
        if not j.deps:
            ready.push(j)
    unit, devices = policy._capacity_units()
    per = (lambda j: j.demand.gpus) if unit == "gpus" else (lambda j: j.demand.cpus)
    running: list[tuple[float, int, Job, tuple]] = []
    now, busy, seq = 0.0, 0.0, 0
    done = 0
    while done < len(jobs):
        for job, placement in policy.dispatch(ready, state):
            heapq.heappush(running, (now + job.seconds, seq, job, placement))
            busy += job.seconds * per(job)
            seq += 1
        if not running:
            raise RuntimeError(f"simulation stalled: {len(ready)} ready jobs fit no node")
        now, _, job, placement = heapq.heappop(running)
        state.release(placement)
        done += 1
        for c in children.get(job.id, []):
            waiting[c.id] -= 1
            if waiting[c.id] == 0:
                ready.push(c)
    loads = sum(j.kind is StageKind.EVALUATE for j in jobs)
    return SimResult(now, lb, loads, min_loads, len(jobs), devices, busy / max(1e-9, devices * now))
