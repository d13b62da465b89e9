"""Typed settings sections with their one table of defaults (nanoGPT's GPTConfig: one dataclass of
defaults; llm-compressor's modifiers: the class owns its fields and validators).

`Resources` is the `resources:` section: conf/config.yaml sets none of it, a sweep may pin some
(conf/sweep/paper.yaml), `resources.K=V` on the command line wins; every reader (placement,
policy, scheduler, driver, simulator, benches) gets the same object, so a `Sweep` built without
conf/ (the benches) behaves like one composed from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from quantgrid.errors import ConfigError

# OOM fallback steps, in the order tried (orchestrator/execution/scheduler.py apply_fallback).
OOM_FALLBACKS = ("halve_batch_size", "halve_max_model_len", "double_tensor_parallel")
# Ray runtime_env fields a stage's environment may set (resources.runtime_env.STAGE).
RUNTIME_ENV_STAGES = ("quantize", "evaluate", "similarity", "perf")
RUNTIME_ENV_KEYS = (
    "py_executable",
    "env_vars",
    "image_uri",
    "container",
    "pip",
    "uv",
    "conda",
    "py_modules",
    "working_dir",
)


@dataclass(frozen=True)
class Resources:
    # Cores per actor; None = every core of the node on a CPU machine (one engine at a time with
    # all its threads beats several starving each other), 4 per GPU on a GPU node.
    cpus_per_actor: int | None = None
    # GPUs per engine actor; None = the model's tensor x pipeline parallel size.
    gpus_per_actor: int | None = None
    # One actor process serves a model's engine groups one after another (vLLM imported once;
    # each (model, format) still gets its own engine, loaded once): ~17 s saved per group on CPU.
    reuse_actors: bool = True
    # A group whose actor dies or hangs is retried on a fresh actor this many times; task errors
    # and bad checkpoints fail their cells at once.
    max_retries: int = 2
    # Per engine load / per task; past it the attempt is given up, fenced off and retried.
    stage_timeout_s: float = 3600
    # An actor (or its placement group) not up by then is given up and retried.
    start_timeout_s: float = 600
    # An actor answering no heartbeat (sent every lease_s / 4) for this long loses its lease; its
    # cells are retried elsewhere and a late result from it is rejected by the ledger.
    lease_s: float = 120
    # Out of memory: the engine group is rebuilt with the next step, in this order.
    oom_fallbacks: tuple[str, ...] = OOM_FALLBACKS
    # Split an engine group into data-parallel replicas (one more engine load each) when it would
    # leave devices idle: auto | off | max replicas. Never on a one-engine-at-a-time CPU machine.
    data_parallel: str | int | bool = "auto"
    # A replica is at most this fraction of the ideal makespan (total work / devices).
    dp_granularity: float = 0.05
    # Keep the nodes a blocked big job needs free of backfill. Off: measured on the simulator,
    # idle reserved nodes cost more makespan than the starvation they prevent.
    reservations: bool = False
    # Per-stage Ray runtime_env, e.g. {quantize: {py_executable: /opt/quantize/bin/python}}
    # (llmcompressor and vLLM pin different compressed-tensors).
    runtime_env: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, value: Resources | dict[str, Any] | None, where: str = "resources") -> Resources:
        """Defaults, overridden by a mapping (validated: unknown keys and bad values refused in one line)."""
        if isinstance(value, Resources):
            return value
        # null = the default here (conf/config.yaml lists every key as null so that
        # `resources.KEY=VALUE` works on the command line without a `+`)
        data = {k: v for k, v in dict(value or {}).items() if v is not None}
        known = [f.name for f in fields(cls)]
        for k, v in data.items():
            if k not in known:
                raise ConfigError(f"{where}.{k}: unknown setting (known: {', '.join(known)})")
            _check(where, k, v)
        if "oom_fallbacks" in data:
            data["oom_fallbacks"] = tuple(data["oom_fallbacks"])
        return cls(**data)


_TYPES: dict[str, tuple[type, ...]] = {
    "cpus_per_actor": (int, type(None)),
    "gpus_per_actor": (int, type(None)),
    "reuse_actors": (bool,),
    "max_retries": (int,),
    "stage_timeout_s": (int, float),
    "start_timeout_s": (int, float),
    "lease_s": (int, float),
    "oom_fallbacks": (list, tuple),
    "data_parallel": (str, int, bool),
    "dp_granularity": (int, float),
    "reservations": (bool,),
    "runtime_env": (dict,),
}
_POSITIVE = ("lease_s", "stage_timeout_s", "start_timeout_s", "dp_granularity")


def _check(where: str, k: str, v: Any) -> None:
    types = _TYPES[k]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        raise ConfigError(f"{where}.{k} must be {' or '.join(t.__name__ for t in types)}, got {v!r}")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and (v < 0 or (k in _POSITIVE and not v)):
        raise ConfigError(f"{where}.{k} must be > 0, got {v!r}")
    if k == "oom_fallbacks":
        for step in v:
            if step not in OOM_FALLBACKS:
                raise ConfigError(f"{where}.oom_fallbacks: unknown step '{step}' (known: {', '.join(OOM_FALLBACKS)})")
    if k == "data_parallel" and isinstance(v, str) and v not in ("auto", "off"):
        raise ConfigError(f"{where}.data_parallel must be auto, off or a replica count, got {v!r}")
    if k == "runtime_env":
        for stage, env in v.items():
            if stage not in RUNTIME_ENV_STAGES:
                raise ConfigError(
                    f"{where}.runtime_env.{stage}: unknown stage (known: {', '.join(RUNTIME_ENV_STAGES)})"
                )
            if not isinstance(env, dict) or set(env) - set(RUNTIME_ENV_KEYS):
                bad = sorted(set(env) - set(RUNTIME_ENV_KEYS)) if isinstance(env, dict) else env
                raise ConfigError(
                    f"{where}.runtime_env.{stage}: {bad} is not a Ray runtime_env field this may set "
                    f"(allowed: {', '.join(RUNTIME_ENV_KEYS)})"
                )


# The similarity encoder when `sweep.similarity.encoder` is not set (bundled: quantgrid/runtime.py encoder_path).
DEFAULT_ENCODER = "all-minilm-l6-v2"


@dataclass(frozen=True)
class Similarity:
    """`sweep.similarity`: generated outputs of each format compared with the baseline's on these
    (generative) tasks, by ROUGE and the encoder's embeddings. No tasks = no similarity stage."""

    tasks: tuple[str, ...] = ()
    encoder: str = DEFAULT_ENCODER

    def __bool__(self) -> bool:
        return bool(self.tasks)


@dataclass(frozen=True)
class ServeSettings:
    """`sweep.perf.server`: how each (model, format)'s `vllm serve` is started."""

    port: int = 0  # 0 = a free port picked at start
    start_timeout_s: float = 600.0  # weights load + compile; past it the server is `server_unhealthy`
    extra_args: tuple[str, ...] = ()  # more `vllm serve` arguments, passed through


@dataclass(frozen=True)
class Perf:
    """`sweep.perf` (validated in orchestrator/config/perf.py): serving scenarios (conf/perf),
    the load generator's settings, `vllm serve` flags, and what the recommendation weighs. No
    scenarios = no perf stage."""

    scenarios: tuple[Any, ...] = ()  # quantgrid.types.PerfScenario
    load: Any = None  # quantgrid.types.LoadSettings
    server: ServeSettings = field(default_factory=ServeSettings)
    price_per_hour: dict[str, float] = field(default_factory=dict)  # accelerator -> $/h
    latency_limits: dict[str, float] = field(default_factory=dict)  # recommend.py LATENCY_KEYS
    recovery_floors: tuple[float, ...] = (99.0, 97.0)  # % of the baseline's accuracy, highest first
    accuracy_from: str = ""  # a perf-only sweep takes recovery from this sweep's report

    def __bool__(self) -> bool:
        return bool(self.scenarios)


@dataclass(frozen=True)
class NoiseFloor:
    """`sweep.noise_floor`: the baseline scored a second time on the same documents with another
    batch composition, as a format of its own (`<baseline>_rerun`), so every task has a measured
    baseline-vs-baseline flip rate and score difference to read each format's against. Only the
    batching changes: lm-eval sends requests to vLLM `batch_size` at a time, and a kernel's
    reduction order (hence its rounding) depends on what shares a forward pass."""

    enabled: bool = False
    batch_size: int = 8  # the rerun's batch (a baseline that batches by 8 itself reruns at 3)

    SUFFIX = "_rerun"

    @classmethod
    def of(cls, node: Any) -> NoiseFloor:
        if node is None or node is False:
            return cls()
        if node is True:
            return cls(enabled=True)
        if not isinstance(node, dict) or set(node) - {"batch_size"}:
            raise ConfigError(f"sweep.noise_floor must be true, false or {{batch_size: N}}, got {node!r}")
        bs = node.get("batch_size", cls.batch_size)
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ConfigError(f"sweep.noise_floor.batch_size must be an integer >= 1, got {bs!r}")
        return cls(enabled=True, batch_size=bs)

    def format_name(self, baseline: str) -> str:
        return f"{baseline}{self.SUFFIX}" if self.enabled else ""

    def rerun_batch(self, baseline_batch: int | str) -> int:
        """A batch size other than the baseline's own."""
        if baseline_batch != self.batch_size:
            return self.batch_size
        return 3 if self.batch_size != 3 else 5
