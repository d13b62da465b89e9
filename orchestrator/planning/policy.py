"""The placement policy: one object, used by the Ray scheduler and by the simulator.

It turns a plan's stages into jobs (with resource demands and cost estimates), decides when an
engine group is worth splitting into data-parallel replicas, and picks which ready jobs start
where. Order: quantize before evaluate (a quantized checkpoint gates every evaluation of its
format, and one actor does all of a model's recipes); within each, the longest chain of
estimated work from the job to the end of the sweep first (critical path; for independent jobs
that is longest-processing-time first). Every engine group runs all its tasks in one actor
lifetime.

Data parallelism: a group whose chain is longer than the sweep's ideal makespan
(total work / devices) would leave devices idle at the end; it is split into replicas, each
one more engine load. The bench reports loads beside makespan so the trade is visible.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from orchestrator.planning.cost import CostModel
from orchestrator.planning.placement import ClusterState, Demand, NodeShape, Placement, demand
from quantgrid.settings import Resources
from quantgrid.types import SCORING, Cell, Stage, StageKind


@dataclass(eq=False)
class Job:
    id: str
    kind: StageKind
    stage: Stage
    cells: list[Cell]
    demand: Demand
    seconds: float  # estimated, including one engine load for evaluate jobs
    deps: list[str] = field(default_factory=list)
    replica: int = 0
    replicas: int = 1
    priority: float = 0.0

    @property
    def actor_key(self) -> tuple:
        """Jobs with equal keys may run one after another in the same actor process."""
        role = {
            StageKind.EVALUATE: "evaluate",
            StageKind.SIMILARITY: "similarity",
            StageKind.PERF: "perf",
            StageKind.SENSITIVITY: "sensitivity",
        }.get(self.kind, "prepare")
        return (role, self.stage.model.name, self.demand.shape)

    @property
    def name(self) -> str:
        return self.stage.name + (f"#{self.replica}" if self.replicas > 1 else "")


def _lpt_bins(cells: list[Cell], seconds: dict[str, float], k: int) -> list[list[Cell]]:
    """Longest-processing-time bin assignment: each cell to the currently lightest bin."""
    bins: list[tuple[float, int, list[Cell]]] = [(0.0, i, []) for i in range(k)]
    for c in sorted(cells, key=lambda c: -seconds[c.key]):
        load, i, members = heapq.heappop(bins)
        members.append(c)
        heapq.heappush(bins, (load + seconds[c.key], i, members))
    return [b[2] for b in sorted(bins, key=lambda b: b[1]) if b[2]]


class PlacementPolicy:
    def __init__(
        self, nodes: list[NodeShape], resources: Resources | dict[str, Any] | None = None, cost: CostModel | None = None
    ):
        self.nodes = list(nodes)
        self.cfg = Resources.of(resources)
        self.cost = cost or CostModel()
        dp = self.cfg.data_parallel
        self.max_replicas = 1 if dp in (False, "off", 1) else (int(dp) if isinstance(dp, int) else 64)
        # Largest evaluate job, as a fraction of the ideal makespan, before a group is split.
        self.granularity = float(self.cfg.dp_granularity)
        self.reservations = self.cfg.reservations

    # -- jobs ------------------------------------------------------------------------------------
    def jobs(self, stages: Iterable[Stage], todo: Callable[[Stage], list[Cell]] | None = None) -> list[Job]:
        """Jobs for the stages that still have cells to score (all, when `todo` is None)."""
        stages = list(stages)
        todo = todo or (lambda s: s.cells)
        evals = [(s, todo(s)) for s in stages if s.kind is StageKind.EVALUATE]
        evals = [(s, cells) for s, cells in evals if cells]
        perfs = [(s, cells) for s in stages if s.kind is StageKind.PERF and (cells := todo(s))]
        needed_quant = {s.depends_on[0] for s, _ in evals + perfs}
        by_key = {s.key: s for s in stages}
        # Sensitivity (per layer group, on the base model) feeds the mixed formats' quantize stages.
        sens = [(s, cells) for s in stages if s.kind is StageKind.SENSITIVITY and (cells := todo(s))]
        needed_build = {by_key[q].depends_on[0] for q in needed_quant if q in by_key}
        needed_build |= {s.depends_on[0] for s, _ in sens}
        jobs: dict[str, Job] = {}
        for s in stages:
            if s.kind is StageKind.BUILD_MODEL and s.key in needed_build:
                jobs[s.key] = Job(
                    s.key,
                    s.kind,
                    s,
                    [],
                    demand(s.model, self.nodes, self.cfg, "build"),
                    self.cost.build_seconds(s.model),
                )
        for s, cells in sens:
            jobs[s.key] = Job(
                s.key,
                s.kind,
                s,
                cells,
                demand(s.model, self.nodes, self.cfg, "sensitivity"),
                self.cost.sensitivity_seconds(s.model, cells),
                deps=[d for d in s.depends_on if d in jobs],
            )
        accel = {s.key: cells[0].engine.accelerator for s, cells in evals + perfs}
        quant_accel = {s.depends_on[0]: accel[s.key] for s, _ in evals + perfs}
        for s in stages:
            if s.kind is StageKind.QUANTIZE and s.key in needed_quant:
                acc = quant_accel.get(s.key, "cpu")
                # The baseline's "quantize" is the base checkpoint itself: a zero-length job, no actor.
                # A published checkpoint is only downloaded: the staging (build) demand, no GPU.
                d = (
                    Demand(0, 0)
                    if s.format.is_baseline
                    else demand(s.model, self.nodes, self.cfg, "build" if s.format.published else "quantize")
                )
                jobs[s.key] = Job(
                    s.key,
                    s.kind,
                    s,
                    [],
                    d,
                    self.cost.quantize_seconds(s.model, s.format, acc),
                    deps=[d_ for d_ in s.depends_on if d_ in jobs],
                )
        cell_s: dict[str, float] = {}
        groups = []
        for s, cells in evals:
            for c in cells:
                cell_s[c.key] = self.cost.cell_seconds(c)
            load = self.cost.load_seconds(s.model, accel[s.key])
            groups.append((s, cells, load, demand(s.model, self.nodes, self.cfg, "evaluate")))
        units = self._capacity_units()
        unit_of = (lambda d: d.gpus) if units[0] == "gpus" else (lambda d: d.cpus)
        work = sum(j.seconds * unit_of(j.demand) for j in jobs.values())
        work += sum((load + sum(cell_s[c.key] for c in cells)) * unit_of(d) for _, cells, load, d in groups)
        # The makespan no schedule can beat: the work spread evenly, or the longest chain (a group
        # split down to one cell per replica). Splitting below it only adds engine loads.
        chain = max(
            (
                self._chain(jobs, s.depends_on[0]) + load + max(cell_s[c.key] for c in cells)
                for s, cells, load, _ in groups
            ),
            default=0.0,
        )
        ideal = max(work / max(1, units[1]), chain)
        for s, cells, load, d in groups:
            upstream = self._chain(jobs, s.depends_on[0])
            total = load + sum(cell_s[c.key] for c in cells)
            k = 1
            # Split when the group's chain would outlast the ideal makespan, or when the group is
            # so large that starting it late would leave a long tail (list scheduling finishes
            # within total/devices + the longest job): replicas of at most `granularity` x ideal.
            budget = min(ideal - upstream - load, ideal * self.granularity)
            if self.max_replicas > 1 and len(cells) > 1 and total - load > budget:
                budget = max(budget, max(cell_s[c.key] for c in cells), load, 1e-9)
                slots = max(1, units[1] // max(1, unit_of(d)))
                k = min(len(cells), self.max_replicas, slots, math.ceil((total - load) / budget))
            bins = _lpt_bins(cells, cell_s, k) if k > 1 else [cells]
            for i, part in enumerate(bins):
                jid = s.key if len(bins) == 1 else f"{s.key}#{i}"
                jobs[jid] = Job(
                    jid,
                    s.kind,
                    s,
                    part,
                    d,
                    load + sum(cell_s[c.key] for c in part),
                    deps=[q for q in s.depends_on if q in jobs],
                    replica=i,
                    replicas=len(bins),
                )
        # Perf: the server gets its node(s) to itself (no evaluation beside it skews the figures).
        for s, cells in perfs:
            jobs[s.key] = Job(
                s.key,
                s.kind,
                s,
                cells,
                demand(s.model, self.nodes, self.cfg, "perf"),
                self.cost.perf_seconds(s.model, cells),
                deps=[q for q in s.depends_on if q in jobs],
            )
        # Similarity: after the baseline's and the format's engine groups (every replica of each).
        by_stage: dict[str, list[str]] = {}
        for j in jobs.values():
            by_stage.setdefault(j.stage.key, []).append(j.id)
        # An adaptive group after the baseline's groups (plan.py _after_baseline): every replica.
        for j in list(jobs.values()):
            if j.kind is StageKind.EVALUATE and len(j.stage.depends_on) > 1:
                j.deps = [d for d in j.deps if d == j.stage.depends_on[0]] + [
                    r for d in j.stage.depends_on[1:] for r in by_stage.get(d, [])
                ]
        for s in stages:
            cells = todo(s) if s.kind is StageKind.SIMILARITY else None
            if cells:
                jobs[s.key] = Job(
                    s.key,
                    s.kind,
                    s,
                    cells,
                    demand(s.model, self.nodes, self.cfg, "similarity"),
                    self.cost.similarity_seconds(cells),
                    deps=[j for d in s.depends_on for j in by_stage.get(d, [])],
                )
        self._prioritize(jobs)
        return list(jobs.values())

    def _capacity_units(self) -> tuple[str, int]:
        gpus = sum(n.gpus for n in self.nodes)
        return ("gpus", gpus) if gpus else ("cpus", sum(n.cpus for n in self.nodes))

    @staticmethod
    def _chain(jobs: dict[str, Job], key: str) -> float:
        total, j = 0.0, jobs.get(key)
        while j is not None:
            total += j.seconds
            j = jobs.get(j.deps[0]) if j.deps else None
        return total

    @staticmethod
    def _prioritize(jobs: dict[str, Job]) -> None:
        """priority = own seconds + the longest chain of dependents (upward rank)."""
        children: dict[str, list[Job]] = {}
        for j in jobs.values():
            for d in j.deps:
                children.setdefault(d, []).append(j)
        order = {
            StageKind.SIMILARITY: 0,
            StageKind.PERF: 0,
            StageKind.EVALUATE: 1,
            StageKind.QUANTIZE: 2,
            StageKind.SENSITIVITY: 3,  # a mixed format's quantize stage waits for it
            StageKind.BUILD_MODEL: 4,
        }
        for j in sorted(jobs.values(), key=lambda j: order[j.kind]):
            j.priority = j.seconds + max((c.priority for c in children.get(j.id, [])), default=0.0)

    # -- dispatch --------------------------------------------------------------------------------
    def dispatch(
        self, ready: "ReadyQueue", state: ClusterState, reuse: Callable[[Job], Placement | None] | None = None
    ) -> list[tuple[Job, Placement]]:
        """Start what fits, highest priority first; a job that does not fit lets smaller ones
        behind it use the remaining devices (backfilling)."""
        started: list[tuple[Job, Placement]] = []
        blocked: set[tuple] = set()
        reserved: set[int] = set()
        while True:
            job = ready.pop_best(blocked)
            if job is None:
                return started
            placement = reuse(job) if reuse else None
            if placement is None:
                placement = state.allocate(job.demand, reserved) if job.demand.cpus or job.demand.gpus else ()
            if placement is None:
                blocked.add(job.demand.shape)
                ready.push(job)
                if not reserved and self.reservations:  # the first blocked job keeps its nodes
                    reserved = state.reserve_for(job.demand)
                continue
            started.append((job, placement))


class ReadyQueue:
    """Ready jobs, one heap per resource shape: picking the best job that might fit is
    O(shapes), not O(ready jobs), which keeps a 1,024-GPU simulation fast."""

    def __init__(self) -> None:
        self._heaps: dict[tuple, list] = {}
        self._seq = itertools.count()
        self._n = 0

    def push(self, job: Job) -> None:
        # Quantize (and build) before evaluate, then longest chain first.
        rank = 0 if job.kind in SCORING else 1
        heapq.heappush(self._heaps.setdefault(job.demand.shape, []), (-rank, -job.priority, next(self._seq), job))
        self._n += 1

    def pop_best(self, blocked: set[tuple]) -> Job | None:
        best = None
        for shape, heap in self._heaps.items():
            if heap and shape not in blocked and (best is None or heap[0][:3] < self._heaps[best][0][:3]):
                best = shape
        if best is None:
            return None
        self._n -= 1
        return heapq.heappop(self._heaps[best])[3]

    def __len__(self) -> int:
        return self._n

    def shapes(self) -> dict[tuple, int]:
        """(gpus, cpus, memory_gb, nodes) -> ready jobs of that demand."""
        return {shape: len(h) for shape, h in self._heaps.items() if h}
