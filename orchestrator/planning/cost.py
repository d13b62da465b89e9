"""A simple cost model: seconds per stage from model size x tokens per task.

Used for the plan's GPU-hour estimate, for longest-processing-time-first ordering, for the
data-parallel split decision and by the simulator. It only has to rank and size work roughly;
its constants live in conf/config.yaml (`cost:`) and are calibrated where we can measure:
the CPU numbers come from the demo on this machine (SmolLM2-135M, README), the GPU numbers
are order-of-magnitude figures for one H100-class GPU and 8B-class models.

Throughput scales as 1 / parameters and linearly with the engine's GPUs (TP x PP); a format
multiplies it by its relative speed on that accelerator (e.g. FP8 is ~3x slower on a CPU
without FP8 units, ~1.5x faster on an H100).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quantgrid.types import Cell, FormatSpec, ModelSpec, TaskSpec

# Used when conf/config.yaml has no `cost:` section (and by tests / the synthetic benches).
DEFAULT_COST: dict[str, Any] = {
    "accelerators": {
        # prefill / decode tokens per second for a 1B-parameter model on one device;
        # load_s + load_s_per_b x params: engine construction (weights read + warmup).
        # cpu: SmolLM2-135M BF16 on 2 cores: MMLU 1,250 prompt tok/s, HumanEval ~420 generated
        # tok/s; load = actor start + vLLM import (~17 s) + engine build (~3.4 s).
        "cpu": {"prefill_tok_s_b": 169.0, "decode_tok_s_b": 57.0, "load_s": 20.0, "load_s_per_b": 10.0},
        "gpu": {"prefill_tok_s_b": 200000.0, "decode_tok_s_b": 25000.0, "load_s": 30.0, "load_s_per_b": 1.5},
    },
    "format_speed": {
        # fp8 on a bf16 CPU host (no FP8 units): SmolLM2 demo, AVX-512-BF16 EPYC, 2026-12-03 bench
        # demo-warm: MMLU prefill 277 vs BF16 1,087 tok/s (0.25), HumanEval decode 57 vs 399 (0.14).
        "cpu": {"bf16": 1.0, "fp8": 0.2, "int8": 1.5, "w4a16": 0.85},
        "gpu": {"bf16": 1.0, "fp8": 1.5, "int8": 1.4, "w4a16": 1.2},
    },
    # quantization seconds per billion parameters: calibrated recipes (GPTQ, SmoothQuant) vs
    # data-free ones (FP8 dynamic): dominated by calibration forward passes vs by weight I/O.
    # cpu: GPTQ on SmolLM2-135M with 64 x 256 calibration tokens took ~80 s (600 s per B params);
    # GPU: an order of magnitude less (layer-by-layer GPTQ on one GPU), an estimate to override.
    "quantize_s_per_b": {"calibrated": 60.0, "data_free": 2.0, "cpu_factor": 10.0},
    "build_s_per_b": 30.0,  # base checkpoint build / staging
    # Similarity stage (CPU, any cluster): MiniLM load, then ROUGE + embeddings per document pair.
    "similarity": {"load_s": 15.0, "s_per_sample": 0.02},
    # Perf stage: `vllm serve` start (CPU: ~60 s of imports over three processes) and GuideLLM's
    # fixed cost per run (~15 s: import, tokenizer, worker spawn), measured on this machine.
    "perf": {"server_start_s": 60.0, "load_generator_s": 15.0},
    # Sensitivity stage (workers/stages/sensitivity.py, float32 on the CPU): model load + the base
    # pass, then one forward pass per layer group over documents x max_tokens tokens. groups: a
    # model's layer groups when its config is not read (4 per decoder layer; SmolLM2-135M has 120).
    # s_per_b_token: float32 forward seconds per billion parameters per token (SmolLM2-135M, 2 x 256
    # tokens: ~1.2 s per group on 2 cores of an AMX Xeon).
    "sensitivity": {"load_s": 15.0, "groups": 128, "s_per_b_token": 0.017},
    "default_task": {"samples": 100, "prompt_tokens": 512, "output_tokens": 0},
}


def model_params_b(model: ModelSpec) -> float:
    """Parameters in billions: stated in the model YAML, else estimated from a tiny_random
    source's dims (12 x layers x hidden^2 + embeddings)."""
    if model.params_b:
        return float(model.params_b)
    src = model.source or {}
    h = int(src.get("hidden_size", 0) or 0)
    if h:
        layers = int(src.get("num_hidden_layers", 1))
        inter = int(src.get("intermediate_size", 4 * h))
        vocab = int(src.get("vocab_size", 32000))
        return (layers * (4 * h * h + 3 * h * inter) + 2 * vocab * h) / 1e9
    return 1.0


def task_samples(task: TaskSpec, default: dict[str, Any]) -> int:
    """Samples a cell scores: the task's full size, cut down by its subset."""
    c = {**default, **(task.cost or {})}
    n = int(c.get("samples", 0))
    sub = task.subset or {}
    if "size" in sub:
        n = min(n, int(sub["size"]))
    elif "per_group" in sub:
        groups = int(sub.get("max_groups") or c.get("groups", n))
        n = min(n, int(sub["per_group"]) * groups)
    return n


@dataclass
class CostModel:
    cfg: dict[str, Any] = field(default_factory=lambda: DEFAULT_COST)

    def __post_init__(self) -> None:
        merged = {**DEFAULT_COST, **(self.cfg or {})}
        for k in ("accelerators", "format_speed", "quantize_s_per_b", "similarity", "perf", "sensitivity"):
            merged[k] = {**DEFAULT_COST[k], **(self.cfg or {}).get(k, {})}
        self.cfg = merged
        self._memo: dict[tuple, float] = {}

    def _acc(self, accelerator: str) -> tuple[str, dict[str, float]]:
        kind = "cpu" if accelerator == "cpu" else "gpu"
        accs = self.cfg["accelerators"]
        return kind, accs.get(accelerator) or accs[kind]

    def tokens(self, task: TaskSpec) -> tuple[int, int]:
        """(prompt, output) tokens a cell of this task processes."""
        k = ("tokens", task.key, id(task.cost))
        if k not in self._memo:
            self._memo[k] = self._tokens(task)
        return self._memo[k]

    def _tokens(self, task: TaskSpec) -> tuple[int, int]:
        c = {**self.cfg["default_task"], **(task.cost or {})}
        n = task_samples(task, self.cfg["default_task"])
        prompt = float(c.get("prompt_tokens", 0)) + float(c.get("prompt_tokens_per_shot", 0)) * task.num_fewshot
        out = float(c.get("output_tokens", 0))
        cap = (task.gen_kwargs or {}).get("max_gen_toks")
        if cap is not None:  # generation stops at the task's max_gen_toks at the latest
            out = min(out, float(cap))
        # `repeats` generations per sample (EvalPlus-style n samples): the prompt is prefilled once
        # (vLLM's prefix cache), every sample is decoded.
        return int(n * prompt), int(n * out * float(c.get("repeats", 1)))

    def cell_seconds(self, cell: Cell) -> float:
        k = (
            cell.model.key,
            cell.model.params_b,
            cell.format.name,
            cell.task.key,
            id(cell.task.cost),
            cell.engine.accelerator,
        )
        if k not in self._memo:  # a 500,000-cell grid has only (models x formats x tasks) distinct costs
            self._memo[k] = self._cell_seconds(cell)
        return self._memo[k]

    def _cell_seconds(self, cell: Cell) -> float:
        kind, acc = self._acc(cell.engine.accelerator)
        devices = max(1, cell.model.tensor_parallel_size * cell.model.pipeline_parallel_size) if kind == "gpu" else 1
        speed = self.cfg["format_speed"].get(kind, {}).get(cell.format.name, 1.0) * devices
        p = model_params_b(cell.model)
        prompt, out = self.tokens(cell.task)
        return p * (prompt / acc["prefill_tok_s_b"] + out / acc["decode_tok_s_b"]) / speed

    def load_seconds(self, model: ModelSpec, accelerator: str) -> float:
        _, acc = self._acc(accelerator)
        return acc["load_s"] + acc["load_s_per_b"] * model_params_b(model)

    def quantize_seconds(self, model: ModelSpec, fmt: FormatSpec, accelerator: str) -> float:
        if fmt.is_baseline:
            return 0.0
        if fmt.published:  # staged (downloaded), not quantized
            return self.build_seconds(model)
        q = self.cfg["quantize_s_per_b"]
        s = model_params_b(model) * (q["calibrated"] if fmt.calibration else q["data_free"])
        return s * (q["cpu_factor"] if accelerator == "cpu" else 1.0)

    def similarity_seconds(self, comparisons: list) -> float:
        c = self.cfg["similarity"]
        n = sum(task_samples(comp.cell.task, self.cfg["default_task"]) for comp in comparisons)
        return c["load_s"] + c["s_per_sample"] * n

    def perf_seconds(self, model: ModelSpec, cells: list) -> float:
        """Server start, then per scenario GuideLLM's overhead plus each level's requests (one
        stream's latency bounds a level: requests run `streams` at a time), capped by max_seconds."""
        c = self.cfg["perf"]
        total = c["server_start_s"]
        for cell in cells:
            kind, acc = self._acc(cell.engine.accelerator)
            speed = self.cfg["format_speed"].get(kind, {}).get(cell.format.name, 1.0)
            p = model_params_b(model)
            request = (
                p
                * (
                    cell.scenario.prompt_tokens / acc["prefill_tok_s_b"]
                    + cell.scenario.output_tokens / acc["decode_tok_s_b"]
                )
                / speed
            )
            total += c["load_generator_s"] + sum(
                min(cell.load.max_seconds, request * cell.load.max_requests / n) for n in cell.load.streams
            )
        return total

    def sensitivity_seconds(self, model: ModelSpec, cells: list) -> float:
        c = self.cfg["sensitivity"]
        total = c["load_s"]
        for cell in cells:
            tokens = int(cell.settings["documents"]) * int(cell.settings["max_tokens"])
            total += (c["groups"] + 1) * c["s_per_b_token"] * model_params_b(model) * tokens
        return total

    def build_seconds(self, model: ModelSpec) -> float:
        return self.cfg["build_s_per_b"] * model_params_b(model)
