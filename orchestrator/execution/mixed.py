"""A mixed-precision format's assignment, when its quantize stage starts: the candidates'
sensitivity results (read from the run store) -> the integer program
(orchestrator/planning/mixed.py `solve`) -> the format with `mixed["assignment"]` ({candidate:
[Linear names]}), which the quantize stage turns into config groups
(workers/stages/mixed_recipe.py). A GB budget becomes average bits here, once the sensitivity
stage has counted the model's parameters."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.config import one_line
from orchestrator.execution.stages import Unresolved
from orchestrator.planning.mixed import bits_for_gb, modules_by_candidate, size_gb, solve
from orchestrator.store.results import read_sensitivity, samples_file
from quantgrid.failures import FailureClass
from quantgrid.types import FormatSpec, Stage


def _tables(stage: Stage, cells: dict, done: set[str], run_dir: Path) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """The groups (model order) and {candidate: {group: KL}} of the quantized candidates."""
    m = stage.format.mixed
    groups: list[dict] | None = None
    kl: dict[str, dict[str, float]] = {}
    for cand, recipe in m["candidates"].items():
        if recipe is None:  # the baseline: a group kept dense moves nothing
            continue
        cell = cells.get((stage.model.name, cand))
        if cell is None or cell.key not in done:
            raise Unresolved(
                FailureClass.DEPENDENCY_FAILED.value,
                f"{stage.name}: the sensitivity of {stage.model.name} to {cand} has no result",
            )
        path = samples_file(run_dir, cell.model.name, cell.format.name, cell.task.name, cell.key)
        try:
            table = read_sensitivity(path)
        except Exception as exc:  # noqa: BLE001 - a missing or damaged file: this stage fails
            raise Unresolved(
                FailureClass.DEPENDENCY_FAILED.value,
                f"{stage.name}: cannot read the sensitivity of {cand} ({path}): {type(exc).__name__}: {one_line(exc)}",
            ) from None
        if groups is not None and [g["name"] for g in table] != [g["name"] for g in groups]:
            raise Unresolved(
                FailureClass.BAD_INPUT.value,
                f"{stage.name}: the candidates quantize different modules of {stage.model.name} "
                "(their ignore lists differ)",
            )
        groups = groups or table
        kl[cand] = {g["name"]: g["kl"] for g in table}
    return groups or [], kl


def assign(stage: Stage, sensitivity_cells: list, done: set[str], run_dir: Path) -> tuple[FormatSpec, dict[str, Any]]:
    """(the format with its assignment, the record the report reads: budget, bits, predicted
    KL, per group its candidate and every candidate's KL)."""
    fmt, m = stage.format, stage.format.mixed
    cells = {(c.model.name, c.format.name): c for c in sensitivity_cells}
    groups, kl = _tables(stage, cells, done, run_dir)
    budget = m.get("budget_bits")
    if budget is None:  # gigabytes -> the Linears' average bits, now that the parameters are counted
        budget = bits_for_gb(groups, float(m["budget_gb"]))
        lo, hi = min(m["bits"].values()), max(m["bits"].values())
        if not lo <= budget < hi:
            where, edge = ("below the smallest", lo) if budget < lo else ("at or above the largest", hi)
            raise Unresolved(
                FailureClass.BAD_INPUT.value,
                f"{stage.name}: {m['budget_gb']:g} GB is {where} checkpoint of {stage.model.name} the "
                f"candidates make ({size_gb(groups, edge):.4g} GB)",
            )
    solution = solve(groups, kl, m["bits"], float(budget))
    record = {
        "format": fmt.name,
        "budget_bits": budget,
        "budget_gb": m.get("budget_gb"),
        "size_gb": size_gb(groups, solution["bits"]),
        "candidate_bits": m["bits"],
        **{k: solution[k] for k in ("bits", "predicted_kl", "status", "groups")},
        "assignment": [
            {**{k: g[k] for k in ("name", "layer", "module", "params")}, "format": solution["assignment"][g["name"]]}
            | {f"kl_{c}": kl[c][g["name"]] for c in kl}
            for g in groups
        ],
    }
    chosen = modules_by_candidate(groups, solution["assignment"], m["baseline"])
    return replace(fmt, mixed={**m, "assignment": chosen}), record
