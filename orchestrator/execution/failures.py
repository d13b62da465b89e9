"""What a stage error is, for the scheduler: Ray's exceptions and the workers' own classes mapped
to a FailureClass (quantgrid/failures.py), whose Recovery says retry, fall back or fail."""

from __future__ import annotations

from orchestrator.config.loader import ConfigError, one_line
from quantgrid.checkpoint import CheckpointError
from quantgrid.failures import FailureClass, Recovery


def recovery_of(failure_class: str) -> Recovery:
    """A class this version does not know (a newer worker's) fails its cell: never retried blindly."""
    try:
        return FailureClass(failure_class).recovery
    except ValueError:
        return Recovery.FAIL


def classify(exc: BaseException) -> tuple[str, str]:
    """(failure class, one-line message) for a stage error, as the ledger will record it."""
    import ray.exceptions as rex

    cause = exc
    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
    # RayActorError covers ActorUnavailableError too: what a call in flight gets when its actor's
    # node goes away ("RpcError: Socket closed ... may or may not have been executed"), before
    # the GCS has declared the node dead. The attempt is given up and retried either way; a late
    # result, if the actor was only cut off, is fenced by the ledger.
    if isinstance(exc, (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError)):
        return FailureClass.ACTOR_DIED.value, one_line(exc, last=True)
    if isinstance(exc, rex.OutOfMemoryError) or isinstance(cause, MemoryError) or "out of memory" in str(cause).lower():
        return FailureClass.OOM.value, one_line(cause)
    if isinstance(exc, rex.GetTimeoutError):
        return FailureClass.TIMEOUT.value, one_line(exc)
    if isinstance(cause, (CheckpointError, ConfigError)):
        return FailureClass.BAD_INPUT.value, one_line(cause)
    if isinstance(
        getattr(cause, "failure_class", None), str
    ):  # a worker's own class (workers/stages/perf.py, judge.py, engine.py)
        return cause.failure_class, one_line(cause)
    if cause is exc and isinstance(exc, rex.RayTaskError):  # no cause object: the text ends with it
        return FailureClass.ERROR.value, one_line(exc, last=True)
    return FailureClass.ERROR.value, f"{type(cause).__name__}: {one_line(cause)}"
