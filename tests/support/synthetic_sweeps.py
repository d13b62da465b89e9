"""Seeded synthetic sweeps for the grid-engine benches (plan, resume, simulation, Ray cluster).

`wide_sweep(models, recipes, tasks, seeds)`: a recipe x seed study far wider than the paper.
  - model sizes: drawn from {1, 3, 8, 14, 32, 70} B (weights 4:4:4:2:1:1); TP = 1 up to 14B,
    2 for 32B, 4 for 70B.
  - recipes: GPTQ W4A16 / W8A8 variants differing in group size, dampening and calibration count
    (every recipe is a distinct content hash, so a distinct quantize job and engine group).
  - tasks: samples ~ lognormal(median 800, sigma 1.0) clipped to [50, 15000]; prompt tokens per
    sample ~ lognormal(median 600, sigma 0.6); 30% generative with 256 output tokens.
`paper_sweep()`: Llama-3.1 8B/70B/405B x BF16/FP8/INT8/W4A16 x the paper's tasks with their real
  sample counts and typical prompt lengths (Open LLM Leaderboard v1 + v2, HumanEval(+),
  Arena-Hard); 405B BF16 is TP8 x PP2 across two nodes, quantized 405B TP8 on one node.
Both build the real typed specs and go through the real `plan.expand()`.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from quantgrid.settings import Resources
from orchestrator.config import Sweep
from quantgrid.types import EngineSettings, FormatSpec, ModelSpec, TaskSpec

ACCELERATOR = "h100-80gb"


def _sweep(name, models, formats, tasks, seeds, accelerator=ACCELERATOR, resources=None) -> Sweep:
    return Sweep(
        name=name,
        models=models,
        formats={m.name: {f.name: f for f in formats.get(m.name, formats.get("*", []))} for m in models},
        format_names=[f.name for f in formats.get("*", next(iter(formats.values())))],
        tasks=tasks,
        seeds=seeds,
        baseline="bf16",
        engine=EngineSettings(accelerator=accelerator, enforce_eager=False),
        run_dir=Path("runs"),
        tracking_uri="",
        ray_address="",
        resources=Resources.of(resources),
        versions=(("vllm", "0.32.0"), ("lm-eval", "0.4.13")),
    )


def wide_sweep(models: int = 20, recipes: int = 25, tasks: int = 100, seeds: int = 10, seed: int = 0) -> Sweep:
    rng = random.Random(seed)
    sizes = rng.choices([1, 3, 8, 14, 32, 70], weights=[4, 4, 4, 2, 1, 1], k=models)
    ms = [
        ModelSpec(
            name=f"m{i:03d}-{p}b",
            source={"kind": "local", "path": f"/models/m{i}"},
            params_b=float(p),
            tensor_parallel_size=4 if p >= 70 else 2 if p >= 32 else 1,
            quantize_resources={"gpus": 1, "memory_gb": p / 4},
        )
        for i, p in enumerate(sizes)
    ]
    fs = [FormatSpec("bf16", "BF16")]
    for r in range(recipes - 1):
        scheme = "W4A16" if r % 2 else "W8A8"
        fs.append(
            FormatSpec(
                f"r{r:03d}",
                f"{scheme}-r{r}",
                recipe={
                    "GPTQModifier": {
                        "scheme": scheme,
                        "group_size": rng.choice([32, 64, 128]),
                        "dampening_frac": round(rng.uniform(0.001, 0.1), 4),
                        "variant": r,
                    }
                },
                calibration={
                    "dataset": "synthetic",
                    "num_samples": rng.choice([128, 256, 512]),
                    "max_seq_length": 2048,
                },
            )
        )
    ts = []
    for t in range(tasks):
        gen = rng.random() < 0.3
        ts.append(
            TaskSpec(
                name=f"t{t:03d}",
                metric="acc,none",
                version_hash=f"{t:016x}",
                cost={
                    "samples": int(min(15000, max(50, rng.lognormvariate(6.68, 1.0)))),
                    "prompt_tokens": int(rng.lognormvariate(6.4, 0.6)),
                    "output_tokens": 256 if gen else 0,
                },
            )
        )
    return _sweep("synthetic", ms, {"*": fs}, ts, list(range(seeds)))


# (task, samples, prompt tokens per sample incl. few-shot and all choices, output tokens)
PAPER_TASKS = [
    ("arc_challenge_25shot", 1172, 4 * 2600, 0),
    ("gsm8k_8shot_cot", 1319, 1000, 256),
    ("hellaswag_10shot", 10042, 4 * 900, 0),
    ("mmlu_5shot", 14042, 4 * 650, 0),
    ("truthfulqa_mc2", 817, 8 * 120, 0),
    ("winogrande_5shot", 1267, 2 * 200, 0),
    ("mmlu_pro_5shot", 12032, 1400, 512),
    ("ifeval", 541, 120, 1280),
    ("bbh_3shot", 5761, 900, 256),
    ("math_lvl5_4shot", 1324, 800, 1024),
    ("gpqa_0shot", 448, 4 * 250, 0),
    ("musr", 756, 3 * 900, 0),
    ("humaneval", 164, 150, 512),
    ("humaneval_plus", 164, 150, 512),
    ("arena_hard", 500, 400, 1500),
]
PAPER_FORMATS = [
    FormatSpec("bf16", "BF16"),
    FormatSpec("fp8", "W8A8-FP8", recipe={"QuantizationModifier": {"scheme": "FP8_DYNAMIC"}}),
    FormatSpec(
        "int8",
        "W8A8-INT8",
        recipe={
            "SmoothQuantModifier": {"smoothing_strength": 0.8},
            "GPTQModifier": {"scheme": "W8A8", "dampening_frac": 0.1},
        },
        calibration={"dataset": "ultrachat", "num_samples": 512, "max_seq_length": 8192},
    ),
    FormatSpec(
        "w4a16",
        "W4A16-INT",
        recipe={"GPTQModifier": {"scheme": "W4A16", "group_size": 128, "dampening_frac": 0.1}},
        calibration={"dataset": "ultrachat", "num_samples": 512, "max_seq_length": 8192},
    ),
]


def paper_sweep() -> Sweep:
    def llama(size: int, tp: int, pp: int = 1, suffix: str = "") -> ModelSpec:
        return ModelSpec(
            name=f"llama-3.1-{size}b{suffix}",
            source={"kind": "local", "path": f"/models/llama-3.1-{size}b"},
            params_b=float(size),
            tensor_parallel_size=tp,
            pipeline_parallel_size=pp,
            max_model_len=8192,
            quantize_resources={"gpus": {8: 1, 70: 2, 405: 8}[size], "memory_gb": {8: 64, 70: 400, 405: 1600}[size]},
        )

    tasks = [
        TaskSpec(name=n, metric="acc,none", version_hash=n, cost={"samples": s, "prompt_tokens": p, "output_tokens": o})
        for n, s, p, o in PAPER_TASKS
    ]
    m8, m70, m405 = llama(8, 1), llama(70, 4), llama(405, 8, 2)  # 405B BF16: TP8 x PP2 over two nodes
    one_node = {"tensor_parallel_size": 8, "pipeline_parallel_size": 1}  # quantized 405B fits one 8-GPU node
    f405 = [PAPER_FORMATS[0]] + [replace(f, parallel=one_node) for f in PAPER_FORMATS[1:]]
    return _sweep("paper-sim", [m8, m70, m405], {"*": PAPER_FORMATS, m405.name: f405}, tasks, [1234])
