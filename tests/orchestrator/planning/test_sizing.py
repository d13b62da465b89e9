"""Sizing a CPU sweep to its budget from a measured throughput probe (orchestrator/planning/sizing.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import sweep as config_sweep
from orchestrator.planning import sizing
from orchestrator.config import ConfigError, compose, load_sweep
from orchestrator.planning.plan import expand
from quantgrid.host import Host

ROOT = Path(__file__).resolve().parents[3]


def _demo(monkeypatch, gflops: float, *overrides: str, isa: str | None = None):
    """The demo planned on a pinned probe (and, with `isa`, a pinned CPU class): what the budget
    chooses depends on both, and the test must not depend on the machine it runs on."""
    monkeypatch.setattr(sizing, "probe", lambda dtype: {"dtype": dtype, "gflops": gflops, "host": "test"})
    if isa:
        monkeypatch.setattr(config_sweep, "probe_host", lambda: Host(device="cpu", isa=isa, cpu_model="test cpu"))
    return load_sweep(compose(["sweep=demo", *overrides]))


# Slow hosts of both kinds: an AVX2 EPYC's float32 probe (163 GFLOP/s, fastest rep, bench demo-cold
# 2026-12-06) and an AVX-512-BF16 host whose bf16 probe is a third of this repo's measured 645
# GFLOP/s (e.g. under load).
@pytest.mark.parametrize("isa,gflops", [("avx2", 163.0), ("avx512_bf16", 215.0)])
def test_a_fast_host_keeps_the_full_demo_and_a_slow_one_scales_every_task_alike(monkeypatch, isa, gflops):
    fast = _demo(monkeypatch, 1e5, isa=isa)
    assert fast.sizing["factor"] == 1.0 and fast.sizing["quantize"]["factor"] == 1.0
    full = {t.name: t.subset for t in fast.tasks}
    slow = _demo(monkeypatch, gflops, isa=isa)
    s = slow.sizing
    assert s["factor"] < 1 and s["estimate_s"] <= s["budget_s"] < s["estimate_full_s"]
    assert s["factor"] in sizing.LADDER and s["quantize"]["factor"] in sizing.LADDER
    for t in slow.tasks:  # smaller, never below the floor, the task's own seed and grouping kept
        chosen, was = s["tasks"][t.name]["chosen"], s["tasks"][t.name]["full"]
        assert min(8, was) <= chosen < was
        if full[t.name] and "per_group" in full[t.name]:
            assert t.subset["per_group"] == full[t.name]["per_group"] and t.subset["max_groups"] == chosen
    # the same documents for every format: one task spec (one key) per task across formats
    plan = expand(slow)
    keys = {}
    for c in plan.cells:
        keys.setdefault(c.task.name, set()).add(c.task.key)
    assert all(len(v) == 1 for v in keys.values())
    for name, c in s["calibration"].items():  # calibration sets scaled (where they must be), never below 16
        fmt = slow.formats["smollm2-135m"][name.split("/")[1]]
        assert fmt.calibration["num_samples"] == c["chosen"] and 16 <= c["chosen"] <= c["full"]
        assert (c["chosen"] < c["full"]) == (s["quantize"]["factor"] < 1)
    assert "subsets x" in s["line"]
    assert ("calibration samples x" in s["line"]) == (s["quantize"]["factor"] < 1)


def test_quantization_is_sized_on_a_slow_host(monkeypatch):
    s = _demo(monkeypatch, 95.0, isa="avx2").sizing
    q = s["quantize"]
    assert q["factor"] < 1 and q["estimate_s"] <= q["budget_s"] < q["estimate_full_s"]
    assert all(16 <= c["chosen"] < c["full"] for c in s["calibration"].values())
    assert "calibration samples x" in s["line"]


def test_a_budget_no_ladder_step_can_meet_plans_the_smallest_step_and_says_so(monkeypatch):
    s = _demo(monkeypatch, 20.0, isa="avx512_bf16").sizing
    assert s["factor"] == sizing.LADDER[-1] and s["estimate_s"] > s["budget_s"]
    assert f"estimated {s['estimate_s']:.0f} s (over budget even at the smallest step" in s["line"]


def test_the_same_probe_plans_the_same_cells(monkeypatch):
    a = [c.key for c in expand(_demo(monkeypatch, 97.0, isa="avx2")).cells]
    b = [c.key for c in expand(_demo(monkeypatch, 99.0, isa="avx2")).cells]  # probe noise within a ladder step
    assert a == b


@pytest.mark.parametrize(
    "override,needle",
    [
        ("+sweep.budget.evaluate_sec=1", "unknown key(s) evaluate_sec"),
        ("sweep.budget.evaluate_s=-5", "evaluate_s must be a positive number"),
        ("sweep.budget=7", "sweep.budget must be a mapping"),
    ],
)
def test_bad_budget_is_one_line(monkeypatch, override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        _demo(monkeypatch, 100.0, override)


def test_plan_prints_and_records_what_was_chosen_on_this_host():
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "plan", "sweep=demo", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    s = out["sizing"]
    assert s["probe"]["gflops"] > 0 and s["probe"]["dtype"] == out["execution"]["smollm2-135m"]["bf16"]["dtype"]
    assert s["estimate_s"] <= s["budget_s"] or s["factor"] == sizing.LADDER[-1]
    n = {c["task"] for c in out["cells"]}
    assert n == set(s["tasks"])


@pytest.mark.parametrize("isa", ["amx", "avx2"])
def test_a_format_whose_kernel_is_measured_hopeless_here_is_left_out_and_said(monkeypatch, isa):
    """vLLM-CPU runs W8A8-FP8 through torch._scaled_mm; on an AMX Xeon oneDNN runs that with its
    reference implementation (0.05-0.08 GFLOP/s measured, vs ~2,000 dense): the FP8 cells alone
    would take hours at the smallest step, so a budgeted sweep leaves the format out and says so.
    A kernel probe within two orders of magnitude of the dense GEMM changes nothing."""
    dense = 1990.0 if isa == "amx" else 163.0
    probes = {"fp8_scaled_mm": 0.0538}

    def fake(dtype):
        return {"dtype": dtype, "gflops": probes.get(dtype, dense), "host": "test"}

    monkeypatch.setattr(sizing, "probe", fake)
    monkeypatch.setattr(config_sweep, "probe_host", lambda: Host(device="cpu", isa=isa, cpu_model="test cpu"))
    sweep = load_sweep(compose(["sweep=demo"]))
    s = sweep.sizing
    assert set(s["dropped"]) == {"fp8"} and "fp8" not in sweep.format_names
    assert all("fp8" not in fm for fm in sweep.formats.values()) and all(
        "fp8" not in e for e in sweep.execution.values()
    )
    assert s["kernels"]["fp8"]["speed"] == pytest.approx(0.0538 / dense)
    assert "fp8 left out: its evaluation alone is estimated" in s["line"] and "sweep.budget=null runs it" in s["line"]
    assert "fp8_scaled_mm measured 0.0538 GFLOP/s" in s["line"]
    plan = expand(sweep)
    assert {c.format.name for c in plan.cells} == {"bf16", "bf16_rerun", "int8", "w4a16"}
    assert all(c.cell.format.name != "fp8" for c in plan.comparisons)
    # without a budget it is planned as asked
    assert "fp8" in load_sweep(compose(["sweep=demo", "sweep.budget=null"])).format_names
    # a slow but sane kernel (the EPYC's FP8 ran 0.35x end to end) is not capped by the probe
    probes["fp8_scaled_mm"] = dense / 20
    kept = load_sweep(compose(["sweep=demo"]))
    assert "fp8" in kept.format_names and not kept.sizing["dropped"]
    table = sizing.host_cost(dense, {}, isa != "avx2").cfg["format_speed"]["cpu"].get("fp8", 1.0)
    assert kept.sizing["kernels"]["fp8"]["speed"] == table == (0.35 if isa == "avx2" else table)
