"""Throughput probe: dense matmul GFLOP/s on this host in one dtype, in about a second.

`python -m workers.probe float32` prints {"dtype", "gflops", "threads", "torch"} as one JSON line.
The driver (torch-free) runs it in a subprocess to size CPU-demo subsets from the cost model
(orchestrator/planning/sizing.py). The shape is a prefill GEMM of SmolLM2-135M (256 tokens x hidden 576 x
MLP 1536), the one ../shared/STACK.md timed on an AVX2 EPYC: float32 7.7 ms, bfloat16 357 ms (1 thread).
"""

from __future__ import annotations

import json
import sys
import time

SHAPE = (256, 576, 1536)
PROBE_METHOD = "best-rep"  # part of the cache key: a probe measured another way is measured again


def matmul_gflops(dtype: str, seconds: float = 0.6) -> dict:
    import torch

    m, k, n = SHAPE
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(getattr(torch, dtype))
    b = torch.randn(k, n, generator=g).to(getattr(torch, dtype))
    a @ b  # warm-up: oneDNN picks and caches its kernel
    # The fastest rep, not the mean: the result is cached per host (orchestrator/planning/sizing.py), and a
    # probe taken while another process held a core (a test suite, a second sweep) measured 320
    # GFLOP/s in bf16 on a 2-core EPYC whose best rep is 422, and sized every later demo too small.
    # The best of many reps is the host's speed whenever it had the cores for a moment.
    reps, best, t0 = 0, float("inf"), time.perf_counter()
    while True:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
        reps += 1
        if time.perf_counter() - t0 >= seconds and reps >= 3:
            break
    return {
        "dtype": dtype,
        "gflops": round(2 * m * k * n / best / 1e9, 2),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "shape": list(SHAPE),
        "reps": reps,
        "method": PROBE_METHOD,
    }


# The FP8 GEMM vLLM-CPU runs for a W8A8-FP8 checkpoint on a CPU without AMX-FP8: its torch
# fallback (vllm/model_executor/kernels/linear/scaled_mm/pytorch.py ChannelWiseTorchFP8ScaledMMLinearKernel
# apply_scaled_mm: torch._scaled_mm, e4m3 x e4m3 -> float32). oneDNN decides how fast that is: on an
# AVX2 and an AVX-512-BF16 EPYC the FP8 engine ran at 0.35x BF16 end to end, while on an Intel Xeon
# with AMX (AVX10.1, no AMX-FP8; torch 2.13's oneDNN 3.12) ONEDNN_VERBOSE shows `ref:any`, the
# reference implementation: 0.08 GFLOP/s against 1,600-2,000 for bf16, an FP8 demo cell of hours
# (measured 2026-12-07). A small M keeps the probe short where it is that slow.
FP8_SHAPE = (16, 576, 1536)


def fp8_scaled_mm_gflops(seconds: float = 0.6) -> dict:
    import torch

    m, k, n = FP8_SHAPE
    g = torch.Generator().manual_seed(0)
    out = {"dtype": "fp8_scaled_mm", "torch": torch.__version__, "shape": list(FP8_SHAPE), "method": PROBE_METHOD}
    try:
        a = torch.randn(m, k, generator=g).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, generator=g).to(torch.float8_e4m3fn).t()
        one = torch.ones(1, dtype=torch.float32)
        torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.float32)  # warm-up
        reps, best, t0 = 0, float("inf"), time.perf_counter()
        while reps < 2 or (time.perf_counter() - t0 < seconds and reps < 50):
            t = time.perf_counter()
            torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.float32)
            best = min(best, time.perf_counter() - t)
            reps += 1
    except Exception as exc:  # noqa: BLE001 - no FP8 GEMM in this torch: nothing measured, nothing capped
        return out | {"gflops": None, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return out | {"gflops": round(2 * m * k * n / best / 1e9, 4), "threads": torch.get_num_threads(), "reps": reps}


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "float32"
    print(json.dumps(fp8_scaled_mm_gflops() if kind == "fp8_scaled_mm" else matmul_gflops(kind)))
