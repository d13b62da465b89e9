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


# Per-document metrics an adaptive verdict can be taken on: the task score is their mean and each
# document's value lies in [0, 1] (lm-eval's `mean` aggregation of 0/1 outcomes), which the betting
# confidence sequence needs (orchestrator/report/sequential.py). Corpus metrics (perplexities) and
# judge win rates are pooled ratios, not means of bounded values: those tasks are scored whole.
ADAPTIVE_METRICS = ("acc", "acc_norm", "exact_match", "pass@1", "pass_at_1")


@dataclass(frozen=True)
class Adaptive:
    """`sweep.adaptive`: each quantized cell of an eligible task (ADAPTIVE_METRICS, higher is
    better, scored by lm-eval) is scored `batch_documents` documents at a time, in a seeded order
    shared by every format of the task, against the baseline's scores on the same documents; after
    each batch an anytime-valid confidence sequence on the paired quantity is updated and the cell
    stops once it says `above` or `below` the target, or at `max_documents` with `undecided`.
    The baseline is scored on all its documents (every format is read against it)."""

    enabled: bool = False
    target: str = "recovery"  # recovery: mu_q >= value * mu_b; difference: mu_q - mu_b >= -value
    value: float = 0.99
    alpha: float = 0.05  # the CS's miss probability over the whole stream, peeking included
    batch_documents: int = 16
    max_documents: int = 0  # 0 = every document the baseline scored
    seed: int = 0  # the document order (with the task's name and the cell's seed)
    tasks: tuple[str, ...] = ()  # () = every eligible task of the sweep

    KEYS = ("target", "value", "alpha", "batch_documents", "max_documents", "seed", "tasks")

    @classmethod
    def of(cls, node: Any) -> Adaptive:
        if node is None or node is False:
            return cls()
        if node is True:
            return cls(enabled=True)
        if not isinstance(node, dict):
            raise ConfigError(f"sweep.adaptive must be true, false or a mapping of {', '.join(cls.KEYS)}, got {node!r}")
        data = {k: v for k, v in node.items() if v is not None}
        for k in data:
            if k not in cls.KEYS:
                raise ConfigError(f"sweep.adaptive.{k}: unknown setting (known: {', '.join(cls.KEYS)})")
        if data.get("target", "recovery") not in ("recovery", "difference"):
            raise ConfigError(f"sweep.adaptive.target must be recovery or difference, got {data['target']!r}")
        for k, lo, hi in (("value", 0.0, 1.0), ("alpha", 0.0, 1.0)):
            v = data.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v < hi):
                raise ConfigError(f"sweep.adaptive.{k} must be a number in ({lo:g}, {hi:g}), got {v!r}")
        for k, least in (("batch_documents", 1), ("max_documents", 0), ("seed", 0)):
            v = data.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < least):
                raise ConfigError(f"sweep.adaptive.{k} must be an integer >= {least}, got {v!r}")
        tasks = data.get("tasks", ())
        if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
            raise ConfigError(f"sweep.adaptive.tasks must be a list of task names, got {tasks!r}")
        data["tasks"] = tuple(tasks)
        return cls(enabled=True, **data)

    @staticmethod
    def eligible(metric: str, higher_is_better: bool, scorer_kind: str) -> str:
        """'' when a task's primary metric can be decided adaptively, else why not."""
        name = metric.partition(",")[0]
        if scorer_kind != "lm_eval":
            return f"it is scored by {scorer_kind}, not lm-eval"
        if not higher_is_better or name not in ADAPTIVE_METRICS:
            return f"its metric {metric} is not a per-document score in [0, 1] ({', '.join(ADAPTIVE_METRICS)})"
        return ""

    def task_settings(self) -> dict[str, Any]:
        """What a cell's adaptive scoring depends on (in its task's key)."""
        return {
            "target": self.target,
            "value": self.value,
            "alpha": self.alpha,
            "batch_documents": self.batch_documents,
            "max_documents": self.max_documents,
            "seed": self.seed,
        }


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


def _check_held_out_text(section: str, out: Any) -> None:
    """`documents` and `max_tokens` of a probe on workers/stages/sanity_text.py's documents
    (the sanity gate's and the sensitivity stage's)."""
    for k, low, high in (("documents", 1, Sanity.MAX_DOCUMENTS), ("max_tokens", 16, 1 << 20)):
        v = getattr(out, k)
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ConfigError(f"{section}.{k} must be an integer in [{low}, {high}], got {v!r}")


@dataclass(frozen=True)
class Sanity:
    """`sweep.sanity`: the post-quantize gate. Right after a checkpoint is built, the quantize
    actor compares it with its base model on a few held-out documents (workers/stages/sanity.py:
    exact per-token KL(base || quantized) over the full vocabulary, and the perplexity ratio); a
    checkpoint past either limit fails its stage as `quantization_broken` before any evaluation
    is spent on it. `sweep.sanity: false` turns the gate off (the probe is not run)."""

    enabled: bool = True
    # Measured by the probe itself (4 documents x 256 tokens) on SmolLM2-135M, the demo's recipes
    # and data-free round-to-nearest ones; mean KL nats/token, perplexity ratio:
    #   FP8-dynamic 0.030 x1.001 | W8A8-INT8 (SmoothQuant+GPTQ) 0.019 x1.018 | W4A16 GPTQ g64 0.48 x1.75
    #   NVFP4A16 0.24 x1.27 | W4 g64 RTN 0.44 x1.48 | W4 per-channel RTN 0.82 x2.04 (degraded: past the ratio)
    #   W8A4 5.6 x265 | W3 per-channel 6.6 x762 | W4 per-tensor 11.2 x8e4 | W2 per-channel 14.9 x3e6
    # The demo's W4A16 is a real, much degraded data point (the report's perplexity recovery 72%):
    # the limits keep it. A broken recipe multiplies perplexity by hundreds; x2 is the issue's
    # "perplexity doubled". KL 1.0 is 2x the worst working recipe measured and 5.6x under the
    # mildest broken one; a 135M model is among the most quantization-sensitive (larger models
    # diverge less), and KL still catches a broken model whose perplexity cannot move much
    # (near-uniform outputs).
    max_ppl_ratio: float = 2.0
    max_kl: float = 1.0
    documents: int = 4  # of workers/stages/sanity_text.py DOCUMENTS (MAX_DOCUMENTS of them)
    max_tokens: int = 256  # each document truncated to this many tokens

    MAX_DOCUMENTS = 8

    @classmethod
    def of(cls, node: Any) -> Sanity:
        if node is None or node is True:
            return cls()
        if node is False:
            return cls(enabled=False)
        keys = tuple(f.name for f in fields(cls))
        if not isinstance(node, dict) or set(node) - set(keys):
            raise ConfigError(f"sweep.sanity must be true, false or a map of {', '.join(keys)}, got {node!r}")
        out = cls(**node)
        if not isinstance(out.enabled, bool):
            raise ConfigError(f"sweep.sanity.enabled must be true or false, got {out.enabled!r}")
        for k, low in (("max_ppl_ratio", 1.0), ("max_kl", 0.0)):
            v = getattr(out, k)  # .inf turns one limit off
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > low:
                raise ConfigError(f"sweep.sanity.{k} must be a number > {low:g}, got {v!r}")
        _check_held_out_text("sweep.sanity", out)
        return out


@dataclass(frozen=True)
class Sensitivity:
    """`sweep.sensitivity`: how much each layer group of a model moves its next-token
    distribution when only that group is quantized to a target format (workers/stages/sensitivity.py).
    A group is one decoder layer's modules that vLLM serves as one fused Linear (q/k/v, gate/up)
    or a module of its own (o, down): a mixed-precision choice can only split there. One cell per
    (model, format): exact KL(base || group quantized) over the full vocabulary on `documents`
    held-out documents (workers/stages/sanity_text.py) of `max_tokens` tokens, one forward pass per
    group. SmolLM2-135M: 120 groups; 2 x 256 tokens keep a format within ~4 min on 2 cores."""

    formats: tuple[str, ...] = ()  # target formats; sweep.mixed adds its quantized candidates
    documents: int = 2
    max_tokens: int = 256

    KEYS = ("formats", "documents", "max_tokens")

    @property
    def enabled(self) -> bool:
        return bool(self.formats)

    @classmethod
    def of(cls, node: Any) -> Sensitivity:
        if node is None or node is False:
            return cls()
        if not isinstance(node, dict):
            raise ConfigError(f"sweep.sensitivity must be a mapping of {', '.join(cls.KEYS)}, got {node!r}")
        for k in node:
            if k not in cls.KEYS:
                raise ConfigError(f"sweep.sensitivity.{k}: unknown setting (known: {', '.join(cls.KEYS)})")
        formats = node.get("formats") or ()
        formats = [formats] if isinstance(formats, str) else formats
        if not isinstance(formats, (list, tuple)) or not all(isinstance(f, str) for f in formats):
            raise ConfigError(f"sweep.sensitivity.formats must be a list of format names, got {formats!r}")
        out = cls(
            formats=tuple(formats), **{k: node[k] for k in ("documents", "max_tokens") if node.get(k) is not None}
        )
        _check_held_out_text("sweep.sensitivity", out)
        return out

    def cell_settings(self) -> dict[str, Any]:
        """What a sensitivity cell's figures depend on (in its key)."""
        return {"documents": self.documents, "max_tokens": self.max_tokens, "groups": "fused"}


@dataclass(frozen=True)
class Mixed:
    """`sweep.mixed`: one mixed-precision format per budget, `budgets` in average weight bits over
    the quantizable Linears, scales included (format `mixed-<bits>b`), `budgets_gb` in checkpoint
    gigabytes (1e9 bytes: the Linears at their candidates' bits plus the rest of the model,
    embeddings and norms, at 16 bits; format `mixed-<gb>gb`, converted to bits once the
    sensitivity stage has counted the model's parameters). Each layer group gets one of
    the `candidates` (formats of the sweep; the baseline keeps a group unquantized) so that the
    sum of the groups' measured sensitivities (sweep.sensitivity) is least within the budget,
    an integer program (orchestrator/planning/mixed.py, scipy.optimize.milp). The chosen
    assignment becomes an llmcompressor recipe whose config_groups target those modules; it is
    quantized, served and scored like any other format."""

    candidates: tuple[str, ...] = ()
    budgets: tuple[float, ...] = ()
    budgets_gb: tuple[float, ...] = ()

    KEYS = ("candidates", "budgets", "budgets_gb")

    @property
    def enabled(self) -> bool:
        return bool(self.budgets or self.budgets_gb)

    @classmethod
    def of(cls, node: Any) -> Mixed:
        if node is None or node is False:
            return cls()
        if not isinstance(node, dict):
            raise ConfigError(f"sweep.mixed must be a mapping of {', '.join(cls.KEYS)}, got {node!r}")
        for k in node:
            if k not in cls.KEYS:
                raise ConfigError(f"sweep.mixed.{k}: unknown setting (known: {', '.join(cls.KEYS)})")
        cands = node.get("candidates") or []
        if not isinstance(cands, (list, tuple)) or len(cands) < 2 or not all(isinstance(c, str) for c in cands):
            raise ConfigError(f"sweep.mixed.candidates must list at least two formats, got {cands!r}")
        if len(set(cands)) != len(cands):
            raise ConfigError(f"sweep.mixed.candidates lists a format more than once: {list(cands)}")
        lists = {}
        number = lambda b: isinstance(b, (int, float)) and not isinstance(b, bool)  # noqa: E731
        for k, what, ok in (
            ("budgets", "average weight bits in [1, 32]", lambda b: 1 <= b <= 32),
            ("budgets_gb", "checkpoint gigabytes > 0", lambda b: b > 0),
        ):
            v = node.get(k) or []
            v = [v] if number(v) else v
            if not isinstance(v, (list, tuple)) or not all(number(b) and ok(b) for b in v):
                raise ConfigError(f"sweep.mixed.{k} must list {what}, got {v!r}")
            if len({f"{float(b):g}" for b in v}) != len(v):
                raise ConfigError(f"sweep.mixed.{k} lists a budget more than once: {list(v)}")
            lists[k] = tuple(float(b) for b in v)
        if not lists["budgets"] and not lists["budgets_gb"]:
            raise ConfigError("sweep.mixed needs budgets (average weight bits) or budgets_gb (checkpoint gigabytes)")
        return cls(tuple(cands), **lists)

    @staticmethod
    def format_name(budget: float) -> str:
        return f"mixed-{budget:g}b"

    def formats(self) -> list[tuple[str, dict[str, float]]]:
        """(format name, {budget_bits: b} or {budget_gb: g}) per budget, bits first."""
        return [(self.format_name(b), {"budget_bits": b}) for b in self.budgets] + [
            (f"mixed-{g:g}gb", {"budget_gb": g}) for g in self.budgets_gb
        ]
