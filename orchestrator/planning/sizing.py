"""Size a CPU sweep's task subsets to a wall-time budget (`sweep.budget`), from a measured probe.

The embedded demo must hold its budget on any 2-core x86-64 host, and hosts differ by an order of
magnitude: SmolLM2-135M prefill runs ~1,250 tok/s in bf16 on an AVX-512-BF16 EPYC and ~170 tok/s
in float32 on an AVX2 one (../shared/STACK.md). So the plan measures this host (workers/probe.py:
dense GEMM GFLOP/s in the engine's dtype, cached per host), turns it into the cost model's CPU
throughput (tokens/s x B params per GFLOP/s, calibrated below on the demo), estimates every
evaluation of the sweep (orchestrator/planning/cost.py), and when that exceeds the budget scales every
task's subset by one factor from a fixed ladder (so probe noise rarely moves it). A subset is a
task setting: every format is scored on the same documents. What was chosen is printed by
`plan`/`run`, stored in the run directory (sizing.json) and logged to MLflow.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.planning.cost import DEFAULT_COST, CostModel, task_samples
from quantgrid.runtime import cache_dir
from quantgrid.types import Cell, EngineSettings, TaskSpec

# Scale factors a subset may take: coarse steps, so a warm run re-plans the same documents.
LADDER = (1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.125, 0.09, 0.0625)
# Engine tokens/s x B params per probe GFLOP/s: vLLM-CPU (enforce_eager) on SmolLM2-135M vs the
# probe's GEMM in the same dtype on the same host. Measured on an AVX2 EPYC (float32): see the
# README's "Runs on the CPU it is given" figures for the runs they come from.
# (float32 probe ~90 GFLOP/s; MMLU prefill with prompt logprobs ~165 tok/s = 22 tok/s x B).
TOK_S_B_PER_GFLOPS = {"prefill": 0.25, "decode": 0.1}
# Relative speed per format on a CPU without bf16 hardware, where every engine runs float32
# (W4A16 emulated on a dense engine). Measured: `make bench BENCH=demo-cold`, AVX2 EPYC (probe
# 163 GFLOP/s), 2026-12-06: MMLU prefill tok/s BF16 320, FP8 188, INT8 382, W4A16 320; HumanEval
# decode BF16 109, FP8 21, INT8 106, W4A16 139; evaluate walls BF16 72 s, FP8 193 s, INT8 62 s,
# W4A16 79 s (FP8 was assumed 1.0 before: the demo then planned 196 s of evaluation and ran 405 s).
# The cost model's own CPU table is for bf16 hosts.
FORMAT_SPEED_WITHOUT_BF16 = {"bf16": 1.0, "fp8": 0.35, "int8": 1.15, "w4a16": 1.0}
# Calibrated quantization seconds = QUANTIZE_K x params (B) x samples x sequence length / GFLOP/s:
# SmolLM2-135M, 64 x 256 calibration tokens, float32 probe ~90 GFLOP/s (AVX2 EPYC): W4A16 GPTQ
# 207 s (K 8.4), SmoothQuant + GPTQ W8A8 267 s (K 10.9).
QUANTIZE_K = 11.0
# SmoothQuant before GPTQ (the INT8 recipe) costs half again: same bench, W4A16 GPTQ 149 s (K 11.0)
# vs SmoothQuant + GPTQ INT8 223 s (K 16.4) on 64 x 256 calibration tokens.
SMOOTHQUANT_FACTOR = 1.5


def recipe_cost(recipe: Any) -> float:
    """Relative cost of a calibrated recipe's quantization, per QUANTIZE_K."""
    return SMOOTHQUANT_FACTOR if "SmoothQuantModifier" in json.dumps(recipe or {}) else 1.0


BUDGET_KEYS = {"evaluate_s": (int, float), "quantize_s": (int, float), "min_samples": (int,), "min_calibration": (int,)}


class SizingError(ValueError):
    """Bad sweep.budget (one line)."""


@dataclass
class Sizing:
    budget_s: float
    probe: dict[str, Any]
    estimate_full_s: float
    estimate_s: float
    factor: float
    tasks: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> {full, chosen}
    # Calibration sets sized to budget.quantize_s: format -> {full, chosen} samples
    calibration: dict[str, dict[str, int]] = field(default_factory=dict)
    quantize: dict[str, float] = field(default_factory=dict)  # budget_s, estimate_full_s, estimate_s, factor
    # Formats left out: format -> {estimate_s (alone, at the smallest step), why}
    dropped: dict[str, dict[str, Any]] = field(default_factory=dict)
    kernels: dict[str, Any] = field(default_factory=dict)  # format -> measured kernel probe and speed used

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget_s": self.budget_s,
            "probe": self.probe,
            "estimate_full_s": round(self.estimate_full_s, 1),
            "estimate_s": round(self.estimate_s, 1),
            "factor": self.factor,
            "tasks": self.tasks,
            "calibration": self.calibration,
            "quantize": self.quantize,
            "dropped": self.dropped,
            "kernels": self.kernels,
        }

    def line(self) -> str:
        chosen = ", ".join(f"{t} {v['full']}->{v['chosen']}" for t, v in self.tasks.items())
        out = (
            f"sizing: probe {self.probe['gflops']} GFLOP/s ({self.probe['dtype']}); evaluations estimated "
            f"{self.estimate_full_s:.0f} s for a budget of {self.budget_s:.0f} s: "
            + (
                f"subsets x{self.factor} ({chosen}), estimated {self.estimate_s:.0f} s"
                if self.factor < 1
                else "full subsets"
            )
            + (
                " (over budget even at the smallest step: expect a longer run)"
                if self.estimate_s > self.budget_s
                else ""
            )
        )
        for f, d in self.dropped.items():
            out += f"; {f} left out: {d['why']}"
        if self.quantize:
            q = self.quantize
            cal = ", ".join(f"{f} {v['full']}->{v['chosen']}" for f, v in self.calibration.items())
            out += f"; quantization estimated {q['estimate_full_s']:.0f} s for {q['budget_s']:.0f} s: " + (
                f"calibration samples x{q['factor']} ({cal}), estimated {q['estimate_s']:.0f} s"
                if q["factor"] < 1
                else "full calibration sets"
            )
        return out


def probe(dtype: str) -> dict[str, Any]:
    """This host's GEMM throughput in `dtype`, measured once per host and cached (a warm run must
    plan the same subsets as the cold one did)."""
    from quantgrid.host import probe as probe_host
    from quantgrid.types import stable_hash

    h = probe_host()
    # PROBE_METHOD: workers/probe.py's (the driver stays torch-free: that module imports torch lazily)
    from workers.probe import PROBE_METHOD

    path = (
        cache_dir()
        / "probe"
        / f"{h.name.replace(':', '-')}-{stable_hash([h.cpu_model, h.native_isa, dtype, PROBE_METHOD], 8)}.json"
    )
    if path.is_file():
        return json.loads(path.read_text())
    proc = subprocess.run([sys.executable, "-m", "workers.probe", dtype], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SizingError(f"throughput probe failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1]) | {"host": h.name}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def host_cost(gflops: float, base: dict[str, Any] | None = None, bf16_hardware: bool = True) -> CostModel:
    """The cost model with this host's measured CPU throughput."""
    cfg = dict(base or {})
    cpu = {**DEFAULT_COST["accelerators"]["cpu"], **(cfg.get("accelerators") or {}).get("cpu", {})}
    cpu |= {
        "prefill_tok_s_b": TOK_S_B_PER_GFLOPS["prefill"] * gflops,
        "decode_tok_s_b": TOK_S_B_PER_GFLOPS["decode"] * gflops,
    }
    cfg["accelerators"] = {**(cfg.get("accelerators") or {}), "cpu": cpu}
    if not bf16_hardware:
        cfg["format_speed"] = {
            **(cfg.get("format_speed") or {}),
            "cpu": {**FORMAT_SPEED_WITHOUT_BF16, **(cfg.get("format_speed") or {}).get("cpu", {})},
        }
    return CostModel(cfg)


def scaled(task: TaskSpec, factor: float, full: int, min_samples: int) -> tuple[TaskSpec, int]:
    """The task with its subset scaled by `factor` (never below min_samples, never above full)."""
    want = max(min(min_samples, full), int(math.floor(full * factor)))
    sub = dict(task.subset or {})
    if "per_group" in sub:  # stratified: keep one question per group, fewer groups
        per = int(sub["per_group"])
        sub["max_groups"] = max(1, want // per)
        chosen = per * sub["max_groups"]
    else:
        sub = {"seed": 0, **sub, "size": want}
        chosen = want
    return replace(task, subset=sub), min(chosen, full)


def quantize_seconds(params_b: float, calibration: dict[str, Any], gflops: float) -> float:
    return QUANTIZE_K * params_b * int(calibration["num_samples"]) * int(calibration["max_seq_length"]) / gflops


def size_calibration(
    calibrated: dict[str, tuple[float, dict[str, Any]]], limit: float, gflops: float, minimum: int
) -> tuple[float, dict[str, int], float, float]:
    """Scale every calibrated format's num_samples by one ladder factor until the quantize stages'
    estimate fits `limit`. `calibrated`: format -> (params_b, calibration). Returns
    (factor, format -> samples, full estimate, estimate)."""

    def total(f: float) -> tuple[float, dict[str, int]]:
        n = {
            k: max(min(minimum, int(c["num_samples"])), int(int(c["num_samples"]) * f))
            for k, (_, c) in calibrated.items()
        }
        return sum(quantize_seconds(p, {**c, "num_samples": n[k]}, gflops) for k, (p, c) in calibrated.items()), n

    full, n = total(1.0)
    factor, est = 1.0, full
    if full > limit:
        for factor in LADDER[1:]:
            est, n = total(factor)
            if est <= limit:
                break
    return factor, n, full, est


# A kernel probe (workers/probe.py) caps a format's relative speed only below this ratio to the
# dense GEMM: the table's end-to-end factors are the truth where they were measured (an engine is
# more than its GEMMs); the probe is for the order-of-magnitude failure, oneDNN's reference FP8
# matmul (0.08 vs ~1,990 GFLOP/s on an AMX Xeon).
KERNEL_CAP_BELOW = 0.01
# A format whose evaluation alone would take this many budgets at the smallest ladder step is left
# out of a budgeted sweep (said in the sizing line and sizing.json; `sweep.budget=null` runs it).
UNFIT_BUDGETS = 4.0


def size_to_budget(
    tasks: list[TaskSpec],
    cells_for,
    budget: dict[str, Any],
    dtype: str,
    cost_cfg: dict[str, Any] | None = None,
    bf16_hardware: bool = True,
    kernel_probes: dict[str, str] | None = None,
    baseline: str = "",
) -> tuple[list[TaskSpec], Sizing]:
    """`cells_for(tasks)` -> every evaluate Cell those tasks make (all models, formats, seeds).
    `kernel_probes`: format -> the workers/probe.py kind of the kernel it runs on this host
    (fp8_scaled_mm for vLLM-CPU's torch FP8 fallback), measured and cached like the dense probe."""
    bad = sorted(set(budget) - set(BUDGET_KEYS))
    if bad:
        raise SizingError(f"sweep.budget: unknown key(s) {', '.join(bad)} (allowed: {', '.join(BUDGET_KEYS)})")
    for k, v in budget.items():
        if not isinstance(v, BUDGET_KEYS[k]) or isinstance(v, bool) or v <= 0:
            raise SizingError(f"sweep.budget.{k} must be a positive number, got {v!r}")
    limit = float(budget["evaluate_s"]) if "evaluate_s" in budget else None
    if limit is None:
        raise SizingError("sweep.budget needs evaluate_s (seconds for all of the sweep's evaluations)")
    min_samples = int(budget.get("min_samples", 8))
    p = probe(dtype)
    cost = host_cost(float(p["gflops"]), cost_cfg, bf16_hardware)
    default = cost.cfg["default_task"]
    kernels: dict[str, Any] = {}
    for fmt, kind in (kernel_probes or {}).items():
        k = probe(kind)
        ratio = float(k["gflops"]) / float(p["gflops"]) if k.get("gflops") else None
        # a copy: the cost model's merge is shallow, and DEFAULT_COST's table must stay as it is
        speeds = cost.cfg["format_speed"]["cpu"] = dict(cost.cfg["format_speed"].get("cpu") or {})
        if ratio is not None and ratio < KERNEL_CAP_BELOW:
            speeds[fmt] = min(float(speeds.get(fmt, 1.0)), ratio)
        kernels[fmt] = {"probe": kind, "gflops": k.get("gflops"), "ratio": ratio, "speed": speeds.get(fmt, 1.0)}
    dropped: dict[str, dict[str, Any]] = {}

    def kept(cells: list[Cell]) -> list[Cell]:
        return [c for c in cells if c.format.name not in dropped]

    def estimate(ts: list[TaskSpec]) -> float:
        return sum(cost.cell_seconds(c) for c in kept(cells_for(ts)))

    smallest = [scaled(t, LADDER[-1], task_samples(t, default), min_samples)[0] for t in tasks]
    alone: dict[str, float] = {}
    for c in cells_for(smallest):
        alone[c.format.name] = alone.get(c.format.name, 0.0) + cost.cell_seconds(c)
    for fmt, secs in alone.items():
        if fmt != baseline and secs > UNFIT_BUDGETS * limit:
            k = kernels.get(fmt)
            dropped[fmt] = {
                "estimate_s": round(secs, 1),
                "why": f"its evaluation alone is estimated {secs / 3600:.1f} h at the smallest step, over "
                f"{UNFIT_BUDGETS:g}x the {limit:.0f} s budget"
                + (
                    f" ({k['probe']} measured {k['gflops']} GFLOP/s here vs {p['gflops']} dense)"
                    if k and k["speed"] == k["ratio"]
                    else ""
                )
                + "; sweep.budget=null runs it anyway",
            }

    full_s = estimate(tasks)
    factor, chosen = 1.0, list(tasks)
    if full_s > limit:
        for f in LADDER[1:]:
            factor = f
            chosen = [scaled(t, f, task_samples(t, default), min_samples)[0] for t in tasks]
            if estimate(chosen) <= limit:
                break
    sizes = {
        t.name: {"full": task_samples(t, default), "chosen": task_samples(c, default)} for t, c in zip(tasks, chosen)
    }
    return chosen, Sizing(limit, p, full_s, estimate(chosen), factor, sizes, dropped=dropped, kernels=kernels)


def evaluate_cells(models, formats, format_names, seeds, engine: EngineSettings, execution) -> Any:
    """A cells_for() over the sweep's axes (the same engine resolution as orchestrator/planning/plan.py)."""

    def cells_for(ts: list[TaskSpec]) -> list[Cell]:
        out = []
        for m in models:
            for f in format_names:
                fmt = formats[m.name].get(f)
                if fmt is None:
                    continue
                ex = execution.get(m.name, {}).get(f)
                eng = (
                    replace(engine, dtype=ex.dtype, execution=ex.mode, host=ex.host, kv_cache_dtype=ex.kv_cache_dtype)
                    if ex
                    else engine
                )
                out += [Cell(model=m, format=fmt, task=t, engine=eng, seed=s) for t in ts for s in seeds]
        return out

    return cells_for
