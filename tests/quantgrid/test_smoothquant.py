"""SmoothQuant where it is not an equivalent transform (quantgrid/smoothquant.py): on a tiny random
Gemma-3 built from a transformers config, llmcompressor 0.14's SmoothQuantModifier alone (no
quantization) changes the model's outputs, while on a tiny Llama it does not; the plan refuses an
INT8 recipe with SmoothQuant on Gemma-3 in one line, the quantize stage too, and plans one without."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quantgrid import smoothquant

ROOT = Path(__file__).resolve().parents[2]
SMOOTH_ONLY = {"SmoothQuantModifier": {"smoothing_strength": 0.8}}


def _tiny(arch: str, tokenizer_dir: Path, out: Path):
    """A 2-layer random model of `arch` with the tiny Llama's tokenizer, every norm weight random
    (Gemma initialises them to 0, where (1 + w) / s and 1 + w / s happen to agree)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    dims = dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        vocab_size=1024,
        max_position_embeddings=512,
    )
    if arch == "Gemma3ForCausalLM":
        model = Gemma3ForCausalLM(Gemma3TextConfig(**dims, sliding_window=64, layer_types=["full_attention"] * 2))
    else:
        model = LlamaForCausalLM(LlamaConfig(**dims))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand_like(p) * 2 - 0.5)
    model.save_pretrained(out)
    for f in tokenizer_dir.iterdir():
        if "token" in f.name or f.name == "special_tokens_map.json":
            shutil.copy(f, out / f.name)
    return model


def _smoothed_drift(path: Path) -> float:
    """Max |logit change| after SmoothQuantModifier alone, on calibration text, float32."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = torch.randint(0, 1024, (8, 32), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = model(ids).logits
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    recipe = SmoothQuantModifier(**SMOOTH_ONLY["SmoothQuantModifier"])
    oneshot(model=model, recipe=recipe, dataset=data, num_calibration_samples=8, max_seq_length=32)
    with torch.inference_mode():
        after = model(ids).logits
    return float((after - before).abs().max() / before.abs().max())


def test_smoothquant_changes_a_gemma3_but_not_a_llama(tmp_path, tiny_llama):
    drift = {}
    for arch in ("LlamaForCausalLM", "Gemma3ForCausalLM"):
        out = tmp_path / arch
        _tiny(arch, Path(tiny_llama.path), out)
        drift[arch] = _smoothed_drift(out)
    assert drift["LlamaForCausalLM"] < 1e-4, drift  # an equivalent transform: float rounding only
    assert drift["Gemma3ForCausalLM"] > 1e-2, drift  # the model itself changed, before any quantization


def test_refusal_names_the_architecture_and_why():
    int8 = {"SmoothQuantModifier": {"smoothing_strength": 0.8}, "GPTQModifier": {"scheme": "W8A8"}}
    why = smoothquant.refusal("Gemma3ForCausalLM", int8, "int8", "tiny-gemma3")
    assert "format int8 of tiny-gemma3: SmoothQuant is not an equivalent transform on Gemma3ForCausalLM" in why
    assert "pre_feedforward_layernorm" in why and "(1 + weight)" in why and "\n" not in why
    assert smoothquant.refusal("Gemma3ForCausalLM", {"GPTQModifier": {"scheme": "W8A8"}}, "w8a8", "m") == ""
    assert smoothquant.refusal("LlamaForCausalLM", int8, "int8", "m") == ""
    assert "(1 + weight)" in smoothquant.refusal("GemmaForCausalLM", int8, "int8", "m")


def test_the_plan_and_the_quantize_stage_refuse_it_in_one_line(tmp_path, tiny_llama):
    ckpt = tmp_path / "tiny-gemma3"
    _tiny("Gemma3ForCausalLM", Path(tiny_llama.path), ckpt)
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "tiny-gemma3.yaml").write_text(
        f"name: tiny-gemma3\nsource: {{kind: local, path: {ckpt}}}\ndtype: bfloat16\nmax_model_len: 512\n"
    )
    args = [sys.executable, "-m", "orchestrator.cli", "plan", "--conf-dir", str(tmp_path / "conf"), "sweep=tiny"]
    args += ["sweep.models=[tiny-gemma3]", "sweep.tasks=[ppl_local]", "sweep.similarity.tasks=[]"]
    bad = subprocess.run([*args, "sweep.formats=[int8]"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    (line,) = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert line.startswith("quantgrid: error: format int8 of tiny-gemma3: SmoothQuant is not an equivalent")
    ok = subprocess.run([*args, "sweep.formats=[fp8]"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    # the quantize stage checks the loaded model's class whatever the plan knew
    from orchestrator.config import compose, load_sweep
    from quantgrid.failures import StageFailure
    from workers.stages.quantize import _run_oneshot

    fmt = load_sweep(compose(["sweep=tiny", "sweep.formats=[int8]"])).formats["tiny-llama"]["int8"]
    with pytest.raises(StageFailure) as e:
        _run_oneshot(ckpt, fmt, None, tmp_path / "out", "float32", "bfloat16")
    assert e.value.failure_class == "bad_input" and "Gemma3ForCausalLM" in str(e.value)
