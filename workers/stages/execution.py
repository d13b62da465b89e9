"""How a worker honours the plan's execution (quantgrid/capability.py): the host it was planned for,
the kernel library vLLM loads there, and the emulated path.

Emulated = the SAME quantized weights without the format's kernel: compressed-tensors' own
model-free dequantizer (compressed_tensors/entrypoints/convert/converters/ct_dequantizer.py,
`CompressedTensorsDequantizer` through `convert_checkpoint`) writes each packed int4 weight as
int x scale into a dense checkpoint, which a dense vLLM engine serves. The dense checkpoint is
cached next to the quantized one, content-addressed by (quantized checkpoint, dtype).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from quantgrid.checkpoint import publish
from quantgrid.host import Host, probe
from quantgrid.runtime import cache_dir
from quantgrid.types import Artifact, EngineSettings, stable_hash

# Bump when the dense checkpoint written for the same input changes.
EMULATION_VERSION = 1


class HostMismatch(RuntimeError):
    """The worker's host is not the one the plan resolved the format for (one line)."""


def check_host(settings: EngineSettings) -> Host:
    """This worker's host, which must be the class the plan resolved (a CPU-only check: GPU
    classes are named by the accelerator, not probed)."""
    host = probe()
    if settings.host.startswith("cpu:") and settings.host != host.name:
        raise HostMismatch(
            f"planned for {settings.host}, but this worker's CPU is {host.name} ({host.cpu_model}): "
            "plan on the machine class the sweep runs on"
        )
    return host


def select_kernel_library(host: Host) -> None:
    """Make vLLM load the kernel library of the (possibly forced, lower) ISA: vLLM chooses it from
    torch.cpu._is_avx512_supported() / _is_avx512_bf16_supported() (vllm/platforms/cpu.py,
    import_kernels). Must run before vLLM is imported."""
    if host.device != "cpu" or not host.forced:
        return
    import torch

    if host.isa in ("x86_64", "avx2"):
        torch.cpu._is_avx512_supported = lambda: False
        torch.cpu._is_avx512_bf16_supported = lambda: False
    elif host.isa == "avx512":
        torch.cpu._is_avx512_bf16_supported = lambda: False


def vllm_has_op(op: str) -> bool:
    """Whether the kernel library vLLM loaded on this host registers `op` (torch.ops._C), or for a
    qualified name (`aten._dyn_quant_matmul_4bit`) whether torch has that op."""
    import torch
    from vllm.platforms import current_platform

    current_platform.import_kernels()
    namespace, _, name = op.rpartition(".")
    return hasattr(getattr(torch.ops, namespace or "_C"), name)


def emulated_checkpoint(art: Artifact, dtype: str, root: Path | None = None) -> Artifact:
    """The dense checkpoint of a compressed-tensors one: same weights, dequantized to `dtype`."""
    import torch
    from compressed_tensors.entrypoints.convert.convert_checkpoint import convert_checkpoint
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer

    src = Path(art.path)
    key = stable_hash({"checkpoint": art.content_hash, "dtype": dtype, "version": EMULATION_VERSION})
    target = Path(root or cache_dir() / "checkpoints") / f"{src.name[:60]}-dense-{key}"
    t0 = time.perf_counter()

    def build(out: Path) -> None:
        torch_dtype = getattr(torch, dtype)
        convert_checkpoint(src, out, CompressedTensorsDequantizer(src, dtype=torch_dtype))
        # The converter updates config.json's quantization_config (None: dequantized). Say what
        # this is, and set the dense tensors' dtype so vLLM's dtype=auto would agree.
        cfg_path = out / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg["dtype"] = dtype
        cfg_path.write_text(json.dumps(cfg, indent=2))
        (out / "quantgrid_emulation.json").write_text(
            json.dumps(
                {
                    "dequantized_from": str(src),
                    "content_hash": art.content_hash,
                    "dtype": dtype,
                    "by": "compressed_tensors CompressedTensorsDequantizer",
                    "version": EMULATION_VERSION,
                },
                indent=1,
            )
        )

    content_hash, reused = publish(target, build)
    return Artifact(
        path=str(target),
        content_hash=content_hash,
        quantization_config=None,
        seconds=time.perf_counter() - t0,
        reused=reused,
        dims=art.dims,
    )
