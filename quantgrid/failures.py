"""Failures a worker classifies itself, for the driver's scheduler (torch-free, both sides).

The driver cannot tell a vLLM engine that ran out of KV cache from a bug by reading a traceback
string, and it must not import vLLM to unpickle vLLM's own exception types. So the worker maps
what it sees to a failure class (workers/engine.py `classify_engine_error`) and raises a
StageFailure carrying it; orchestrator/driver.py `classify` takes the class as given.
"""

from __future__ import annotations


class StageFailure(RuntimeError):
    """A stage error with its failure class (`oom`, `engine_dead`, ...) decided where it happened."""

    def __init__(self, failure_class: str, message: str):
        super().__init__(message)
        self.failure_class = failure_class

    def __reduce__(self):  # Ray pickles exceptions: keep the class across the process boundary
        return (StageFailure, (self.failure_class, str(self)))
