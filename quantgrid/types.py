"""The typed model shared by the driver (orchestrator/) and the actors (workers/).

Plain dataclasses: they cross the Ray boundary by pickling and must not pull torch, vLLM or
MLflow into the driver. Everything that changes a result is part of a key (see `stable_hash`),
so a ledger can tell finished work from new work by key alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path, n: int = 64) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks (checkpoints are GBs); first `n` hex digits."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def stable_hash(obj: Any, n: int = 16) -> str:
    """Content hash of a JSON-able object: key order and whitespace do not matter."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


@dataclass(frozen=True)
class ModelSpec:
    """A base model: where its weights come from and what its dimensions allow."""

    name: str
    source: dict[str, Any]  # e.g. {kind: gguf_package, package: ..., file: ...} or {kind: tiny_random, ...}
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    note: str = ""  # shown next to results, e.g. "weights are Q4_1-dequantized"
    # Per-format settings this model needs, e.g. {w4a16: {group_size: 64}} (hidden 576 % 128 != 0).
    # They change the format's recipe, so they enter the format's key, not the model's.
    format_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Sizing for the planner and scheduler; they change where and how fast a cell runs, never
    # its result, so they stay out of the key.
    params_b: float = 0.0  # parameters in billions (cost model); 0 = estimate from the source dims
    quantize_resources: dict[str, Any] = field(default_factory=dict)  # {gpus, memory_gb, disk_gb}
    # Engine settings this model needs by default, e.g. {add_bos_token: true} for Gemma under the
    # engine default false (the authors' lm-eval setting for Llama). Applied over conf/engine;
    # a sweep's `engine:` and `engine.KEY=...` on the command line still win. They reach the
    # cells' engine settings (and so the cell keys) from there, not through this key.
    engine: dict[str, Any] = field(default_factory=dict)
    # Content identity of a `local` checkpoint (config, tokenizer, chat template, weight sizes),
    # filled in by the driver at plan time: in the key, so an edited checkpoint is a new cell.
    revision: str = ""

    @cached_property
    def key(self) -> str:
        d = asdict(self)
        for k in ("format_overrides", "note", "params_b", "quantize_resources", "engine"):
            d.pop(k)
        return stable_hash(d)


@dataclass(frozen=True)
class FormatSpec:
    """A quantization format: an llmcompressor recipe (None for the unquantized baseline)."""

    name: str
    label: str  # the paper's name, e.g. W8A8-FP8
    recipe: dict[str, Any] | None = None  # llmcompressor recipe (YAML-shaped); None = no-op
    calibration: dict[str, Any] | None = None  # {dataset, num_samples, max_seq_length, seed}
    dtype: str | None = None  # engine dtype override for this format, else the model's
    # Engine parallelism for this format, over the model's: {tensor_parallel_size, pipeline_parallel_size}
    # (e.g. 405B BF16 needs two nodes, its quantized formats fit one).
    parallel: dict[str, int] | None = None
    # A published, already quantized checkpoint instead of a recipe ({repo, revision}: e.g. the
    # authors' neuralmagic/...-quantized.w4a16), staged by the quantize stage without quantizing.
    published: dict[str, Any] | None = None
    # The quantization scheme the capability table knows it by (quantgrid/capability.py): read
    # from the recipe when absent; a published checkpoint declares it. Not in the key: the
    # recipe already says it.
    scheme: str | None = None
    # A mixed-precision format (sweep.mixed, orchestrator/planning/mixed.py): {budget_bits,
    # candidates: {name: recipe or None}, bits: {name: average weight bits}, sensitivity: settings}.
    # `recipe` is then its first quantized candidate's (the modifier, calibration and scheme the
    # capability table reads); the driver adds `assignment` ({candidate: [module names]}) from the
    # sensitivity results before the quantize stage, which builds the recipe from it.
    mixed: dict[str, Any] | None = None

    @property
    def is_baseline(self) -> bool:
        return self.recipe is None and self.published is None

    @cached_property
    def recipe_key(self) -> str:
        """What the quantized checkpoint depends on (parallelism does not change the weights)."""
        d = {"recipe": self.recipe, "calibration": self.calibration, "dtype": self.dtype}
        if self.mixed:  # keys of uniform formats stay the same
            d["mixed"] = self.mixed
        return stable_hash(d | {"published": self.published} if self.published else d)

    @cached_property
    def key(self) -> str:
        return stable_hash({"recipe": self.recipe_key, "parallel": self.parallel}) if self.parallel else self.recipe_key


@dataclass(frozen=True)
class TaskSpec:
    """One lm-eval task and the per-call settings it is scored with."""

    name: str  # lm-eval task name, found through the registry (include_path)
    metric: str  # primary lm-eval metric key, e.g. "acc,none"
    higher_is_better: bool = True
    chance: float | None = None  # score of a random guesser (1/k for k choices); None = not applicable
    num_fewshot: int = 0
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = False
    gen_kwargs: dict[str, Any] | None = None
    subset: dict[str, Any] | None = None  # {per_group: n, group_field: f, seed: s} or {first: n}
    version_hash: str = ""  # hash of the task's YAML + utils, filled by the driver
    # Planner sizing, not part of the key: {samples, prompt_tokens, output_tokens} per sample
    # (samples = the full task; a subset scales it down).
    cost: dict[str, Any] | None = None
    # Where lm-eval finds the task: "local" (workers/tasks) or "lm_eval" (its built-in registry).
    registry: str = "local"
    # Engine settings this task needs over the sweep's (e.g. {add_bos_token: true}): fixed when
    # the engine is built, so tasks that differ here are served by a second engine load.
    engine: dict[str, Any] | None = None
    # Who scores the task: None = lm-eval (simple_evaluate on the engine's LM object); otherwise an
    # external scorer, {kind: arena_hard, ...} (workers/scoring/judge.py), which still uses that engine.
    scorer: dict[str, Any] | None = None
    # Adaptive paired scoring of a quantized cell (quantgrid/settings.py Adaptive.task_settings):
    # scored in batches until its verdict is decided, so its result covers fewer documents than
    # the same task scored whole: part of the key. None = scored whole.
    adaptive: dict[str, Any] | None = None

    @property
    def scorer_kind(self) -> str:
        return str((self.scorer or {}).get("kind", "lm_eval"))

    @cached_property
    def key(self) -> str:
        d = asdict(self)
        d.pop("cost")
        for k, default in (
            ("registry", "local"),
            ("engine", None),
            ("scorer", None),
            ("adaptive", None),
        ):  # keys of older tasks stay the same
            if d[k] == default:
                d.pop(k)
        return stable_hash(d)


@dataclass(frozen=True)
class EngineSettings:
    """Fixed when a vLLM engine / lm-eval LM object is built: group cells by these."""

    batch_size: int | str = "auto"
    enforce_eager: bool = True
    seed: int = 1234
    add_bos_token: bool = False
    max_gen_toks: int = 256
    kv_cache_gb: int = 1  # vLLM-CPU KV cache space
    accelerator: str = "cpu"  # accelerator class (cpu, h100-80gb, a100-80gb...): results differ across them
    # Engine dtype and execution mode: "auto" in config (the capability table chooses per format
    # and host, quantgrid/capability.py); the plan resolves them per (model, format), so every
    # cell key holds the concrete values (numerics change with them). Pin them to compare, e.g.
    # `engine.execution=emulated` on a host that also runs W4A16 natively.
    dtype: str = "auto"
    execution: str = "auto"  # auto | native | emulated
    host: str = ""  # the host class the plan resolved for (cpu:avx2, cuda:sm90); "" before resolution
    # vLLM's kv_cache_dtype: auto (the model's dtype) | fp8 | fp8_e4m3 | fp8_e5m2. A format whose recipe
    # has a kv_cache_scheme sets fp8 for its own cells (quantgrid/capability.py kv_cache_dtype_of); set
    # it here to store every format's KV cache in FP8 (uncalibrated scales of 1.0 where the checkpoint
    # has none). The capability table's kv-fp8 row must be native on the host.
    kv_cache_dtype: str = "auto"

    @cached_property
    def key(self) -> str:
        d = asdict(self)
        if d["host"] == "":  # an unresolved engine (benches, older ledgers): keys as before
            for k in ("dtype", "execution", "host"):
                d.pop(k)
        if d["kv_cache_dtype"] == "auto":  # the default KV cache: keys as before
            d.pop("kv_cache_dtype")
        return stable_hash(d)


@lru_cache(maxsize=64)
def _versions_json(versions: tuple[tuple[str, str], ...]) -> str:
    return json.dumps([list(v) for v in versions], sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Cell:
    """One (model, format, task, seed) point of the grid."""

    model: ModelSpec
    format: FormatSpec
    task: TaskSpec
    engine: EngineSettings
    seed: int = 1234
    versions: tuple[tuple[str, str], ...] = ()  # (package, version) that change results

    @cached_property
    def key(self) -> str:
        # == stable_hash({"model": ..., "format": ..., "task": ..., "engine": ..., "seed": ...,
        # "versions": [...]}), with the JSON written by hand (keys sorted, component keys are hex):
        # a 500,000-cell plan hashes in ~1 s instead of ~3 s.
        blob = (
            f'{{"engine":"{self.engine.key}","format":"{self.format.key}","model":"{self.model.key}",'
            f'"seed":{int(self.seed)},"task":"{self.task.key}","versions":{_versions_json(self.versions)}}}'
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def group_key(self) -> tuple[str, str]:
        """Cells sharing this key are served by ONE engine load."""
        return (self.model.name, self.format.name)


@dataclass(frozen=True)
class Comparison:
    """Output similarity of one cell's generations against the baseline format's cell on the
    same task, seed and documents. It is scheduled and recorded like a cell (ledger row, lease,
    fencing, resume), as task `<task>.similarity` of the quantized format."""

    cell: Cell  # the quantized format's cell
    baseline: Cell  # the baseline format's cell: same model, task, seed
    encoder: str  # sentence encoder (a name in workers/similarity.ENCODERS, or a local path)

    @property
    def model(self) -> ModelSpec:
        return self.cell.model

    @property
    def format(self) -> FormatSpec:
        return self.cell.format

    @property
    def seed(self) -> int:
        return self.cell.seed

    @cached_property
    def task(self) -> TaskSpec:
        return TaskSpec(name=f"{self.cell.task.name}{SIMILARITY_SUFFIX}", metric="rougeL,none")

    @cached_property
    def key(self) -> str:
        return stable_hash(
            {
                "similarity": [self.baseline.key, self.cell.key],
                "encoder": self.encoder,
                "measures": list(SIMILARITY_MEASURES),
            }
        )


@dataclass(frozen=True)
class PerfScenario:
    """A serving use case: fixed prompt and output lengths (every request generates exactly
    `output_tokens`: EOS ignored). One file each under conf/perf/."""

    name: str
    prompt_tokens: int
    output_tokens: int
    label: str = ""
    source: str = ""  # where the token counts come from


@dataclass(frozen=True)
class LoadSettings:
    """How the load generator (GuideLLM) drives a server, per scenario: concurrency levels
    (1 = synchronous, one request at a time; more = continuous batching), each stopped at
    `max_requests` or `max_seconds`, the first `warmup_requests` not measured."""

    streams: tuple[int, ...] = (1, 4)
    max_requests: int = 8
    max_seconds: float = 30.0
    warmup_requests: int = 1
    seed: int = 42


@dataclass(frozen=True)
class PerfCell:
    """Serving performance of one (model, format) on one accelerator class for one scenario."""

    model: ModelSpec
    format: FormatSpec
    scenario: PerfScenario
    engine: EngineSettings
    load: LoadSettings
    versions: tuple[tuple[str, str], ...] = ()

    @property
    def seed(self) -> int:
        return self.engine.seed

    @cached_property
    def task(self) -> TaskSpec:
        return TaskSpec(
            name=f"{self.scenario.name}{PERF_SUFFIX}", metric="sync_request_latency_s_p50,none", higher_is_better=False
        )

    @cached_property
    def key(self) -> str:
        return stable_hash(
            {
                "perf": asdict(self.scenario) | {"source": None, "label": None},
                "model": self.model.key,
                "format": self.format.key,
                "engine": self.engine.key,
                "load": asdict(self.load),
                "versions": [list(v) for v in self.versions],
            }
        )


@dataclass(frozen=True)
class SensitivityCell:
    """Per-layer-group sensitivity of a model to one format (sweep.sensitivity): every group
    quantized alone, its KL from the base model on held-out text (workers/stages/sensitivity.py).
    Scheduled and recorded like a cell, as task `sensitivity` of that format."""

    model: ModelSpec
    format: FormatSpec
    settings: dict[str, Any]  # quantgrid/settings.py Sensitivity.cell_settings()
    versions: tuple[tuple[str, str], ...] = ()

    seed: int = 0

    @cached_property
    def task(self) -> TaskSpec:
        return TaskSpec(name=SENSITIVITY_TASK, metric="kl_sum,none", higher_is_better=False)

    @cached_property
    def key(self) -> str:
        return stable_hash(
            {
                "sensitivity": self.settings,
                "model": self.model.key,
                "format": self.format.recipe_key,
                "versions": [list(v) for v in self.versions],
            }
        )


SENSITIVITY_TASK = "sensitivity"
PERF_SUFFIX = ".perf"
SIMILARITY_SUFFIX = ".similarity"
# Per generated document: ROUGE-1 / ROUGE-L F1 (rouge-score, stemmed), cosine similarity of the
# sentence encoder's embeddings, and whether the two outputs are identical.
SIMILARITY_MEASURES = ("rouge1", "rougeL", "semantic", "identical")


class StageKind(str, Enum):
    BUILD_MODEL = "build_model"
    QUANTIZE = "quantize"
    EVALUATE = "evaluate"
    SIMILARITY = "similarity"  # outputs of a format vs the baseline's, after both engine groups
    PERF = "perf"  # serve the checkpoint (vllm serve), load it with GuideLLM, per scenario
    SENSITIVITY = "sensitivity"  # per layer group: quantized alone, KL from the base model


# Stages whose cells are scored one by one on an opened actor (engine, encoder, server, base model).
SCORING = (StageKind.EVALUATE, StageKind.SIMILARITY, StageKind.PERF, StageKind.SENSITIVITY)


@dataclass
class Stage:
    """A unit of work scheduled on one actor: build a model, quantize it, or evaluate a group."""

    kind: StageKind
    model: ModelSpec
    format: FormatSpec | None = None
    cells: list[Any] = field(default_factory=list)  # EVALUATE: every Cell of the engine group; SIMILARITY: Comparisons
    depends_on: list[str] = field(default_factory=list)

    @cached_property
    def key(self) -> str:  # cached: a stage's identity never changes once planned
        return stable_hash(
            {
                "kind": self.kind.value,
                "model": self.model.key,
                "format": self.format.key if self.format else None,
                "cells": sorted(c.key for c in self.cells),
            }
        )

    @property
    def name(self) -> str:
        parts = [self.kind.value, self.model.name] + ([self.format.name] if self.format else [])
        return "/".join(parts)


@dataclass
class Artifact:
    """A published, content-addressed checkpoint."""

    path: str
    content_hash: str  # hash of the manifest (file names, sizes, sha256)
    quantization_config: dict[str, Any] | None = None
    seconds: float = 0.0
    reused: bool = False
    dims: dict[str, int] | None = None  # Linear input dims (group-size checks), read by the worker
    sanity: dict[str, Any] | None = None  # the post-quantize probe's figures (workers/stages/sanity.py)


@dataclass
class SampleRecord:
    """One scored document under one lm-eval filter: the paper's "sample evaluations" live at this
    grain. lm-eval logs a sample per (document, filter) (GSM8K: strict-match and flexible-extract),
    so (doc_id, filter) is the key; `response` is the raw generation (the same text under every
    filter, what output similarity compares) and `filtered` the answer the filter extracted from it
    (what the metric scored)."""

    doc_id: int
    target: str
    response: str
    metrics: dict[str, float]
    logprobs: list[float] | None = None  # per choice (multiple choice) or per document (rolling)
    extra: dict[str, Any] = field(default_factory=dict)
    filter: str = "none"  # lm-eval's name for "no filter" (the `,none` in metric keys)
    filtered: str = ""


@dataclass
class TaskResult:
    """What an evaluate stage returns for one cell, the moment that task finishes."""

    cell_key: str
    model: str
    format: str
    task: str
    metrics: dict[str, float]  # lm-eval's metric keys, e.g. {"acc,none": 0.31, "acc_stderr,none": 0.04}
    samples: list[SampleRecord]
    num_samples: int
    seconds: float
    provenance: dict[str, Any]
    higher_is_better: bool = True
    primary_metric: str = ""
    tokens: dict[str, int] = field(default_factory=dict)  # prompt/generated token counts seen by the engine
    kind: str = "evaluate"  # or "similarity" (a Comparison's), "perf" (a PerfCell's), "sensitivity"
    # Files the driver stores beside the result (name -> text), e.g. GuideLLM's raw JSON report;
    # kept out of the ledger record.
    attachments: dict[str, str] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        return self.metrics.get(self.primary_metric)
