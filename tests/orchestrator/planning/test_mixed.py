"""The mixed-precision integer program and the plan of sweep.sensitivity / sweep.mixed.

`solve` is checked against brute force over every assignment of a small problem (the integer
program must find the true optimum within the budget, never a rounded LP solution); the plan and
its refusals through the real config (conf/sweep/demo_mixed.yaml), without running anything."""

import itertools

import pytest

from orchestrator.config import ConfigError, compose, load_sweep
from orchestrator.planning.mixed import BASELINE_BITS, modules_by_candidate, solve, weight_bits
from orchestrator.planning.plan import expand
from quantgrid.types import StageKind


def _groups(params):
    return [{"name": f"g{i}", "params": p, "modules": [f"g{i}.a", f"g{i}.b"]} for i, p in enumerate(params)]


def _brute(groups, kl, bits, budget):
    total = sum(g["params"] for g in groups)
    best = None
    for choice in itertools.product(list(bits), repeat=len(groups)):
        used = sum(g["params"] * bits[c] for g, c in zip(groups, choice)) / total
        if used > budget + 1e-9:
            continue
        cost = sum(kl.get(c, {}).get(g["name"], 0.0) for g, c in zip(groups, choice))
        if best is None or cost < best[0] - 1e-12:
            best = (cost, choice)
    return best


@pytest.mark.parametrize("budget", [4.25, 5.0, 6.0, 8.0, 11.0])
def test_solve_finds_the_exact_optimum_within_the_budget(budget):
    import numpy as np

    rng = np.random.default_rng(int(budget * 100))
    groups = _groups(rng.integers(1, 20, size=7).tolist())
    bits = {"w4": 4.25, "w8": 8.0, "bf16": BASELINE_BITS}
    kl = {"w4": {g["name"]: float(rng.exponential(0.05)) for g in groups}}
    kl["w8"] = {k: v / 20 for k, v in kl["w4"].items()}
    got = solve(groups, kl, bits, budget)
    cost, choice = _brute(groups, kl, bits, budget)
    assert got["predicted_kl"] == pytest.approx(cost, abs=1e-9)
    assert got["bits"] <= budget + 1e-9
    assert sum(got["groups"].values()) == len(groups)
    # the reported KL is the KL of the reported assignment
    assert got["predicted_kl"] == pytest.approx(
        sum(kl.get(got["assignment"][g["name"]], {}).get(g["name"], 0.0) for g in groups)
    )
    assert modules_by_candidate(groups, got["assignment"], "bf16") == {
        c: [m for g in groups if got["assignment"][g["name"]] == c for m in g["modules"]]
        for c in ("w4", "w8")
        if c in got["assignment"].values()
    }


def test_solve_spends_the_budget_on_the_most_sensitive_bits_per_parameter():
    groups = _groups([10, 10, 10, 10])
    kl = {"w4": {"g0": 0.001, "g1": 0.5, "g2": 0.002, "g3": 0.1}}
    # 4.25 + 0.25 * 11.75 = 7.19 bits: exactly one group of four can stay in BF16
    got = solve(groups, kl, {"w4": 4.25, "bf16": 16.0}, 7.2)
    assert got["assignment"] == {"g0": "w4", "g1": "bf16", "g2": "w4", "g3": "w4"}
    assert got["predicted_kl"] == pytest.approx(0.103)


def test_weight_bits_count_the_scales():
    group = lambda n, g, t="int": {
        "config_groups": {"group_0": {"weights": {"num_bits": n, "type": t, "strategy": "group", "group_size": g}}}
    }
    assert weight_bits("w4a16", group(4, 64)) == 4.25
    assert weight_bits("w4a16", group(4, 128)) == 4.125
    assert weight_bits("nvfp4a16", {"m": {"scheme": "NVFP4A16"}}) == 4.5
    assert weight_bits("int8", {"m": {"scheme": "W8A8"}}) == 8.0
    assert weight_bits("bf16", None) == BASELINE_BITS
    with pytest.raises(ConfigError, match="cannot tell the weight bits of scheme W9"):
        weight_bits("x", {"m": {"scheme": "W9"}})


def test_demo_mixed_plans_sensitivity_then_the_mixes():
    sweep = load_sweep(compose(["sweep=demo_mixed"]))
    assert sweep.sensitivity.formats == ("w4a16_rtn",)
    assert [f for f in sweep.format_names if f.startswith("mixed")] == ["mixed-4.5b", "mixed-5b", "mixed-6b"]
    p = expand(sweep)
    sens = [s for s in p.stages if s.kind is StageKind.SENSITIVITY]
    assert len(sens) == 1 and len(p.sensitivity_cells) == 1 and sens[0].depends_on == [p.stages[0].key]
    quant = {s.format.name: s for s in p.stages if s.kind is StageKind.QUANTIZE}
    for b, name in ((4.5, "mixed-4.5b"), (5.0, "mixed-5b"), (6.0, "mixed-6b")):
        q = quant[name]
        assert q.depends_on == [p.stages[0].key, sens[0].key]  # built base first, then the sensitivity
        m = q.format.mixed
        assert m["budget_bits"] == b and m["bits"] == {"w4a16_rtn": 4.25, "bf16": 16.0}
        assert q.format.recipe == sweep.formats["smollm2-135m"]["w4a16_rtn"].recipe
    assert quant["w4a16_rtn"].depends_on == [p.stages[0].key]
    # the mixes are distinct formats: distinct keys, each cell keyed on its budget
    keys = {quant[n].format.key for n in ("mixed-4.5b", "mixed-5b", "mixed-6b", "w4a16_rtn")}
    assert len(keys) == 4
    # a sensitivity cell's key moves with its settings, not with the budgets
    other = expand(load_sweep(compose(["sweep=demo_mixed", "sweep.mixed.budgets=[5]"])))
    assert other.sensitivity_cells[0].key == p.sensitivity_cells[0].key
    more = expand(load_sweep(compose(["sweep=demo_mixed", "sweep.sensitivity.documents=3"])))
    assert more.sensitivity_cells[0].key != p.sensitivity_cells[0].key


@pytest.mark.parametrize(
    "override, message",
    [
        ("sweep.mixed.budgets=[4]", "4 bits is below the cheapest candidate (w4a16_rtn, 4.25 bits)"),
        ("sweep.mixed.budgets=[16]", "at or above the most precise candidate's 16 bits"),
        ("sweep.mixed.budgets=[5,5.0]", "lists a budget more than once"),
        ("sweep.mixed.candidates=[w4a16_rtn]", "must list at least two formats"),
        ("sweep.mixed.candidates=[int8,bf16]", "int8 is not a format of this sweep"),
        ("+sweep.mixed.solver=x", "sweep.mixed.solver: unknown setting"),
        ("+sweep.sensitivity.layers=1", "sweep.sensitivity.layers: unknown setting"),
        ("sweep.sensitivity.documents=0", "sweep.sensitivity.documents must be an integer in [1, 8]"),
        ("+sweep.sensitivity.formats=[bf16]", "bf16 is not a quantized format"),
    ],
)
def test_bad_mixed_config_is_refused_in_one_line(override, message):
    with pytest.raises(ConfigError) as e:
        load_sweep(compose(["sweep=demo_mixed", override]))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_candidate_with_a_model_wide_transform_is_refused():
    with pytest.raises(ConfigError, match="int8 runs SmoothQuantModifier \\+ GPTQModifier"):
        load_sweep(compose(["sweep=demo_mixed", "sweep.formats=[bf16,int8]", "sweep.mixed.candidates=[int8,bf16]"]))
    with pytest.raises(ConfigError, match="GPTQModifier and QuantizationModifier in one mix"):
        load_sweep(
            compose(
                [
                    "sweep=demo_mixed",
                    "sweep.formats=[bf16,w4a16,w4a16_rtn]",
                    "sweep.mixed.candidates=[w4a16,w4a16_rtn,bf16]",
                ]
            )
        )


def test_a_gigabyte_budget_is_the_linears_bits_with_the_rest_at_16():
    from orchestrator.planning.mixed import bits_for_gb, size_gb

    # 100M Linear weights + 30M other parameters (embeddings) kept at 16 bits = 60 MB
    groups = [{"name": "g0", "params": 60_000_000, "model_params": 130_000_000}, {"name": "g1", "params": 40_000_000}]
    assert bits_for_gb(groups, 0.11) == pytest.approx((0.11e9 * 8 - 30e6 * 16) / 100e6)  # 4.0 bits
    assert size_gb(groups, 4.0) == pytest.approx(0.11)
    assert size_gb(groups, bits_for_gb(groups, 0.2)) == pytest.approx(0.2)


def test_gigabyte_budgets_plan_their_own_formats():
    sweep = load_sweep(compose(["sweep=demo_mixed", "sweep.mixed.budgets=[5]", "+sweep.mixed.budgets_gb=[0.1]"]))
    assert [f for f in sweep.format_names if f.startswith("mixed")] == ["mixed-5b", "mixed-0.1gb"]
    gb = sweep.formats["smollm2-135m"]["mixed-0.1gb"]
    assert gb.mixed["budget_gb"] == 0.1 and "budget_bits" not in gb.mixed and gb.label.startswith("Mixed 0.1 GB")
    quant = {s.format.name: s for s in expand(sweep).stages if s.kind is StageKind.QUANTIZE}
    assert quant["mixed-0.1gb"].depends_on == quant["mixed-5b"].depends_on
    with pytest.raises(ConfigError, match="sweep.mixed.budgets_gb must list checkpoint gigabytes > 0"):
        load_sweep(compose(["sweep=demo_mixed", "+sweep.mixed.budgets_gb=[0]"]))
    with pytest.raises(ConfigError, match="sweep.mixed needs budgets"):
        load_sweep(compose(["sweep=demo_mixed", "sweep.mixed.budgets=[]"]))
