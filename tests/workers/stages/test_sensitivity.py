"""The sensitivity stage's worker side (workers/stages/sensitivity.py) and a mixed format's recipe
(workers/stages/mixed_recipe.py), on the tiny random Llama: groups as vLLM fuses them, each group
quantized with compressed-tensors' own round-to-nearest and restored bit for bit, KLs that order
the formats as their precision does, dynamic activations hooked and unhooked, static ones
refused; and a mix quantized by llmcompressor whose checkpoint quantizes exactly the assigned
modules and lists the rest in `ignore` (what vLLM reads)."""

import json
from pathlib import Path

import pytest
import torch

from quantgrid.failures import StageFailure
from quantgrid.types import FormatSpec
from workers.stages import sensitivity as sv
from workers.stages.mixed_recipe import materialize


def _fmt(name, args, modifier="QuantizationModifier"):
    return FormatSpec(name, name, {"quant_stage": {"quant_modifiers": {modifier: {"ignore": ["lm_head"], **args}}}})


W4 = _fmt(
    "w4",
    {
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128},
            }
        }
    },
)
W8A8 = _fmt("w8a8", {"targets": ["Linear"], "scheme": "W8A8"})


@pytest.fixture(scope="module")
def probe(tiny_llama):
    return sv.SensitivityProbe(tiny_llama.path, {"documents": 2, "max_tokens": 64})


def test_groups_follow_vllm_fusion(probe):
    groups = sv.layer_groups(probe.model, ["lm_head"])
    assert [(g.layer, g.module) for g in groups] == [
        (i, m) for i in (0, 1) for m in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    ]
    assert groups[0].modules == [f"model.layers.0.self_attn.{p}_proj" for p in "qkv"]
    assert groups[2].modules == ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"]
    linears = {n: m for n, m in probe.model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    assert sum(g.params for g in groups) == sum(m.weight.numel() for m in linears.values())


def test_a_group_is_quantized_inside_the_block_and_restored_after(probe):
    scheme, _, _ = sv.target_scheme(W4)
    name = "model.layers.1.mlp.down_proj"
    mod = dict(probe.model.named_modules())[name]
    before = mod.weight.detach().clone()
    with sv.quantized(probe.model, [name], scheme):
        w = mod.weight.detach()
        assert not torch.equal(w, before)
        # 4-bit symmetric groups of 128: at most 16 levels per group, each a multiple of its scale
        for row in w.reshape(-1, 128)[:8]:
            assert len(torch.unique(row)) <= 16
    assert torch.equal(mod.weight, before)


def test_kl_per_group_orders_formats_by_precision(probe):
    m4, r4 = probe.measure(W4)
    m8, r8 = probe.measure(W8A8)
    assert len(r4) == len(r8) == 8
    assert m4["kl_sum,none"] == pytest.approx(sum(r.metrics["kl"] for r in r4))
    assert all(r.metrics["kl"] >= 0 for r in r4 + r8)
    assert m8["kl_sum,none"] < m4["kl_sum,none"]  # 8-bit channel-wise moves the model less than 4-bit
    assert [r.target for r in r4] == [r.target for r in r8]
    # dynamic per-token activations were hooked for the measurement and are gone after it
    assert all(not m._forward_pre_hooks for m in probe.model.modules())


def test_static_activation_scales_are_refused_in_one_line():
    with pytest.raises(StageFailure) as e:
        sv.target_scheme(_fmt("fp8s", {"targets": ["Linear"], "scheme": "FP8"}))
    assert e.value.failure_class == "bad_input" and "static (calibrated) scales" in str(e.value)


def test_a_mix_quantizes_exactly_its_assigned_modules(tiny_llama, tmp_path):
    from workers.stages.quantize import _run_oneshot

    keep = ["model.layers.1.mlp.down_proj", "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"]
    keep.append("model.layers.0.self_attn.v_proj")
    rest = [
        f"model.layers.{i}.{p}"
        for i in (0, 1)
        for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj")
        + ("mlp.up_proj", "mlp.down_proj")
    ]
    rest = [n for n in rest if n not in keep]
    mix = FormatSpec(
        "mixed-6b",
        "mix",
        W4.recipe,
        mixed={"candidates": {"w4": W4.recipe, "bf16": None}, "assignment": {"w4": rest}, "baseline": "bf16"},
    )
    fmt = materialize(mix)
    (mod,) = fmt.recipe["quant_stage"]["quant_modifiers"].values()
    assert mod["config_groups"]["group_0"]["targets"] == rest
    assert mod["ignore"] == ["lm_head"] and "targets" not in mod
    _run_oneshot(Path(tiny_llama.path), fmt, None, tmp_path, "float32", "bfloat16")
    qcfg = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    (group,) = qcfg["config_groups"].values()
    assert sorted(group["targets"]) == sorted(rest)
    assert sorted(qcfg["ignore"]) == sorted(keep + ["lm_head"])  # vLLM serves these dense


def test_a_preset_candidate_becomes_a_full_scheme():
    mix = FormatSpec(
        "mixed-6b",
        "mix",
        W8A8.recipe,
        mixed={
            "candidates": {"w8a8": W8A8.recipe, "w4": W4.recipe, "bf16": None},
            "assignment": {"w8a8": ["a.q_proj"], "w4": ["a.down_proj"]},
        },
    )
    (mod,) = materialize(mix).recipe["quant_stage"]["quant_modifiers"].values()
    g = mod["config_groups"]
    assert g["group_1"]["targets"] == ["a.q_proj"] and g["group_1"]["input_activations"]["dynamic"] is True
    assert g["group_0"]["targets"] == ["a.down_proj"] and g["group_0"]["weights"]["num_bits"] == 4
    assert "scheme" not in mod


def test_a_model_wide_transform_is_left_out_and_said(probe):
    """SmoothQuant rescales norms and the next Linears across the whole layer: it cannot apply to
    one group alone, so the figures are the scheme's and the result says what was left out."""
    sq = FormatSpec(
        "int8",
        "int8",
        {
            "quant_stage": {
                "quant_modifiers": {
                    "SmoothQuantModifier": {"smoothing_strength": 0.8},
                    "GPTQModifier": {"targets": ["Linear"], "scheme": "W8A8", "ignore": ["lm_head"]},
                }
            }
        },
    )
    m_sq, _ = probe.measure(sq)
    assert probe.skipped_modifiers == ["SmoothQuantModifier"]
    m_rtn, _ = probe.measure(W8A8)
    assert probe.skipped_modifiers == [] and m_sq == m_rtn
