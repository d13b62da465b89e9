"""Expand a sweep's axes into cells and a stage DAG.

model x format x task x seed -> cells. Stages:
  build_model(model) -> [sensitivity(model, format): per layer group, for sweep.sensitivity / sweep.mixed]
  build_model(model) -> quantize(model, format) -> evaluate(model, format, seed)
                                              -> similarity(model, format, seed) [with the baseline's evaluate]
                                              -> perf(model, format) [vllm serve + GuideLLM per scenario]
A mixed format's quantize stage also waits for its candidates' sensitivity stages (the driver
solves its assignment from their results). One evaluate stage per engine group: every task of a
(model, format, seed) is served by one engine load (the seed is fixed at engine construction in
vLLM, so it splits groups).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.config import Sweep
from orchestrator.planning.cost import CostModel, task_samples
from quantgrid.types import Cell, Comparison, PerfCell, SensitivityCell, Stage, StageKind


@dataclass
class Plan:
    sweep: Sweep
    cells: list[Cell]
    stages: list[Stage]
    comparisons: list[Comparison] = field(default_factory=list)  # similarity vs the baseline
    perf_cells: list[PerfCell] = field(default_factory=list)  # serving performance per scenario
    sensitivity_cells: list[SensitivityCell] = field(default_factory=list)  # per layer group, per target

    @property
    def recorded_cells(self) -> list:
        """Every cell the ledger holds a row for."""
        return [*self.cells, *self.comparisons, *self.perf_cells, *self.sensitivity_cells]

    @property
    def evaluate_stages(self) -> list[Stage]:
        return [s for s in self.stages if s.kind is StageKind.EVALUATE]

    def counts(self) -> dict[str, int]:
        by_kind = {k: sum(s.kind is k for s in self.stages) for k in StageKind}
        default = CostModel().cfg["default_task"]
        samples = {t.name: task_samples(t, default) for t in self.sweep.tasks}
        return {
            "cells": len(self.cells),
            "samples": sum(samples[c.task.name] for c in self.cells),
            "stages": len(self.stages),
            "model_builds": by_kind[StageKind.BUILD_MODEL],
            "quantize_jobs": sum(s.kind is StageKind.QUANTIZE and not s.format.is_baseline for s in self.stages),
            "engine_loads": by_kind[StageKind.EVALUATE],  # see engine_splits() for why above one per group
            "comparisons": len(self.comparisons),
            "perf_cells": len(self.perf_cells),
            "server_starts": by_kind[StageKind.PERF],
            "sensitivity_cells": len(self.sensitivity_cells),
        }

    def engine_splits(self) -> dict[str, list[str]]:
        """Engine-level settings that force a second engine load per (model, format, seed):
        setting=value -> the tasks that need it."""
        out: dict[str, list[str]] = {}
        for t in self.sweep.tasks:
            for k, v in (t.engine or {}).items():
                if getattr(self.sweep.engine, k) != v:
                    out.setdefault(f"{k}={v}", []).append(t.name)
        return out

    def estimate(self, cost: CostModel | None = None) -> dict[str, Any]:
        """Device-hours and tokens per (model, format) from the cost model (one engine load per
        group, no data-parallel replicas). Devices = TP x PP GPUs on a GPU cluster, 1 on a CPU."""
        if cost is None and self.sweep.sizing:  # this host's measured throughput (orchestrator/planning/sizing.py)
            from orchestrator.planning.sizing import host_cost

            cost = host_cost(
                float(self.sweep.sizing["probe"]["gflops"]),
                self.sweep.cost,
                bool(self.sweep.host and self.sweep.host.native_bf16),
            )
        cost = cost or CostModel(self.sweep.cost)
        rows: dict[tuple[str, str], dict[str, float]] = {}
        tasks: dict[str, dict[str, float]] = {}  # per task, over all its cells
        for s in self.stages:
            if s.kind not in (StageKind.EVALUATE, StageKind.PERF):
                continue
            acc = s.cells[0].engine.accelerator
            devices = s.model.tensor_parallel_size * s.model.pipeline_parallel_size if acc != "cpu" else 1
            r = rows.setdefault(
                (s.model.name, s.format.name),
                {
                    "seconds": 0.0,
                    "device_hours": 0.0,
                    "prompt_tokens": 0,
                    "output_tokens": 0,
                    "accelerator": acc,
                    "perf_hours": 0.0,
                },
            )
            if s.kind is StageKind.PERF:  # the server holds its node(s) exclusively: bill the devices it uses
                secs = cost.perf_seconds(s.model, s.cells)
                r["seconds"] += secs
                r["device_hours"] += secs * devices / 3600
                r["perf_hours"] += secs * devices / 3600
                continue
            secs = cost.load_seconds(s.model, acc) + sum(cost.cell_seconds(c) for c in s.cells)
            if s.cells[0].seed == self.sweep.seeds[0]:  # quantized once, whatever the seeds
                q = cost.quantize_seconds(s.model, s.format, acc)
                secs += q
            r["seconds"] += secs
            r["device_hours"] += secs * devices / 3600
            for c in s.cells:
                p, o = cost.tokens(c.task)
                r["prompt_tokens"] += p
                r["output_tokens"] += o
                t = tasks.setdefault(
                    c.task.name, {"cells": 0, "samples": 0, "prompt_tokens": 0, "output_tokens": 0, "device_hours": 0.0}
                )
                t["cells"] += 1
                t["samples"] += task_samples(c.task, cost.cfg["default_task"])
                t["prompt_tokens"] += p
                t["output_tokens"] += o
                t["device_hours"] += cost.cell_seconds(c) * devices / 3600
        total = sum(r["device_hours"] for r in rows.values())
        return {
            "device_hours": total,
            "by_model_format": [{"model": m, "format": f, **r} for (m, f), r in rows.items()],
            "by_task": [{"task": name, **t} for name, t in tasks.items()],
        }


def expand(sweep: Sweep) -> Plan:
    cells: list[Cell] = []
    stages: list[Stage] = []
    rerun = sweep.noise_floor.format_name(sweep.baseline)
    adaptive = adaptive_tasks(sweep)
    for model in sweep.models:
        build = Stage(StageKind.BUILD_MODEL, model)
        stages.append(build)
        sens: dict[str, Stage] = {}
        for fname in sweep.sensitivity.formats:
            fmt = sweep.formats[model.name].get(fname)
            if fmt is not None:
                cell = SensitivityCell(model, fmt, sweep.sensitivity.cell_settings(), sweep.versions)
                sens[fname] = Stage(StageKind.SENSITIVITY, model, fmt, cells=[cell], depends_on=[build.key])
                stages.append(sens[fname])
        quants: dict[str, Stage] = {}
        for fname in sweep.format_names:
            fmt = sweep.formats[model.name].get(fname)
            if fmt is None:  # a format this model does not come in (per-model format lists)
                continue
            if fname == rerun:  # the noise floor: the baseline's own checkpoint, no stage of its own
                quant = quants[sweep.baseline]
            else:
                after = [sens[c].key for c in (fmt.mixed or {}).get("candidates", {}) if c in sens]
                quant = quants[fname] = Stage(StageKind.QUANTIZE, model, fmt, depends_on=[build.key, *after])
                stages.append(quant)
            # The engine runs the model with the format's parallelism (405B BF16 on two nodes,
            # its quantized formats on one); quantize works on the base model as it is.
            served = replace(model, **fmt.parallel) if fmt.parallel else model
            # How this format runs on the sweep's host (dtype, native or emulated): an engine
            # setting, so it is in every cell key and reaches the worker with the engine.
            ex = sweep.execution.get(model.name, {}).get(fname)
            resolved = (
                dict(dtype=ex.dtype, execution=ex.mode, host=ex.host, kv_cache_dtype=ex.kv_cache_dtype) if ex else {}
            )
            perf = sweep.perf
            if perf and fname != rerun:  # one server start per (model, format) serves every scenario
                engine = replace(sweep.engine_for(model), seed=sweep.seeds[0], **resolved)
                pcells = [PerfCell(served, fmt, sc, engine, perf.load, sweep.versions) for sc in perf.scenarios]
                stages.append(Stage(StageKind.PERF, served, fmt, cells=pcells, depends_on=[quant.key]))
            for seed in sweep.seeds if sweep.tasks else []:  # a perf-only sweep has no engine groups
                # One engine group per distinct engine setting the tasks need (usually one).
                groups: dict[str, list[Cell]] = {}
                for task in sweep.tasks:
                    if fname not in (sweep.baseline, rerun) and task.name in adaptive:
                        task = replace(task, adaptive=sweep.adaptive.task_settings())
                    engine = replace(sweep.engine_for(model), seed=seed, **(task.engine or {}), **resolved)
                    if fname == rerun:  # the same documents in other batches: the engine's own noise
                        engine = replace(engine, batch_size=sweep.noise_floor.rerun_batch(engine.batch_size))
                    groups.setdefault(engine.key, []).append(
                        Cell(model=served, format=fmt, task=task, engine=engine, seed=seed, versions=sweep.versions)
                    )
                for group in groups.values():
                    cells += group
                    stages.append(Stage(StageKind.EVALUATE, served, fmt, cells=group, depends_on=[quant.key]))
    _after_baseline(sweep, stages)
    comparisons = _similarity_stages(sweep, stages)
    stages += comparisons
    return Plan(
        sweep=sweep,
        cells=cells,
        stages=stages,
        comparisons=[c for s in comparisons for c in s.cells],
        perf_cells=[c for s in stages if s.kind is StageKind.PERF for c in s.cells],
        sensitivity_cells=[c for s in stages if s.kind is StageKind.SENSITIVITY for c in s.cells],
    )


def adaptive_tasks(sweep: Sweep) -> set[str]:
    """The tasks whose quantized cells are scored adaptively (sweep.adaptive)."""
    a = sweep.adaptive
    if not a.enabled:
        return set()
    names = set(a.tasks) or {t.name for t in sweep.tasks}
    return {
        t.name for t in sweep.tasks if t.name in names and not a.eligible(t.metric, t.higher_is_better, t.scorer_kind)
    }


def _after_baseline(sweep: Sweep, stages: list[Stage]) -> None:
    """An engine group holding adaptive cells reads the baseline's per-document scores after each
    batch: it runs after the baseline's engine groups of the same model and seed (the quantize
    stage stays its first dependency, which the policy reads)."""
    base: dict[tuple[str, int], list[str]] = {}
    for s in stages:
        if s.kind is StageKind.EVALUATE and s.format.name == sweep.baseline:
            base.setdefault((s.model.name, s.cells[0].seed), []).append(s.key)
    for s in stages:
        if s.kind is StageKind.EVALUATE and any(c.task.adaptive for c in s.cells):
            s.depends_on += base.get((s.model.name, s.cells[0].seed), [])


def _similarity_stages(sweep: Sweep, stages: list[Stage]) -> list[Stage]:
    """One similarity stage per (model, quantized format, seed): its generations vs the baseline's,
    after both engine groups."""
    tasks = set(sweep.similarity.tasks)
    if not tasks:
        return []
    evals: dict[tuple[str, str, int], list[Stage]] = {}
    for s in stages:
        if s.kind is StageKind.EVALUATE:
            evals.setdefault((s.model.name, s.format.name, s.cells[0].seed), []).append(s)
    out = []
    for (model, fmt, seed), groups in evals.items():
        base = evals.get((model, sweep.baseline, seed))
        if fmt == sweep.baseline or not base:
            continue
        base_cells = {c.task.name: c for g in base for c in g.cells}
        comps = [
            Comparison(c, base_cells[c.task.name], sweep.similarity.encoder)
            for g in groups
            for c in g.cells
            if c.task.name in tasks
        ]
        if comps:
            out.append(
                Stage(
                    StageKind.SIMILARITY,
                    groups[0].model,
                    groups[0].format,
                    cells=comps,
                    depends_on=[g.key for g in base + groups],
                )
            )
    return out


def execution_lines(sweep) -> list[str]:
    """The host the sweep is planned for and how each format runs there (quantgrid/capability.py)."""
    h = sweep.host
    if h is None:
        return []
    what = (
        f"{h.cpu_model or 'CPU'}, vLLM kernel library {h.vllm_library}, bf16 hardware: "
        f"{'yes' if h.native_bf16 else 'no'}"
        + (f", forced from {h.native_isa} by QUANTGRID_HOST_ISA" if h.forced else "")
        if h.device == "cpu"
        else h.gpu
    )
    lines = [f"host {h.name} ({what})"] + ([sweep.sizing["line"]] if sweep.sizing else [])
    seen: dict[str, str] = {}
    for fmts in sweep.execution.values():
        for f, ex in fmts.items():
            kv = f", KV cache {ex.kv_cache_dtype}" if ex.kv_cache_dtype != "auto" else ""
            seen.setdefault(
                f,
                f"  {f}: {ex.mode}, engine dtype {ex.dtype}{kv}, calibration dtype {ex.calibration_dtype}: {ex.runs}",
            )
    lines += list(seen.values())
    sens = sweep.sensitivity
    if sens.enabled:
        lines.append(
            f"sensitivity: {', '.join(sens.formats)} per layer group (qkv/o/gate_up/down of each decoder layer), "
            f"exact KL from {sweep.baseline} on {sens.documents} held-out documents x {sens.max_tokens} tokens"
        )
    if sweep.mixed.enabled:
        names = [n for n, _ in sweep.mixed.formats()]
        some = next(iter(sweep.formats.values()))[names[0]].mixed
        cands = ", ".join(f"{c} {b:.3g}" for c, b in some["bits"].items())
        lines.append(
            f"mixed: {', '.join(names)}: per layer group one of "
            f"{cands} bits, least summed KL within each budget (scipy.optimize.milp, solved when the sensitivity is in)"
        )
    a = sweep.adaptive
    if a.enabled:
        decided = sorted(adaptive_tasks(sweep))
        what = (
            f"recovery >= {a.value:g} x {sweep.baseline}" if a.target == "recovery" else f"difference >= -{a.value:g}"
        )
        lines.append(
            f"adaptive: {what} (alpha {a.alpha:g}), {a.batch_documents} documents a batch"
            + (f", at most {a.max_documents}" if a.max_documents else "")
            + f", on {', '.join(decided) or 'no task of this sweep'}; {sweep.baseline} scored whole"
        )
    return lines
