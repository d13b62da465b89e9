"""vLLM's failures classified in its own words (workers/stages/engine.py), carried to the driver's classes."""

import pickle

import pytest

from quantgrid.failures import StageFailure
from workers.stages.engine import classify_engine_error, raise_classified


def _kv_shortage() -> ValueError:
    """The ValueError vLLM 0.32 itself raises when max_model_len's KV cache does not fit."""
    from vllm.v1.core.kv_cache_utils import _check_enough_kv_cache_memory

    with pytest.raises(ValueError) as e:
        _check_enough_kv_cache_memory(2**30, lambda: 2**32, 131072, lambda mem: 32768)
    return e.value


def _no_blocks() -> ValueError:
    from vllm.v1.core.kv_cache_utils import _check_enough_kv_cache_memory

    with pytest.raises(ValueError) as e:
        _check_enough_kv_cache_memory(0, lambda: 1, 2048, lambda mem: 0)
    return e.value


def test_vllms_kv_cache_shortage_and_dead_engine_have_classes():
    from vllm.v1.engine.exceptions import EngineDeadError

    assert classify_engine_error(_kv_shortage()) == "oom"
    assert classify_engine_error(_no_blocks()) == "oom"
    assert classify_engine_error(EngineDeadError()) == "engine_dead"
    assert (
        classify_engine_error(RuntimeError("Engine core initialization failed. See root cause above.")) == "engine_dead"
    )
    assert classify_engine_error(MemoryError()) == "oom"
    try:  # the cause chain is read: lm-eval wrapping vLLM's error keeps its class
        try:
            raise EngineDeadError()
        except EngineDeadError as inner:
            raise RuntimeError("generate failed") from inner
    except RuntimeError as outer:
        assert classify_engine_error(outer) == "engine_dead"
    assert classify_engine_error(ValueError("max_model_len must be positive")) is None
    assert classify_engine_error(KeyError("acc")) is None


def test_the_class_survives_pickling_and_the_driver_takes_it():
    import ray.exceptions as rex

    from orchestrator.execution.failures import classify

    with pytest.raises(StageFailure) as e:
        raise_classified(_kv_shortage())
    back = pickle.loads(pickle.dumps(e.value))
    assert back.failure_class == "oom" and "KV cache is needed" in str(back)
    wrapped = rex.RayTaskError("evaluate", "traceback", back)
    assert classify(wrapped.as_instanceof_cause())[0] == "oom"
    with pytest.raises(StageFailure) as dead:
        from vllm.v1.engine.exceptions import EngineDeadError

        raise_classified(EngineDeadError())
    assert classify(rex.RayTaskError("evaluate", "tb", dead.value).as_instanceof_cause())[0] == "engine_dead"
    raise_classified(KeyError("x"))  # nothing of vLLM's: left for the caller to re-raise as it was
