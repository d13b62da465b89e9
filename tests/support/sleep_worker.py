"""A sleep-worker: the StageWorker interface with cost-model durations instead of real work.

For the grid-engine benches and scheduler fault tests: real Ray actor processes going through
the real scheduler, ledger, leases and fencing, on a cluster of fake GPUs (ray start
--num-gpus / ray.cluster_utils.Cluster). It never produces a score: its results carry
`synthetic: true` and no metrics beyond the time it slept, so nothing downstream can mistake
them for measurements.
"""

from __future__ import annotations

import os
import time

import ray

from quantgrid.failures import StageFailure
from quantgrid.settings import Sanity, ServeSettings
from quantgrid.types import (
    Artifact,
    Cell,
    Comparison,
    EngineSettings,
    PerfCell,
    FormatSpec,
    SensitivityCell,
    ModelSpec,
    TaskResult,
    stable_hash,
)
from workers.faults import inject


class SleepWorker:
    def __init__(
        self,
        git_commit: str = "",
        seconds_per_cell: dict[str, float] | None = None,
        time_scale: float = 1.0,
        load_seconds: float = 0.0,
    ):
        self.seconds_per_cell = seconds_per_cell or {}
        self.time_scale = time_scale
        self.load_seconds = load_seconds
        self.loads = 0
        self.group = ""

    def pid(self) -> int:
        return os.getpid()

    @ray.method(concurrency_group="heartbeat")
    def ping(self) -> int:
        return os.getpid()

    def begin(self, log_path: str) -> int:
        return os.getpid()

    def build_model(self, spec: ModelSpec) -> Artifact:
        inject("build_model", spec.name)
        return Artifact(path=f"synthetic://{spec.name}", content_hash=stable_hash(spec.key), reused=True)

    def quantize(
        self,
        base: Artifact,
        model: ModelSpec,
        fmt: FormatSpec,
        calibration_path: str | None,
        calibration_dtype: str = "",
        sanity: Sanity | None = None,
    ) -> Artifact:
        inject("quantize", f"{model.name}/{fmt.name}")
        return Artifact(
            path=f"synthetic://{model.name}/{fmt.name}", content_hash=stable_hash([base.content_hash, fmt.key])
        )

    def open_engine(
        self,
        checkpoint: Artifact,
        model: ModelSpec,
        fmt: FormatSpec,
        settings: EngineSettings,
        calibration_hash: str | None = None,
    ) -> dict:
        inject("open_engine", f"{model.name}/{fmt.name}")
        time.sleep(self.load_seconds * self.time_scale)
        self.loads += 1
        self.settings = settings
        return {
            "load_seconds": self.load_seconds * self.time_scale,
            "engine_id": f"{os.getpid()}-{self.loads}",
            "loads": self.loads,
            "process_loads": self.loads,
            "settings": {"batch_size": settings.batch_size},
        }

    def evaluate(self, cell: Cell, documents: list[int] | None = None) -> TaskResult:
        inject("evaluate", f"{cell.model.name}/{cell.format.name}/{cell.task.name}")
        seconds = self.seconds_per_cell.get(cell.key, 0.0) * self.time_scale
        time.sleep(seconds)
        return TaskResult(
            cell_key=cell.key,
            model=cell.model.name,
            format=cell.format.name,
            task=cell.task.name,
            metrics={"slept_s": seconds},
            samples=[],
            num_samples=0,
            seconds=seconds,
            provenance={"synthetic": True, "pid": os.getpid(), "engine": {"batch_size": self.settings.batch_size}},
            primary_metric="slept_s",
        )

    def open_encoder(self, encoder: str) -> dict:
        inject("open_encoder", encoder)
        return {"load_seconds": 0.0, "encoder": encoder}

    def compare(self, comp: Comparison, pairs: list) -> TaskResult:
        inject("compare", f"{comp.model.name}/{comp.format.name}/{comp.task.name}")
        return TaskResult(
            cell_key=comp.key,
            model=comp.model.name,
            format=comp.format.name,
            task=comp.task.name,
            metrics={"pairs": float(len(pairs))},
            samples=[],
            num_samples=0,
            seconds=0.0,
            provenance={"synthetic": True, "pid": os.getpid()},
            primary_metric="pairs",
            kind="similarity",
        )

    def open_server(
        self, checkpoint: Artifact, model: ModelSpec, fmt: FormatSpec, settings: EngineSettings, server: ServeSettings
    ) -> dict:
        inject("open_server", f"{model.name}/{fmt.name}")
        return {"load_seconds": 0.0, "engine_id": f"serve:{os.getpid()}"}

    def benchmark(self, cell: PerfCell) -> TaskResult:
        inject("benchmark", f"{cell.model.name}/{cell.format.name}/{cell.scenario.name}")
        return TaskResult(
            cell_key=cell.key,
            model=cell.model.name,
            format=cell.format.name,
            task=cell.task.name,
            metrics={},
            samples=[],
            num_samples=0,
            seconds=0.0,
            provenance={"synthetic": True},
            primary_metric=cell.task.metric,
            kind="perf",
        )

    def open_sensitivity(self, base: Artifact, model: ModelSpec, settings: dict) -> dict:
        inject("open_sensitivity", model.name)
        return {"load_seconds": 0.0, "model": model.name}

    def sensitivity(self, cell: SensitivityCell) -> TaskResult:
        inject("sensitivity", f"{cell.model.name}/{cell.format.name}")
        return TaskResult(
            cell_key=cell.key,
            model=cell.model.name,
            format=cell.format.name,
            task=cell.task.name,
            metrics={},
            samples=[],
            num_samples=0,
            seconds=0.0,
            provenance={"synthetic": True},
            primary_metric=cell.task.metric,
            kind="sensitivity",
        )

    def refuse(self, error_class: str, message: str) -> None:
        raise StageFailure(error_class, message)

    def close(self) -> None:
        pass
