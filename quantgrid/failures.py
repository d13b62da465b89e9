"""Failures a worker classifies itself, for the driver's scheduler (torch-free, both sides).

The driver cannot tell a vLLM engine that ran out of KV cache from a bug by reading a traceback
string, and it must not import vLLM to unpickle vLLM's own exception types. So the worker maps
what it sees to a failure class (workers/stages/engine.py `classify_engine_error`) and raises a
StageFailure carrying it; orchestrator/execution/driver.py `classify` takes the class as given.
"""

from __future__ import annotations

from enum import Enum


class StageFailure(RuntimeError):
    """A stage error with its failure class (`oom`, `engine_dead`, ...) decided where it happened."""

    def __init__(self, failure_class: str, message: str):
        super().__init__(message)
        self.failure_class = failure_class

    def __reduce__(self):  # Ray pickles exceptions: keep the class across the process boundary
        return (StageFailure, (self.failure_class, str(self)))


class Recovery(str, Enum):
    RETRY = "retry"  # the attempt is lost, the cells are fine: a fresh actor, up to max_retries
    FALLBACK = "fallback"  # the engine did not fit: rebuilt with the next resources.oom_fallbacks step
    FAIL = "fail"  # deterministic: retrying cannot help; the cell (or stage) fails, the sweep goes on


class FailureClass(str, Enum):
    """Every failure class the ledger records, with what the scheduler does about it. The values
    are the strings stored in the ledger and raised by workers (`failure_class` attributes), so a
    worker and the scheduler cannot drift apart: a class missing here is refused at import."""

    ACTOR_DIED = "actor_died", Recovery.RETRY  # process or node gone (Ray's RayActorError family)
    TIMEOUT = "timeout", Recovery.RETRY  # a call past stage_timeout_s, an actor not up by start_timeout_s
    LEASE_EXPIRED = "lease_expired", Recovery.RETRY  # no heartbeat for lease_s (paused, partitioned)
    ENGINE_DEAD = "engine_dead", Recovery.RETRY  # vLLM's engine core died (workers/stages/engine.py)
    OOM = "oom", Recovery.FALLBACK  # out of memory, KV cache too small for max_model_len
    ERROR = "error", Recovery.FAIL  # anything else a task raised
    BAD_INPUT = "bad_input", Recovery.FAIL  # a bad checkpoint or config met at run time
    QUANTIZATION_BROKEN = "quantization_broken", Recovery.FAIL  # the post-quantize probe: past sweep.sanity
    SERVER_UNHEALTHY = "server_unhealthy", Recovery.FAIL  # perf: vllm serve never became healthy
    PORT_IN_USE = "port_in_use", Recovery.FAIL  # perf: the server's port was taken
    LOAD_GENERATOR_FAILED = "load_generator_failed", Recovery.FAIL  # perf: GuideLLM failed
    PERF_FAILED = "perf_failed", Recovery.FAIL  # perf: anything else in the perf stage
    JUDGE_FAILED = "judge_failed", Recovery.FAIL  # the LLM judge could not score (it retried already)
    DEPENDENCY_FAILED = "dependency_failed", Recovery.FAIL  # an upstream stage (or comparison side) failed

    def __new__(cls, value: str, recovery: Recovery):
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.recovery = recovery
        return obj

    def __str__(self) -> str:
        return self.value
