"""Expand a sweep's axes into cells and a stage DAG.

model x format x task x seed -> cells. Stages:
  build_model(model) -> quantize(model, format) -> evaluate(model, format, seed)
One evaluate stage per engine group: every task of a (model, format, seed) is served by one
engine load (the seed is fixed at engine construction in vLLM, so it splits groups).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from orchestrator.config import Sweep
from quantgrid.types import Cell, Stage, StageKind


@dataclass
class Plan:
    sweep: Sweep
    cells: list[Cell]
    stages: list[Stage]

    @property
    def evaluate_stages(self) -> list[Stage]:
        return [s for s in self.stages if s.kind is StageKind.EVALUATE]

    def counts(self) -> dict[str, int]:
        by_kind = {k: sum(s.kind is k for s in self.stages) for k in StageKind}
        return {
            "cells": len(self.cells),
            "stages": len(self.stages),
            "model_builds": by_kind[StageKind.BUILD_MODEL],
            "quantize_jobs": sum(s.kind is StageKind.QUANTIZE and not s.format.is_baseline for s in self.stages),
            "engine_loads": by_kind[StageKind.EVALUATE],
        }


def expand(sweep: Sweep) -> Plan:
    cells: list[Cell] = []
    stages: list[Stage] = []
    for model in sweep.models:
        build = Stage(StageKind.BUILD_MODEL, model)
        stages.append(build)
        for fname in sweep.format_names:
            fmt = sweep.formats[model.name][fname]
            quant = Stage(StageKind.QUANTIZE, model, fmt, depends_on=[build.key])
            stages.append(quant)
            for seed in sweep.seeds:
                engine = replace(sweep.engine, seed=seed)
                group = [
                    Cell(model=model, format=fmt, task=task, engine=engine, seed=seed, versions=sweep.versions)
                    for task in sweep.tasks
                ]
                cells += group
                stages.append(Stage(StageKind.EVALUATE, model, fmt, cells=group, depends_on=[quant.key]))
    return Plan(sweep=sweep, cells=cells, stages=stages)
