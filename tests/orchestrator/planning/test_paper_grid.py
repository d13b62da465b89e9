"""The paper's grid as config: `quantgrid plan sweep=paper --json` on a machine without the
weights, the datasets or a GPU, and every task setting with its source."""

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
V1 = ["arc_challenge_llama", "gsm8k_llama", "hellaswag", "mmlu_llama", "truthfulqa_mc2", "winogrande"]
OTHER = ["humaneval_sampled", "humaneval_plus_sampled", "arena_hard"]
V2 = [
    "leaderboard_mmlu_pro",
    "leaderboard_ifeval",
    "leaderboard_bbh",
    "leaderboard_math_hard",
    "leaderboard_gpqa",
    "leaderboard_musr",
]


@pytest.fixture(scope="module")
def paper():
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "plan", "sweep=paper", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_grid_counts_and_engine_loads(paper):
    c = paper["counts"]
    assert c["cells"] == 3 * 4 * 15 and c["quantize_jobs"] == 9 and c["model_builds"] == 3
    # one engine per (model, format), plus one for the tasks the authors ran with add_bos_token=True
    assert c["engine_loads"] == 24 and paper["engine_splits"] == {
        "add_bos_token=True": ["hellaswag", "truthfulqa_mc2", "winogrande"]
    }
    assert c["perf_cells"] == 12 * 7 and c["server_starts"] == 12 and c["comparisons"] == 3 * 3 * 3
    assert c["samples"] > 500_000  # the paper's "over 500,000 sample evaluations"
    assert Counter(cell["task"] for cell in paper["cells"]) == {t: 12 for t in [*V1, *V2, *OTHER]}
    # EvalPlus-style sampling: 50 generations per HumanEval(+) problem are counted in the tokens
    by_task = {t["task"]: t for t in paper["estimate"]["by_task"]}
    assert set(by_task) == {*V1, *V2, *OTHER} and all(
        t["cells"] == 12 and t["prompt_tokens"] > 0 for t in by_task.values()
    )
    assert by_task["humaneval_plus_sampled"]["output_tokens"] == 12 * 164 * 100 * 50


def test_parallelism_per_model_and_format(paper):
    stages = [s for s in paper["stages"] if s["kind"] == "evaluate"]
    assert len(stages) == 24
    est = {(r["model"], r["format"]): r for r in paper["estimate"]["by_model_format"]}
    assert len(est) == 12 and all(r["accelerator"] == "h100-80gb" and r["device_hours"] > 0 for r in est.values())
    assert all(r["prompt_tokens"] > 0 for r in est.values())
    # 405B BF16 on 2 nodes (TP8 x PP2) costs more device-hours per token than its one-node FP8
    assert (
        est[("llama-3.1-405b-instruct", "bf16")]["device_hours"]
        > est[("llama-3.1-405b-instruct", "paper_fp8")]["device_hours"]
    )


def test_plan_with_cluster_simulation():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "plan",
            "sweep=paper",
            "--json",
            "--nodes",
            "4",
            "--gpus-per-node",
            "8",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    sim = json.loads(proc.stdout)["simulation"]
    assert sim["makespan_s"] >= sim["lower_bound_s"] > 0


def test_every_paper_task_setting_names_its_source():
    for name in [*V1, *V2, *OTHER]:
        text = (ROOT / "conf" / "task" / f"{name}.yaml").read_text()
        assert re.search(r"^# Source: ", text, re.M), f"{name}: no source line"
        assert "registry: lm_eval" in text or name in OTHER
    for name in ("paper_fp8", "paper_int8", "paper_w4a16"):
        assert re.search(r"^# Source: ", (ROOT / "conf" / "format" / f"{name}.yaml").read_text(), re.M), name


def test_gated_model_download_fails_in_one_line(tmp_path, monkeypatch):
    from quantgrid.checkpoint import CheckpointError
    from workers.hub import download

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: fails at once, offline or not
    with pytest.raises(CheckpointError, match=r"cannot download model meta-llama/Llama-3.1-8B-Instruct@main: "):
        download("meta-llama/Llama-3.1-8B-Instruct", "main", tmp_path / "out", timeout_s=120)


def test_run_of_a_gated_model_without_token_is_one_line_before_anything(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "sweep=paper", f"run_dir={tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert (
        "llama-3.1-8b-instruct (meta-llama/Llama-3.1-8B-Instruct) is gated" in proc.stderr
        and "set HF_TOKEN" in proc.stderr
    )
    assert not any(tmp_path.iterdir())


def test_preflight_gpu_memory_and_tracking_server(tmp_path):
    from orchestrator.execution import preflight
    from orchestrator.config import ConfigError, compose, load_sweep
    from orchestrator.planning.plan import expand

    preflight.check_memory(expand(load_sweep(compose(["sweep=paper"]))))  # the paper's grid fits as configured
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    text = (
        (ROOT / "conf/model/llama-3.1-70b-instruct.yaml")
        .read_text()
        .replace("tensor_parallel_size: 4", "tensor_parallel_size: 1")
    )
    (conf / "llama-3.1-70b-instruct.yaml").write_text(text)
    env = {k: v for k, v in __import__("os").environ.items()} | {"HF_TOKEN": "unused"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "run",
            "--conf-dir",
            str(tmp_path / "conf"),
            "sweep=paper",
            "sweep.models=[llama-3.1-70b-instruct]",
            f"run_dir={tmp_path / 'runs'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "llama-3.1-70b-instruct/bf16: 141 GB of weights do not fit 1 x 80 GB GPUs" in proc.stderr
    with pytest.raises(ConfigError, match=r"MLflow tracking server http://127.0.0.1:9 unreachable"):
        preflight.check_tracking("http://127.0.0.1:9")


def test_published_checkpoints_as_formats_are_staged_not_quantized():
    from orchestrator.config import compose, load_sweep
    from orchestrator.planning.placement import NodeShape
    from orchestrator.planning.plan import expand
    from orchestrator.planning.policy import PlacementPolicy
    from quantgrid.types import StageKind

    plan = expand(load_sweep(compose(["sweep=paper", "sweep.formats=[bf16,nm_fp8,nm_int8,nm_w4a16]"])))
    quant = [s for s in plan.stages if s.kind is StageKind.QUANTIZE and not s.format.is_baseline]
    assert len(quant) == 9 and all(s.format.published["repo"].startswith("neuralmagic/Meta-Llama-3.1-") for s in quant)
    assert {s.format.published["repo"] for s in quant if s.model.name == "llama-3.1-8b-instruct"} == {
        "neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8-dynamic",
        "neuralmagic/Meta-Llama-3.1-8B-Instruct-quantized.w8a8",
        "neuralmagic/Meta-Llama-3.1-8B-Instruct-quantized.w4a16",
    }
    jobs = PlacementPolicy([NodeShape(cpus=96, gpus=8)] * 4, plan.sweep.resources).jobs(plan.stages)
    staged = [j for j in jobs if j.kind is StageKind.QUANTIZE and j.stage.format.published]
    assert len(staged) == 9 and all(j.demand.gpus == 0 for j in staged)  # a download needs no GPU
    # a published format and a self-quantized one are different cells (different weights)
    keys = {c.format.name: c.format.key for c in plan.cells if c.model.name == "llama-3.1-8b-instruct"}
    self_quant = expand(load_sweep(compose(["sweep=paper", "sweep.formats=[paper_w4a16]"])))
    assert keys["nm_w4a16"] not in {c.format.key for c in self_quant.cells}


def test_arena_hard_is_an_external_scorer_with_its_judge_in_config():
    from orchestrator.config import compose, load_sweep

    sweep = load_sweep(compose(["sweep=paper"]))
    (arena,) = [t for t in sweep.tasks if t.name == "arena_hard"]
    assert arena.scorer_kind == "arena_hard" and arena.metric == "score,none"
    judge = arena.scorer["judge"]
    assert judge["api_key_env"] == "OPENAI_API_KEY" and "api_key" not in judge
    assert judge["prompt_file"].startswith("https://raw.githubusercontent.com/lmarena/arena-hard-auto/")
    assert arena.scorer["baseline"]["name"] == "gpt-4-0314"
    assert {t.name for t in sweep.tasks if t.scorer_kind == "lm_eval"} == {
        *V1,
        *V2,
        "humaneval_sampled",
        "humaneval_plus_sampled",
    }


def test_preflight_disk_for_checkpoints(tmp_path, monkeypatch):
    from orchestrator.execution import preflight
    from orchestrator.config import ConfigError, compose, load_sweep
    from orchestrator.planning.plan import expand

    monkeypatch.setenv("QUANTGRID_CACHE", str(tmp_path / "cache"))
    plan = expand(load_sweep(compose(["sweep=paper", "sweep.models=[llama-3.1-8b-instruct]"])))
    # 8B: base 16 GB (BF16) + FP8 8 + INT8 8 + W4A16 4 = 36 GB, 10% margin
    with pytest.raises(ConfigError, match=r"writes ~36 GB of checkpoints \(4: llama-3.1-8b-instruct, .*has 30 GB free"):
        preflight.check_disk(plan, free_gb=30)
    preflight.check_disk(plan, free_gb=40)
    for d in ("models/llama-3.1-8b-instruct-abc", "checkpoints/llama-3.1-8b-instruct-paper_fp8-abc"):
        (tmp_path / "cache" / d).mkdir(parents=True)  # already built: not counted again
    preflight.check_disk(plan, free_gb=14)
    with pytest.raises(ConfigError, match=r"~12 GB of checkpoints \(2: "):
        preflight.check_disk(plan, free_gb=13)


@pytest.mark.parametrize(
    "sweep, acc, models, perf_cells",
    [("paper_perf_a100", "a100-80gb", 3, 3 * 3 * 7), ("paper_perf_a6000", "a6000-48gb", 2, 2 * 3 * 7)],
)
def test_paper_perf_on_the_other_gpus_it_measured(sweep, acc, models, perf_cells):
    """The paper measured serving on A6000, A100 and H100: one perf-only sweep per GPU type, the
    paper's checkpoints, no FP8 on Ampere, every engine fitting that GPU's memory."""
    from orchestrator.execution import preflight
    from orchestrator.config import ConfigError, compose, load_sweep
    from orchestrator.planning.plan import expand

    plan = expand(load_sweep(compose([f"sweep={sweep}"])))
    assert not plan.cells and len(plan.perf_cells) == perf_cells and len(plan.sweep.models) == models
    assert {c.engine.accelerator for c in plan.perf_cells} == {acc} and plan.sweep.perf.accuracy_from == "paper"
    assert {c.format.name for c in plan.perf_cells} == {"bf16", "paper_int8", "paper_w4a16"}
    preflight.check_memory(plan)
    paper = expand(load_sweep(compose(["sweep=paper"])))  # same recipes: the paper's checkpoints are reused
    assert {f.key for m in plan.sweep.formats.values() for f in m.values()} <= {
        f.key for m in paper.sweep.formats.values() for f in m.values()
    }
    if acc == "a6000-48gb":  # why 405B is not in it
        big = expand(load_sweep(compose([f"sweep={sweep}", "sweep.models=[llama-3.1-405b-instruct]"])))
        with pytest.raises(ConfigError, match=r"405b-instruct/bf16: 812 GB of weights do not fit 16 x 48 GB GPUs"):
            preflight.check_memory(big)
