"""One table: (quantization scheme, host) -> native | emulated | unavailable, with its source.

- native: the format's own vLLM kernel runs (vLLM's kernel selection picks it on that host).
- emulated: accuracy is measured on the SAME quantized weights without the format's kernel: the
  checkpoint's weights dequantized (int x scale, fp4 x scales, exactly, by compressed-tensors'
  CompressedTensorsDequantizer) into a dense checkpoint served by a dense engine. Only weight-only
  formats (A16) are emulated: a dense engine cannot reproduce activation quantization, so a format
  that quantizes activations and has no kernel on a host is unavailable there. Scores are flagged
  `emulated` everywhere; the perf stage refuses it (an emulated kernel's latency means nothing).
- unavailable: refused at plan time in one line, naming the host and what would run it.

A kernel that serves an activation-quantized checkpoint weight-only (vLLM's Marlin fallbacks for
FP8, NVFP4 and MXFP4 below the GPU generation with the units) measures another format: the row
says unavailable and names it. The FP8 KV cache is a scheme of its own (`kv-fp8`): a format whose
recipe has a `kv_cache_scheme` (or a sweep with engine.kv_cache_dtype=fp8) needs its row too.

Rows are data, matched in order (first match wins): a new format or GPU generation is a row,
never a branch. Each row cites where in vLLM 0.32 the fact was read. The engine dtype is chosen
per row too: a CPU without bf16 hardware runs bf16 matmuls ~46x slower than float32 (measured,
../shared/STACK.md), so dense and INT8 engines run in float32 there, while vLLM-CPU's W4A16
kernel only takes bf16 ("cpu_gemm_wna16 not implemented for 'Float'").
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from quantgrid.host import Host

NATIVE, EMULATED, UNAVAILABLE = "native", "emulated", "unavailable"
EXECUTION_MODES = (NATIVE, EMULATED)

# GPU accelerator classes (EngineSettings.accelerator, e.g. h100-80gb) -> compute capability.
GPU_GENERATIONS = {
    "t4": ("sm75", "Turing"),
    "a100": ("sm80", "Ampere"),
    "a10": ("sm86", "Ampere"),
    "a10g": ("sm86", "Ampere"),
    "a6000": ("sm86", "Ampere"),
    "a40": ("sm86", "Ampere"),
    "l4": ("sm89", "Ada"),
    "l40": ("sm89", "Ada"),
    "l40s": ("sm89", "Ada"),
    "rtx4090": ("sm89", "Ada"),
    "h100": ("sm90", "Hopper"),
    "h200": ("sm90", "Hopper"),
    "h800": ("sm90", "Hopper"),
    "gh200": ("sm90", "Hopper"),
    "b200": ("sm100", "Blackwell"),
    "gb200": ("sm100", "Blackwell"),
    "b300": ("sm103", "Blackwell"),
    "rtx5090": ("sm120", "Blackwell"),
}

_CPU_SCHEME = "vllm/model_executor/layers/quantization/compressed_tensors/schemes"
_MIN_CAP = f"{_CPU_SCHEME}/compressed_tensors_%s.py get_min_capability"
# Where vLLM 0.32 maps a checkpoint's quantization args to a scheme class, and each scheme to a kernel.
_CT = "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py _get_scheme_from_parts"
_KL = "vllm/model_executor/kernels/linear/__init__.py"
_CPU_ATTN = "vllm/v1/attention/backends/cpu_attn.py _get_attn_isa"
_DEQUANTIZED = "dense engine on the dequantized checkpoint (compressed-tensors CompressedTensorsDequantizer)"


@dataclass(frozen=True)
class Row:
    scheme: str  # see scheme_of() and PRESETS: dense | w8a8-int8 | w8a8-fp8 | wna16-int | w8a16-int | ...
    hosts: str  # fnmatch pattern over Host.name, e.g. "cpu:avx512*" or "cuda:sm9*"
    mode: str  # native | emulated | unavailable
    # engine dtype: "model" (the model's, usually bfloat16), or "float32"/"bfloat16"; "fp32_without_bf16"
    # = float32 where the host has no bf16 hardware, else the model's.
    dtype: str
    runs: str  # what runs (the kernel), or for unavailable: what would run it
    source: str  # where this was read
    op: str = ""  # the vLLM custom op the kernel calls: a worker checks its library registers it


TABLE: tuple[Row, ...] = (
    # --- CPU (vllm-cpu 0.32: vllm/platforms/cpu.py import_kernels picks _C / _C_AVX512 / _C_AVX2) ---
    Row(
        "dense",
        "cpu:*",
        NATIVE,
        "fp32_without_bf16",
        "dense Linear (oneDNN matmul)",
        "vllm/platforms/cpu.py; bf16 vs float32 speed measured (../shared/STACK.md)",
    ),
    Row(
        "w8a8-int8",
        "cpu:x86_64",
        UNAVAILABLE,
        "model",
        "an x86 CPU with AVX2 or later (oneDNN int8 GEMM)",
        "vllm-cpu 0.32 ships x86 kernel libraries for AVX2 and up only",
    ),
    Row(
        "w8a8-int8",
        "cpu:*",
        NATIVE,
        "fp32_without_bf16",
        "CPUInt8ScaledMMLinearKernel (onednn_scaled_mm)",
        "vllm/model_executor/kernels/linear/scaled_mm/cpu.py; onednn_scaled_mm is registered in _C, _C_AVX512 "
        "and _C_AVX2",
        op="onednn_scaled_mm",
    ),
    Row(
        "w8a8-fp8",
        "cpu:x86_64",
        UNAVAILABLE,
        "model",
        "an x86 CPU with AVX2 or later",
        "vllm-cpu 0.32 ships x86 kernel libraries for AVX2 and up only",
    ),
    Row(
        "w8a8-fp8",
        "cpu:*",
        NATIVE,
        "fp32_without_bf16",
        "vLLM's FP8 scaled-mm kernel selection (torch fallback on CPUs without FP8 units)",
        "vllm/model_executor/kernels/linear/scaled_mm/__init__.py (CPU candidates); float32 activations load "
        "and run (checked)",
    ),
    Row(
        "wna16-int",
        "cpu:avx512*",
        NATIVE,
        "bfloat16",
        "CPUWNA16LinearKernel (op cpu_gemm_wna16)",
        "vllm/model_executor/kernels/linear/mixed_precision/cpu.py; cpu_gemm_wna16 is registered in _C and _C_AVX512",
        op="cpu_gemm_wna16",
    ),
    Row(
        "wna16-int",
        "cpu:amx",
        NATIVE,
        "bfloat16",
        "CPUWNA16LinearKernel (op cpu_gemm_wna16)",
        "vllm/model_executor/kernels/linear/mixed_precision/cpu.py; cpu_gemm_wna16 is registered in _C",
        op="cpu_gemm_wna16",
    ),
    Row(
        "wna16-int",
        "cpu:*",
        EMULATED,
        "fp32_without_bf16",
        "dense engine on the dequantized checkpoint (compressed-tensors CompressedTensorsDequantizer)",
        "_C_AVX2.abi3.so registers no cpu_gemm_wna16: 'has no attribute cpu_gemm_wna16' at the first forward",
    ),
    Row(
        "w8a16-int",
        "cpu:*",
        EMULATED,
        "fp32_without_bf16",
        _DEQUANTIZED,
        f"{_CT} -> CompressedTensorsWNA16 (uint8b128); {_KL} _POSSIBLE_KERNELS[CPU]: Dynamic4bitLinearKernel takes "
        "int4, ZentorchWNA16 and CPUWNA16 uint4/uint4b8 (mixed_precision/cpu.py _CPUWNA16_SUPPORTED_QUANT_TYPES): "
        "no 8-bit weight-only kernel",
    ),
    Row(
        "w4a8-int",
        "cpu:x86_64",
        UNAVAILABLE,
        "model",
        "an x86 CPU with AVX2 or later",
        "vllm-cpu 0.32 ships x86 kernel libraries for AVX2 and up only",
    ),
    Row(
        "w4a8-int",
        "cpu:*",
        NATIVE,
        "fp32_without_bf16",
        "Dynamic4bitLinearKernel (torch aten._dyn_quant_matmul_4bit: activations quantized to int8 per row "
        "inside the kernel, int4 weights; groupwise in float32)",
        f"{_CT} (_is_dynamic_token_w4a8_int) -> CompressedTensorsW4A8Int; {_KL} _POSSIBLE_KERNELS[CPU] "
        "(Dynamic4bitLinearKernel first, scalar_types.int4); mixed_precision/dynamic_4bit.py",
        op="aten._dyn_quant_matmul_4bit",
    ),
    Row(
        "w4a8-fp8",
        "cpu:*",
        UNAVAILABLE,
        "model",
        "a Hopper GPU (sm90), the only host vLLM 0.32 has a W4AFP8 kernel for (CutlassW4A8LinearKernel); a "
        "dense engine cannot reproduce its FP8 activations",
        f"{_CT}: _is_fp8_w4a8_sm90 (capability == 90 exactly), otherwise no scheme matches (NotImplementedError)",
    ),
    Row(
        "fp8-block",
        "cpu:*",
        UNAVAILABLE,
        "model",
        "a Hopper or Blackwell GPU, or a CPU with AMX-FP8 (CPUFp8W8A8BlockScaledMMKernel); with AMX alone vLLM "
        "serves it weight-only (CPUFp8BlockScaledMMKernel, W8A16), without AMX it has no CPU kernel",
        f"{_KL} _POSSIBLE_FP8_BLOCK_KERNELS[CPU]; vllm/model_executor/kernels/linear/scaled_mm/cpu.py is_supported "
        "(_is_amx_tile_supported, cpu_has_amx_fp8)",
    ),
    Row(
        "nvfp4a16",
        "cpu:*",
        EMULATED,
        "fp32_without_bf16",
        _DEQUANTIZED,
        f"{_KL} init_nvfp4_linear_kernel(use_a16=True): _POSSIBLE_NVFP4_KERNELS has no CPU entry and the forced "
        "MarlinNvFp4LinearKernel needs CUDA (marlin_utils_fp4.is_fp4_marlin_supported)",
    ),
    Row(
        "nvfp4",
        "cpu:*",
        UNAVAILABLE,
        "model",
        "a Blackwell GPU (sm100+, CUTLASS / FlashInfer FP4 GEMM); vLLM-CPU has no NVFP4 kernel and a dense "
        "engine cannot reproduce FP4 activations",
        f"{_KL} init_nvfp4_linear_kernel: _POSSIBLE_NVFP4_KERNELS has no CPU entry",
    ),
    Row(
        "mxfp4",
        "cpu:*",
        UNAVAILABLE,
        "model",
        "a Blackwell GPU (sm100+, FlashInferMxFp4LinearKernel); vLLM-CPU has no MXFP4 kernel and a dense engine "
        "cannot reproduce FP4 activations",
        f"{_KL} init_mxfp4_linear_kernel: _POSSIBLE_MXFP4_KERNELS has no CPU entry",
    ),
    Row(
        "kv-fp8",
        "cpu:avx512*",
        NATIVE,
        "fp32_without_bf16",
        "CPU attention with an FP8 (E4M3) KV cache and the checkpoint's k/v scales",
        f"{_CPU_ATTN} (FP8 KV cache needs AVX-512 or AMX); CPUAttentionBackend.supported_kv_cache_dtypes",
    ),
    Row(
        "kv-fp8",
        "cpu:amx",
        NATIVE,
        "fp32_without_bf16",
        "CPU attention with an FP8 (E4M3) KV cache and the checkpoint's k/v scales",
        f"{_CPU_ATTN} (FP8 KV cache needs AVX-512 or AMX); CPUAttentionBackend.supported_kv_cache_dtypes",
    ),
    Row(
        "kv-fp8",
        "cpu:*",
        UNAVAILABLE,
        "model",
        "an x86 CPU with AVX-512 or AMX (vLLM's CPU attention: 'FP8 KV cache on CPU requires x86 with AVX-512 or AMX')",
        _CPU_ATTN,
    ),
    # --- CUDA GPUs: the compressed-tensors scheme's get_min_capability in vLLM 0.32 ---
    Row("dense", "cuda:*", NATIVE, "model", "dense Linear (cuBLAS)", "vllm/platforms/cuda.py"),
    Row(
        "w8a8-fp8",
        "cuda:sm8[0-8]",
        UNAVAILABLE,
        "model",
        "an Ada, Hopper or Blackwell GPU (sm89+); below it vLLM serves FP8 weight-only (Marlin), not W8A8",
        _MIN_CAP % "w8a8_fp8" + " (89)",
    ),
    Row(
        "w8a8-fp8",
        "cuda:sm7*",
        UNAVAILABLE,
        "model",
        "an Ada, Hopper or Blackwell GPU (sm89+)",
        _MIN_CAP % "w8a8_fp8" + " (89)",
    ),
    Row("w8a8-fp8", "cuda:*", NATIVE, "model", "CUTLASS FP8 scaled_mm", _MIN_CAP % "w8a8_fp8" + " (89)"),
    Row("w8a8-int8", "cuda:*", NATIVE, "model", "CUTLASS int8 scaled_mm", _MIN_CAP % "w8a8_int8" + " (75)"),
    Row(
        "wna16-int",
        "cuda:*",
        NATIVE,
        "model",
        "Machete (sm90) / Marlin (sm80+) / Exllama (sm75) mixed-precision GEMM",
        _MIN_CAP % "wNa16" + " (75); vllm/model_executor/kernels/linear/mixed_precision/__init__.py",
    ),
    Row(
        "w8a16-int",
        "cuda:*",
        NATIVE,
        "model",
        "Machete (sm90) / Marlin (sm75+) mixed-precision GEMM, uint8b128 weights",
        _MIN_CAP % "wNa16" + f" (75); {_KL} _POSSIBLE_KERNELS[CUDA]; vllm/model_executor/layers/quantization/utils/"
        "marlin_utils.py query_marlin_supported_quant_types, machete_utils.py query_machete_supported_quant_types",
    ),
    Row(
        "w4a8-int",
        "cuda:*",
        UNAVAILABLE,
        "model",
        "vLLM with the optional humming package (HummingLinearKernel, its only CUDA kernel for signed int4 "
        "weights: CUTLASS W4A8 takes FP8 activations, Machete/Marlin/Conch/Exllama/Triton unsigned types), or a "
        "CPU (Dynamic4bitLinearKernel)",
        f"{_CT} -> CompressedTensorsW4A8Int (int-quantized checkpoint); {_KL} choose_mp_linear_kernel, "
        "_POSSIBLE_KERNELS[CUDA]; mixed_precision/humming.py can_implement (has_humming)",
    ),
    Row(
        "w4a8-fp8",
        "cuda:sm90",
        NATIVE,
        "model",
        "CutlassW4A8LinearKernel (int4 weights x FP8 activations, group 128)",
        f"{_CT} (_is_fp8_w4a8_sm90); " + _MIN_CAP % "w4a8_fp8" + " (90); mixed_precision/cutlass.py can_implement",
    ),
    Row(
        "w4a8-fp8",
        "cuda:*",
        UNAVAILABLE,
        "model",
        "a Hopper GPU (sm90 exactly): vLLM 0.32 matches W4AFP8 on capability 90 only",
        f"{_CT}: _is_fp8_w4a8_sm90 (match_exact=True), otherwise no scheme matches (NotImplementedError)",
    ),
    Row(
        "fp8-block",
        "cuda:sm9*",
        NATIVE,
        "model",
        "DeepGEMM / CUTLASS block-scaled FP8 GEMM (W8A8, activations per-token groups of 128)",
        f"{_KL} _POSSIBLE_FP8_BLOCK_KERNELS[CUDA]; ops.cutlass_scaled_mm_supports_block_fp8 "
        "(csrc/quantization/w8a8/cutlass/scaled_mm_entry.cu: sm90+)",
    ),
    Row(
        "fp8-block",
        "cuda:sm1*",
        NATIVE,
        "model",
        "CUTLASS block-scaled FP8 GEMM (W8A8, activations per-token groups of 128)",
        f"{_KL} _POSSIBLE_FP8_BLOCK_KERNELS[CUDA]; ops.cutlass_scaled_mm_supports_block_fp8 "
        "(csrc/quantization/w8a8/cutlass/scaled_mm_entry.cu: sm100+ with CUDA 12.8)",
    ),
    Row(
        "fp8-block",
        "cuda:sm89",
        UNAVAILABLE,
        "model",
        "a Hopper or Blackwell GPU: on Ada DeepGEMM and CUTLASS block FP8 are out (sm90+), so vLLM serves it "
        "weight-only (MarlinFP8ScaledMMLinearKernel, ahead of Triton), not W8A8",
        f"{_KL} _POSSIBLE_FP8_BLOCK_KERNELS[CUDA] order; w8a8_utils.cutlass_block_fp8_supported; "
        "marlin_utils_fp8.is_fp8_marlin_supported (sm75+)",
    ),
    Row(
        "fp8-block",
        "cuda:*",
        UNAVAILABLE,
        "model",
        "a Hopper or Blackwell GPU: below sm89 vLLM serves FP8 weight-only (CompressedTensorsW8A16Fp8, Marlin), "
        "not W8A8",
        f"{_CT} (_is_fp8_w8a8, then W8A16Fp8 below " + _MIN_CAP % "w8a8_fp8" + " 89)",
    ),
    Row(
        "nvfp4a16",
        "cuda:*",
        NATIVE,
        "model",
        "MarlinNvFp4LinearKernel (FlashInfer CuTe-DSL W4A16 on sm100/103)",
        _MIN_CAP % "w4a4_nvfp4" + f" (75); {_KL} init_nvfp4_linear_kernel(use_a16=True); "
        "marlin_utils_fp4.is_fp4_marlin_supported (sm75+)",
    ),
    Row(
        "nvfp4",
        "cuda:sm1*",
        NATIVE,
        "model",
        "CUTLASS / FlashInfer NVFP4 GEMM (W4A4)",
        f"{_KL} init_nvfp4_linear_kernel, _POSSIBLE_NVFP4_KERNELS[CUDA]; nvfp4_utils.cutlass_fp4_supported "
        "(csrc/quantization/fp4/nvfp4_scaled_mm_entry.cu: sm100+ with CUDA 12.8)",
    ),
    Row(
        "nvfp4",
        "cuda:*",
        UNAVAILABLE,
        "model",
        "a Blackwell GPU (sm100+): below it vLLM serves NVFP4 weight-only (MarlinNvFp4LinearKernel), not W4A4",
        f"{_KL} init_nvfp4_linear_kernel, _POSSIBLE_NVFP4_KERNELS[CUDA] order (FP4 GEMMs need sm100+, then the "
        "weight-only Marlin fallback)",
    ),
    Row(
        "mxfp4",
        "cuda:sm1*",
        NATIVE,
        "model",
        "FlashInferMxFp4LinearKernel (W4A4, activations MXFP4 dynamic)",
        f"{_KL} init_mxfp4_linear_kernel, _POSSIBLE_MXFP4_KERNELS[CUDA]; mxfp4/flashinfer.py is_supported "
        "(has_device_capability(100))",
    ),
    Row(
        "mxfp4",
        "cuda:*",
        UNAVAILABLE,
        "model",
        "a Blackwell GPU (sm100+): below it vLLM serves MXFP4 weight-only (MarlinMxFp4LinearKernel ignores the "
        "activation quantization; sm75 is below the scheme's minimum, 80)",
        _MIN_CAP % "w4a4_mxfp4" + f" (80); {_KL} _POSSIBLE_MXFP4_KERNELS[CUDA] order; mxfp4/marlin.py can_implement",
    ),
    Row(
        "kv-fp8",
        "cuda:*",
        NATIVE,
        "model",
        "an attention backend with an FP8 KV cache (FlashAttention 3 on Hopper, FlashInfer sm80-sm12x, Triton)",
        "vllm/platforms/cuda.py _get_backend_priorities; supported_kv_cache_dtypes of v1/attention/backends/"
        "flash_attn.py, flashinfer.py, triton_attn.py (Triton: any capability)",
    ),
)

# compressed-tensors preset scheme names (compressed_tensors/quantization/quant_scheme.py PRESET_SCHEMES) ->
# table scheme. W8A16 is not wna16-int: vLLM-CPU's WNA16 kernel takes 4-bit weights only.
PRESETS = {
    "W8A8": "w8a8-int8",
    "INT8": "w8a8-int8",
    "FP8": "w8a8-fp8",
    "FP8_DYNAMIC": "w8a8-fp8",
    "W4A16": "wna16-int",
    "W4A16_ASYM": "wna16-int",
    "W8A16": "w8a16-int",
    "W4A8": "w4a8-int",
    "W4AFP8": "w4a8-fp8",
    "FP8_BLOCK": "fp8-block",
    "NVFP4A16": "nvfp4a16",
    "NVFP4": "nvfp4",
    "MXFP4": "mxfp4",
}
# The KV cache dtype a recipe's `kv_cache_scheme` asks the engine for (vLLM's kv_cache_dtype); its
# capability row is the scheme KV_SCHEME.
KV_SCHEME = "kv-fp8"
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")


class CapabilityError(ValueError):
    """A format the host cannot run, or one the table does not know (one line)."""


def host_for(accelerator: str, cpu: Host) -> Host:
    """The host class cells of `accelerator` run on: this machine's CPU for "cpu", else the GPU's
    generation from its class name (h100-80gb -> cuda:sm90)."""
    if accelerator == "cpu":
        return cpu
    family = accelerator.lower().split("-")[0]
    if family not in GPU_GENERATIONS:
        raise CapabilityError(
            f"accelerator '{accelerator}': unknown GPU class (known: {', '.join(sorted(GPU_GENERATIONS))}; "
            "add it to quantgrid/capability.GPU_GENERATIONS)"
        )
    sm, _ = GPU_GENERATIONS[family]
    return Host(device="cuda", isa=sm, gpu=accelerator)


def _weights_activations(args: dict[str, Any]) -> str | None:
    """The table scheme of one config group, as vLLM's _get_scheme_from_parts tells them apart
    (QuantizationArgs defaults: type int, num_bits 8)."""
    w, a = args.get("weights") or {}, args.get("input_activations") or {}
    if not w:
        return None
    wt, wb, ws = str(w.get("type", "int")), int(w.get("num_bits", 8)), str(w.get("strategy") or "")
    if not a:
        if wt == "int":
            return {4: "wna16-int", 8: "w8a16-int"}.get(wb)
        # NVFP4A16: FP4 weights in groups of 16 (tensor_group); MXFP4A16 (groups of 32) has no row
        return "nvfp4a16" if (wt, wb, w.get("group_size")) == ("float", 4, 16) else None
    at, ab = str(a.get("type", "int")), int(a.get("num_bits", 8))
    if (wt, wb, at, ab) == ("int", 8, "int", 8):
        return "w8a8-int8"
    if (wt, wb, at, ab) == ("int", 4, "int", 8):
        return "w4a8-int"
    if (wt, wb, at, ab) == ("int", 4, "float", 8):
        return "w4a8-fp8"
    if (wt, wb, at, ab) == ("float", 8, "float", 8):
        return "fp8-block" if ws == "block" else "w8a8-fp8"
    if (wt, wb, at, ab) == ("float", 4, "float", 4):
        return {16: "nvfp4", 32: "mxfp4"}.get(w.get("group_size"))
    return None


def schemes_in(node: Any) -> set[str]:
    """Table schemes named anywhere in an llmcompressor recipe (preset `scheme:` strings or
    `config_groups` with weights / input_activations). An unrecognised scheme is returned as
    `?NAME` so the caller can name it."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "kv_cache_scheme":  # the KV cache, not a Linear scheme: kv_cache_dtype_of()
                continue
            if k == "scheme" and isinstance(v, str):
                found.add(PRESETS.get(v, f"?{v}"))
            elif k == "config_groups" and isinstance(v, dict):
                for g in v.values():
                    s = _weights_activations(g or {})
                    found.add(s or f"?{g}")
            else:
                found |= schemes_in(v)
    elif isinstance(node, list):
        for v in node:
            found |= schemes_in(v)
    return found


def find_keys(node: Any, match) -> list[tuple[Any, Any]]:
    """(key, value) of every mapping entry in a recipe (nested dicts and lists) that `match(key,
    value)` accepts, depth first, without looking inside a match."""
    found: list[tuple[Any, Any]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            found += [(k, v)] if match(k, v) else find_keys(v, match)
    elif isinstance(node, list):
        for v in node:
            found += find_keys(v, match)
    return found


def modifiers(recipe: Any) -> list[tuple[str, Any]]:
    """(name, arguments) of every llmcompressor modifier in a recipe (`GPTQModifier: {...}`), in
    recipe order."""
    return find_keys(recipe, lambda k, v: isinstance(k, str) and k.endswith("Modifier"))


def kv_cache_dtype_of(name: str, recipe: dict | None) -> str:
    """The engine's kv_cache_dtype a recipe asks for: "fp8" where it has an FP8 `kv_cache_scheme`
    (llmcompressor calibrates per-tensor k/v scales into the checkpoint), else "auto"."""
    found = [v for _, v in find_keys(recipe, lambda k, v: k == "kv_cache_scheme" and v is not None)]
    for kv in found:
        if not (isinstance(kv, dict) and str(kv.get("type", "int")) == "float" and int(kv.get("num_bits", 8)) == 8):
            raise CapabilityError(
                f"format {name}: the capability table has no row for kv_cache_scheme {kv} (FP8 only: "
                "{num_bits: 8, type: float})"
            )
    return "fp8" if found else "auto"


def scheme_of(name: str, recipe: dict | None, published: dict | None, declared: str | None) -> str:
    """A format's table scheme: declared (`scheme:` in conf/format, for published checkpoints),
    else read from its recipe; the unquantized baseline is `dense`, a recipe that quantizes only
    the KV cache is `kv-fp8`."""
    if declared:
        if not any(r.scheme == declared for r in TABLE):
            raise CapabilityError(
                f"format {name}: scheme '{declared}' has no row in the capability table "
                f"(known: {', '.join(sorted({r.scheme for r in TABLE}))})"
            )
        return declared
    if recipe is None and published is None:
        return "dense"
    if published is not None:
        raise CapabilityError(
            f"format {name}: a published checkpoint must declare its scheme "
            f"(scheme: one of {', '.join(sorted({r.scheme for r in TABLE} - {'dense'}))})"
        )
    found = schemes_in(recipe)
    if not found and kv_cache_dtype_of(name, recipe) != "auto":
        return KV_SCHEME
    unknown = sorted(s for s in found if s.startswith("?"))
    if unknown or len(found) != 1:
        what = unknown[0][1:] if unknown else (", ".join(sorted(found)) or "no quantization scheme")
        raise CapabilityError(
            f"format {name}: the capability table has no row for {what} "
            f"(one of: {', '.join(sorted(PRESETS))}; or declare scheme:)"
        )
    return found.pop()


def lookup(scheme: str, host: Host) -> list[Row]:
    """Rows for (scheme, host) in table order: the first is what runs by default."""
    return [r for r in TABLE if r.scheme == scheme and fnmatch.fnmatchcase(host.name, r.hosts)]


@dataclass(frozen=True)
class Execution:
    """How a (model, format) runs on its host: fixed at plan time, part of every cell's key."""

    mode: str  # native | emulated
    dtype: str  # engine dtype
    calibration_dtype: str  # dtype of the quantize stage's forward passes
    host: str  # Host.name
    runs: str
    source: str
    op: str = ""
    kv_cache_dtype: str = "auto"  # the engine's KV cache dtype (auto = the model's dtype)

    def as_dict(self) -> dict[str, str]:
        return {
            "execution_mode": self.mode,
            "dtype": self.dtype,
            "calibration_dtype": self.calibration_dtype,
            "host": self.host,
            "runs": self.runs,
            "source": self.source,
            "kv_cache_dtype": self.kv_cache_dtype,
        }


def _dtype(rule: str, model_dtype: str, host: Host) -> str:
    if rule == "model":
        return model_dtype
    if rule == "fp32_without_bf16":
        return model_dtype if host.native_bf16 or model_dtype == "float32" else "float32"
    return rule


def resolve(
    fmt_name: str,
    scheme: str,
    model_dtype: str,
    host: Host,
    want: str = "auto",
    dtype: str = "auto",
    kv_cache_dtype: str = "auto",
) -> Execution:
    """The execution of one format on one host. `want` pins the mode (native | emulated; auto =
    the table's first row); `dtype` pins the engine dtype (auto = the row's rule); an FP8
    `kv_cache_dtype` (the format's kv_cache_scheme, or the sweep's engine setting) needs the
    host's kv-fp8 row to be native too."""
    rows = lookup(scheme, host)
    if not rows:
        raise CapabilityError(f"format {fmt_name} ({scheme}): no capability row for host {host.name}")
    row = rows[0]
    if want in EXECUTION_MODES and row.mode != want:
        pinned = next((r for r in rows if r.mode == want), None)
        # Pinning `emulated` emulates what has an emulated path; the rest (dense, W8A8 whose
        # activation quantization a dense engine cannot reproduce) stays native.
        if pinned is None and want != EMULATED:
            raise CapabilityError(
                f"format {fmt_name} ({scheme}) cannot run {want} on {host.name}: the table says {row.mode} ({row.runs})"
            )
        row = pinned or row
    if row.mode == UNAVAILABLE:
        raise CapabilityError(
            f"format {fmt_name} ({scheme}) is unavailable on {host.name}"
            f"{' (' + host.cpu_model + ')' if host.cpu_model else ''}: it needs {row.runs} [{row.source}]"
        )
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise CapabilityError(f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {kv_cache_dtype!r}")
    if kv_cache_dtype != "auto" and scheme != KV_SCHEME:
        kv = lookup(KV_SCHEME, host)
        if not kv or kv[0].mode != NATIVE:
            needs = f": it needs {kv[0].runs} [{kv[0].source}]" if kv else ""
            raise CapabilityError(
                f"format {fmt_name} ({scheme}) with an FP8 KV cache (kv_cache_dtype={kv_cache_dtype}) is unavailable "
                f"on {host.name}{' (' + host.cpu_model + ')' if host.cpu_model else ''}{needs}"
            )
    cal = model_dtype if host.native_bf16 or model_dtype == "float32" else "float32"
    return Execution(
        mode=row.mode,
        dtype=_dtype(row.dtype, model_dtype, host) if dtype == "auto" else dtype,
        calibration_dtype=cal,
        host=host.name,
        runs=row.runs,
        source=row.source,
        op=row.op,
        kv_cache_dtype=kv_cache_dtype,
    )


CPU_CLASSES = ("avx2", "avx512", "avx512_bf16", "amx")


def matrix_hosts() -> list[Host]:
    """The host classes of the matrix: the x86 levels vLLM-CPU has a kernel library for, and one GPU
    per compute capability in GPU_GENERATIONS (Turing, Ampere, Ada, Hopper, Blackwell)."""
    cpus = [Host("cpu", isa) for isa in CPU_CLASSES]
    gpus = {sm: Host("cuda", sm, gpu=name) for name, (sm, _) in GPU_GENERATIONS.items()}
    return cpus + [gpus[sm] for sm in sorted(gpus, key=lambda s: int(s[2:]))]


def matrix(hosts: list[Host] | None = None) -> list[dict[str, str]]:
    """The table as rows of (scheme, host, mode, dtype, runs, source): `python -m quantgrid.capability`."""
    if hosts is None:
        hosts = matrix_hosts()
    out = []
    for scheme in dict.fromkeys(r.scheme for r in TABLE):
        for h in hosts:
            rows = lookup(scheme, h)
            if rows:
                r = rows[0]
                out.append(
                    {
                        "scheme": scheme,
                        "host": h.name,
                        "mode": r.mode,
                        "dtype": _dtype(r.dtype, "bfloat16", h),
                        "runs": r.runs,
                        "source": r.source,
                    }
                )
    return out


def render(rows: list[dict[str, str]] | None = None) -> str:
    """The matrix as markdown: scheme x host (N native, E emulated, - unavailable), then each
    distinct (scheme, mode, runs, source) with the hosts it covers."""
    rows = matrix() if rows is None else rows
    hosts = list(dict.fromkeys(r["host"] for r in rows))
    mode = {(r["scheme"], r["host"]): r["mode"] for r in rows}
    mark = {NATIVE: "N", EMULATED: "E", UNAVAILABLE: "-"}
    gen = {sm: g for sm, g in GPU_GENERATIONS.values()}
    head = [h.replace("cuda:", "") + (f" {gen[h[5:]]}" if h[5:] in gen else "") for h in hosts]
    lines = ["| scheme | " + " | ".join(head) + " |", "|---" * (len(hosts) + 1) + "|"]
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        lines.append(f"| {scheme} | " + " | ".join(mark.get(mode.get((scheme, h), ""), "?") for h in hosts) + " |")
    lines += ["", "N native, E emulated (dense engine on the dequantized weights), - unavailable.", ""]
    seen: dict[tuple[str, str, str, str], list[str]] = {}
    for r in rows:
        seen.setdefault((r["scheme"], r["mode"], r["runs"], r["source"]), []).append(r["host"])
    for (scheme, m, runs, src), on in seen.items():
        lines.append(f"- {scheme} {m} on {', '.join(on)}: {runs} [{src}]")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
