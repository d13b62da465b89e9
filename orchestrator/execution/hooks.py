"""What the scheduler needs from whoever owns the sweep: the `Hooks` protocol.

The scheduler (scheduler.py) owns Ray: actors, attempts, leases, timeouts, fallbacks. Everything
else (the ledger, artifacts, result sinks, the plan) is behind these calls, which the `Driver`
implements; a test can implement them with a dict. Each call the scheduler schedules carries its
own continuation (stages.py says what a stage kind's calls are), as Ray Tune's
tune_controller.py does with on_result / on_error, so the loop never branches on a stage kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from orchestrator.planning.policy import Job, PlacementPolicy
from quantgrid.settings import Resources, ServeSettings
from quantgrid.types import Artifact, Cell, Comparison


@dataclass(frozen=True)
class ActorSettings:
    """What the scheduler reads of the sweep to create and feed actors (never the plan itself)."""

    resources: Resources
    kv_cache_gb: float = 0.0
    hub_offline: bool = False
    perf_server: ServeSettings = field(default_factory=ServeSettings)  # sweep.perf.server


@runtime_checkable
class Hooks(Protocol):
    # -- what the scheduler reads ------------------------------------------------------------------
    settings: ActorSettings
    policy: PlacementPolicy
    worker: tuple[type, tuple]  # (actor class, constructor args)
    lease_s: float
    verbose: bool
    run_dir: Path
    logs_dir: Path

    def cancelled(self) -> bool: ...

    def emit(self, event: str, **info: Any) -> None: ...

    # -- attempts: leased in the ledger, fenced by their token --------------------------------------
    def lease(self, job: Job, att: Any, fallback: dict | None = None) -> int: ...

    def renew(self, token: int, ttl_s: float) -> None: ...

    def give_up(self, token: int, cls: str, msg: str) -> None: ...

    def attempt_finished(self, token: int) -> None: ...

    # -- what a stage is given ---------------------------------------------------------------------
    def quantize_args(self, job: Job) -> tuple: ...

    def engine_args(self, job: Job) -> tuple[Artifact, str | None]: ...

    def base_artifact(self, job: Job) -> Artifact: ...

    def comparison_pairs(self, comp: Comparison) -> tuple[list | None, str]: ...

    def baseline_artifact(self, job: Job) -> None: ...

    def next_documents(self, cell: Cell) -> list[int] | None: ...

    def continues(self, cell: Cell) -> bool: ...

    # -- outcomes ----------------------------------------------------------------------------------
    def artifact_ready(self, job: Job, art: Artifact) -> bool: ...

    def engine_opened(self, job: Job, info: dict) -> None: ...

    def cell_started(self, cell: Cell) -> None: ...

    def commit(self, att: Any, result: Any) -> bool: ...

    def fail_cells(self, job: Job, cells: list[Cell], cls: str, msg: str) -> None: ...

    def fail_stage(self, job: Job, cls: str, msg: str) -> None: ...

    def dependency_failed(self, job: Job) -> None: ...
