"""Sweep expansion: axes -> cells and stages; cell keys change exactly with their inputs.

The demo sizes its subsets to `sweep.budget` from this host's measured throughput, so what it plans
differs by host (tests/orchestrator/test_sizing.py covers that). Expansion itself is tested here on
a host that holds the whole demo in budget: the probe is pinned, never read from this machine.
"""

import pytest

from orchestrator.planning import sizing
from orchestrator.config import ConfigError, compose, load_sweep
from orchestrator.planning.plan import expand
from quantgrid.settings import Resources
from quantgrid.types import StageKind


@pytest.fixture(autouse=True)
def fast_host(monkeypatch):
    monkeypatch.setattr(sizing, "probe", lambda dtype: {"dtype": dtype, "gflops": 1e5, "host": "test"})


def plan(*overrides):
    return expand(load_sweep(compose(["sweep=demo", *overrides])))


def test_demo_grid_shape():
    p = plan()
    # 4 formats + the baseline's noise-floor rerun, 4 tasks; the rerun has no quantize stage of its own
    assert p.counts() == {
        "cells": 20,
        "samples": 5 * (57 + 20 + 50 + 50),
        "stages": 14,
        "model_builds": 1,
        "quantize_jobs": 3,
        "engine_loads": 5,
        "comparisons": 4,
        "perf_cells": 0,
        "server_starts": 0,
        "sensitivity_cells": 0,
    }
    # One engine group per (model, format) serving every task.
    assert sorted(s.format.name for s in p.evaluate_stages) == ["bf16", "bf16_rerun", "fp8", "int8", "w4a16"]
    for s in p.evaluate_stages:
        assert [c.task.name for c in s.cells] == ["mmlu_local", "humaneval_local", "ppl_local", "nexttoken_local"]


def test_cli_overrides_axes_and_baseline_is_added():
    p = plan("sweep.formats=[w4a16]", "sweep.tasks=[ppl_local]", "sweep.seeds=[1,2]")
    assert sorted({c.format.name for c in p.cells}) == ["bf16", "bf16_rerun", "w4a16"]  # + the demo's noise floor
    assert len(p.cells) == 6 and len(p.evaluate_stages) == 6  # seed is fixed per engine: splits groups


def test_keys_are_stable_and_change_only_where_inputs_change():
    a = {(c.format.name, c.task.name): c.key for c in plan().cells}
    assert a == {(c.format.name, c.task.name): c.key for c in plan().cells}
    b = {(c.format.name, c.task.name): c.key for c in plan("sweep.task_settings.mmlu_local.num_fewshot=0").cells}
    changed = {k for k in a if a[k] != b[k]}
    assert changed == {(f, "mmlu_local") for f in ("bf16", "bf16_rerun", "fp8", "int8", "w4a16")}
    c = {(c.format.name, c.task.name): c.key for c in plan("sweep.calibration.num_samples=32").cells}
    changed = {k for k in a if a[k] != c[k]}
    tasks = ("mmlu_local", "humaneval_local", "ppl_local", "nexttoken_local")
    assert changed == {(f, t) for f in ("int8", "w4a16") for t in tasks}


def test_model_override_feeds_recipe():
    p = plan()
    w4 = next(s for s in p.stages if s.kind is StageKind.QUANTIZE and s.format.name == "w4a16")
    group = w4.format.recipe["quant_stage"]["quant_modifiers"]["GPTQModifier"]["config_groups"]["group_0"]
    assert group["weights"]["group_size"] == 64  # SmolLM2: hidden 576 = 9 x 64


def test_similarity_stages_compare_each_format_with_the_baseline_after_both_groups():
    p = plan("sweep.seeds=[1,2]")
    evals = {(s.format.name, s.cells[0].seed): s for s in p.evaluate_stages}
    sims = [s for s in p.stages if s.kind is StageKind.SIMILARITY]
    assert sorted((s.format.name, s.cells[0].seed) for s in sims) == [
        (f, seed) for f in ("bf16_rerun", "fp8", "int8", "w4a16") for seed in (1, 2)
    ]
    for s in sims:
        seed = s.cells[0].seed
        assert s.depends_on == [evals[("bf16", seed)].key, evals[(s.format.name, seed)].key]
        (comp,) = s.cells
        assert comp.task.name == "humaneval_local.similarity"
        assert comp.baseline.format.name == "bf16" and comp.cell.format.name == s.format.name
        assert (
            comp.baseline.task.name == comp.cell.task.name == "humaneval_local"
            and comp.baseline.seed == comp.cell.seed == seed
        )
    assert len(p.comparisons) == 8 and len({c.key for c in p.comparisons}) == 8
    # A comparison's identity follows both cells' and the encoder's.
    a = {c.format.name: c.key for c in plan().comparisons}
    assert a == {c.format.name: c.key for c in plan().comparisons}
    b = {
        c.format.name: c.key for c in plan("sweep.task_settings.humaneval_local.gen_kwargs.max_gen_toks=64").comparisons
    }
    assert all(a[f] != b[f] for f in a)
    assert not plan("sweep.tasks=[mmlu_local,ppl_local]").comparisons  # narrowed away: nothing to compare
    assert not plan("~sweep.similarity").comparisons


def test_a_sweeps_resources_are_pinned_over_the_roots_and_the_command_line_wins():
    """conf/sweep/paper.yaml's resources (hours-long 405B stages, the quantize environment) were
    once dropped without a word: they apply over conf/config.yaml's, under `resources.*` given on
    the command line."""
    paper = load_sweep(compose(["sweep=paper"])).resources
    assert (paper.stage_timeout_s, paper.start_timeout_s) == (21600, 3600)
    assert paper.runtime_env == {"quantize": {"py_executable": "/opt/quantize/bin/python"}}
    assert paper == Resources(
        stage_timeout_s=21600, start_timeout_s=3600, runtime_env=paper.runtime_env
    )  # the rest: defaults
    cli = load_sweep(compose(["sweep=paper", "resources.stage_timeout_s=60", "+resources.runtime_env={}"])).resources
    assert cli.stage_timeout_s == 60 and cli.runtime_env == {} and cli.start_timeout_s == 3600
    assert load_sweep(compose(["sweep=tiny"])).resources == Resources()  # conf/config.yaml sets no default of its own


def test_a_model_carries_engine_defaults_a_sweep_and_the_command_line_override(tmp_path):
    """Gemma needs its BOS token under the engine default add_bos_token: false (the authors'
    lm-eval setting for Llama): the model's own `engine:` applies to its cells only, and loses to
    the sweep's `engine:` and to `engine.KEY=...` on the command line."""
    from orchestrator import config
    from quantgrid.runtime import CONF_DIR

    conf = config.SearchPath().with_extra([tmp_path])  # tmp_path layered over conf/, as `--conf-dir` does
    model = (CONF_DIR / "model" / "tiny-llama.yaml").read_text().replace("name: tiny-llama", "name: tiny-bos")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tiny-bos.yaml").write_text(model + "engine: {add_bos_token: true}\n")

    def bos(*overrides):
        over = ["sweep=tiny", "sweep.models=[tiny-llama,tiny-bos]", "sweep.formats=[bf16]", *overrides]
        plan = expand(load_sweep(compose(over, conf), conf))
        return {c.model.name: c.engine.add_bos_token for c in plan.cells}

    assert bos() == {"tiny-llama": False, "tiny-bos": True}
    assert bos("+sweep.engine.add_bos_token=false") == {"tiny-llama": False, "tiny-bos": False}
    assert bos("engine.add_bos_token=false") == {"tiny-llama": False, "tiny-bos": False}
    assert bos("engine.add_bos_token=true") == {"tiny-llama": True, "tiny-bos": True}
    (tmp_path / "model" / "tiny-bos.yaml").write_text(model + "engine: {seed: 7}\n")
    with pytest.raises(config.ConfigError, match="engine.seed is not an engine setting a model may change"):
        bos()


def test_the_noise_floor_is_the_baseline_again_in_other_batches():
    """sweep.noise_floor: one more engine group per (model, seed) on the baseline's own
    checkpoint (no quantize stage of its own), the same tasks, another batch size, no perf."""
    plan = expand(load_sweep(compose(["sweep=tiny", "+sweep.noise_floor={batch_size: 2}"])))
    assert plan.sweep.format_names[-1] == "bf16_rerun"
    base = [c for c in plan.cells if c.format.name == "bf16"]
    rerun = [c for c in plan.cells if c.format.name == "bf16_rerun"]
    assert [c.task.name for c in rerun] == [c.task.name for c in base] and rerun
    assert {c.engine.batch_size for c in rerun} == {2} and {c.engine.batch_size for c in base} == {"auto"}
    assert not {c.key for c in rerun} & {c.key for c in base}
    quant = [s for s in plan.stages if s.kind.value == "quantize"]
    assert [s.format.name for s in quant] == [f for f in plan.sweep.format_names if f != "bf16_rerun"]
    (ev,) = [s for s in plan.stages if s.kind.value == "evaluate" and s.format.name == "bf16_rerun"]
    assert ev.depends_on == [next(s.key for s in quant if s.format.name == "bf16")]
    same = expand(load_sweep(compose(["sweep=tiny", "+sweep.noise_floor=true", "engine.batch_size=8"])))
    assert {c.engine.batch_size for c in same.cells if c.format.name == "bf16_rerun"} == {3}  # never the baseline's own
    assert any(c.cell.format.name == "bf16_rerun" for c in plan.comparisons)  # an output-similarity floor too


def test_noise_floor_settings_are_checked():
    with pytest.raises(ConfigError, match="sweep.noise_floor must be true, false or"):
        load_sweep(compose(["sweep=tiny", "+sweep.noise_floor={batchsize: 2}"]))
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        load_sweep(compose(["sweep=tiny", "+sweep.noise_floor={batch_size: 0}"]))
