"""Emulated execution is honest: the same quantized weights, and the scores the native kernel gives.

Runs on whatever CPU the machine has and asserts what that host gets (never skipped): on a host
whose vLLM kernel library has W4A16 (AVX-512), native and emulated W4A16 are both run and must
agree; on an AVX2 host native W4A16 must fail exactly as the capability table says (no
cpu_gemm_wna16), and emulated scores are checked against transformers' own load of the quantized
checkpoint (compressed-tensors decompression inside transformers: an independent path).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantgrid import capability
from quantgrid.host import probe
from quantgrid.runtime import apply_worker_env

ROOT = Path(__file__).resolve().parents[3]
# Summed loglikelihood of a ~100-400 token document, emulated vs native, both in bf16: the
# dequantized weight is int4 x scale rounded to bf16 in both, but the GEMMs sum in other orders.
# Measured on an AVX-512-BF16 EPYC (2026-12-04, tiny Llama): 4.4e-6; the bound leaves ~200x for
# other AVX-512 kernels' summation orders (an AVX2 host has no native W4A16 to compare with).
NATIVE_REL_TOL = 1e-3
# float32 emulated engine vs transformers on the same checkpoint: different kernels sum in
# different orders (tests/workers/test_backend_agreement.py measures ~1e-3 nats per prompt).
HF_ABS_TOL = 0.05


@pytest.fixture(scope="module")
def tiny_w4a16(tiny_llama):
    """tiny-llama quantized to W4A16 as the tiny sweep does it on this host (calibration dtype too)."""
    from orchestrator.config import calibration_file, compose, load_sweep
    from workers.stages.quantize import quantize

    sweep = load_sweep(compose(["sweep=tiny", "sweep.formats=[w4a16]"]))
    model, fmt = sweep.models[0], sweep.formats["tiny-llama"]["w4a16"]
    ex = sweep.execution["tiny-llama"]["w4a16"]
    return quantize(tiny_llama, model, fmt, calibration_file(fmt.calibration), calibration_dtype=ex.calibration_dtype)


def _tensors(path: str) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out |= load_file(f)
    return out


def test_emulated_checkpoint_holds_exactly_int4_times_scale(tiny_w4a16, tmp_path):
    """Unpacked here by hand (8 nibbles per int32, offset 8: compressed-tensors pack_quantized),
    independently of the dequantizer the emulation uses."""
    import torch

    from workers.stages.execution import emulated_checkpoint

    dense = _tensors(emulated_checkpoint(tiny_w4a16, "float32", root=tmp_path).path)
    q = _tensors(tiny_w4a16.path)
    packed = [k for k in q if k.endswith(".weight_packed")]
    assert len(packed) == 14  # 2 layers x (q, k, v, o, gate, up, down); lm_head kept
    for k in packed:
        mod = k[: -len(".weight_packed")]
        p, scale = q[k], q[f"{mod}.weight_scale"]
        nibbles = torch.stack([(p >> (4 * i)) & 0xF for i in range(8)], dim=-1).reshape(p.shape[0], -1)
        ints = nibbles.to(torch.float32) - 8
        group = ints.shape[1] // scale.shape[1]
        # compressed-tensors multiplies in the scale's dtype (the checkpoint's bf16), as the
        # checkpoint defines its weights: int4 x scale rounded to bf16, then widened.
        expected = (ints.to(scale.dtype) * scale.repeat_interleave(group, dim=1)).float()
        got = dense[f"{mod}.weight"]
        assert got.dtype == torch.float32 and torch.equal(got, expected), mod
        assert ints.min() >= -8 and ints.max() <= 7
    assert not [k for k in dense if k.endswith(("weight_packed", "weight_scale", "weight_shape"))]
    for k, v in q.items():  # what was not quantized is carried over as it was
        if not k.endswith(("weight_packed", "weight_scale", "weight_shape")):
            assert torch.equal(dense[k], v), k


def _docs(n: int = 6) -> list[str]:
    from orchestrator.config import calibration_file

    path = calibration_file({"dataset": "lee_background"})
    return [line for line in path.read_text().splitlines() if line.strip()][-n:]


def _vllm_logliks(path: str, dtype: str) -> list[float]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.vllm_causallms import VLLM

    lm = VLLM(pretrained=path, dtype=dtype, max_model_len=1024, enforce_eager=True, seed=1234)
    reqs = [Instance("loglikelihood_rolling", {}, (d[:1500],), i) for i, d in enumerate(_docs())]
    out = [float(x) for x in lm.loglikelihood_rolling(reqs)]
    core = getattr(lm.model.llm_engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    return out


def test_emulated_w4a16_scores_match_what_the_host_can_check(tiny_w4a16, tmp_path):
    apply_worker_env(kv_cache_gb=1)
    from workers.stages.execution import emulated_checkpoint

    host = probe()
    ex = capability.resolve("w4a16", "wna16-int", "bfloat16", host)
    if ex.mode == capability.NATIVE:  # AVX-512 (+BF16, AMX): the format's own kernel is here
        native = _vllm_logliks(tiny_w4a16.path, "bfloat16")
        emulated = _vllm_logliks(emulated_checkpoint(tiny_w4a16, "bfloat16", root=tmp_path).path, "bfloat16")
        worst = max(abs(a - b) / abs(a) for a, b in zip(native, emulated))
        print(f"{host.name}: max relative |native - emulated| summed loglikelihood = {worst:.2e}")
        assert worst < NATIVE_REL_TOL
        return
    # No W4A16 kernel on this host: the native engine fails as the table says, in a clean process.
    assert ex.mode == capability.EMULATED and host.vllm_library == "vllm._C_AVX2"
    code = (
        "from quantgrid.runtime import apply_worker_env; apply_worker_env(kv_cache_gb=1)\n"
        "from lm_eval.models.vllm_causallms import VLLM\n"
        f"lm = VLLM(pretrained={tiny_w4a16.path!r}, dtype='bfloat16', max_model_len=256, enforce_eager=True)\n"
        "from lm_eval.api.instance import Instance\n"
        "print(lm.loglikelihood_rolling([Instance('loglikelihood_rolling', {}, ('hello world',), 0)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "cpu_gemm_wna16" in proc.stderr, proc.stderr[-2000:]
    # Emulated (float32) vs transformers loading the quantized checkpoint itself.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    emulated = _vllm_logliks(emulated_checkpoint(tiny_w4a16, "float32", root=tmp_path).path, "float32")
    tok = AutoTokenizer.from_pretrained(tiny_w4a16.path)
    hf = AutoModelForCausalLM.from_pretrained(tiny_w4a16.path, dtype=torch.float32)
    for d, got in zip(_docs(), emulated):
        ids = tok(d[:1500], return_tensors="pt").input_ids
        ids = torch.cat([torch.tensor([[tok.eos_token_id if tok.bos_token_id is None else tok.bos_token_id]]), ids], 1)
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0, :-1].float(), -1)
        ref = float(logp.gather(1, ids[0, 1:, None]).sum())
        print(f"emulated {got:.4f} vs transformers {ref:.4f}")
        assert abs(got - ref) < HF_ABS_TOL * max(1.0, abs(ref) / 100)


@pytest.mark.parametrize("forced", ["", "avx2"])
def test_vllm_kernel_library_agrees_with_the_table(forced):
    """vLLM's own kernel selection is the source of truth: the library it loads on this host (or
    on the forced lower level) registers the W4A16 op exactly where the table says native."""
    code = (
        "import json\nfrom quantgrid.host import probe\nfrom workers.stages.execution import select_kernel_library, "
        "vllm_has_op\n"
        "h = probe(); select_kernel_library(h)\n"
        "print(json.dumps({'isa': h.isa, 'wna16': vllm_has_op('cpu_gemm_wna16'), 'int8': "
        "vllm_has_op('onednn_scaled_mm'), 'w4a8': vllm_has_op('aten._dyn_quant_matmul_4bit')}))"
    )
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu"}
    env.pop("QUANTGRID_HOST_ISA", None)
    if forced:
        env["QUANTGRID_HOST_ISA"] = forced
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    host = probe({"QUANTGRID_HOST_ISA": forced} if forced else {})
    assert got["isa"] == host.isa
    wna16 = capability.resolve("w4a16", "wna16-int", "bfloat16", host)
    assert got["wna16"] == (wna16.mode == capability.NATIVE)
    assert got["int8"] is True  # INT8 W8A8 is native on every x86 level vLLM-CPU ships
    w4a8 = capability.resolve("w4a8", "w4a8-int", "bfloat16", host)  # its op is torch's, on every level
    assert w4a8.op == "aten._dyn_quant_matmul_4bit" and got["w4a8"] == (w4a8.mode == capability.NATIVE) is True
