"""StageKind -> how the scheduler runs it: one row per kind, never an if/elif in the loop.

A stage's attempt is: `begin` (lease, then one call that builds or quantizes the artifact, or
opens the engine/encoder/server), then for scoring kinds one `score` call per cell, then `close`
where the kind holds something that must stop with the job (a `vllm serve` process), not when the
actor goes. Each call returns (phase, ObjectRef): the phase is the continuation the scheduler runs
on its result ("work": an artifact; "open": an engine; "eval": a cell's result; "close"). A
scoring call whose cell `continues` (an adaptive cell's batch, its verdict still open) is followed
by another `score` call for the same cell on the same engine.
A new stage kind is a row here and a method on the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from quantgrid.failures import FailureClass
from quantgrid.types import StageKind


class Unresolved(Exception):
    """The driver cannot give a stage its arguments (a mixed format without its sensitivity
    results): the attempt fails with `error_class` and this one-line message."""

    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class = error_class


# (actor, job, hooks, model, engine) -> (phase, ref)
Begin = Callable[[Any, Any, Any, Any, Any], tuple[str, Any]]
# (actor, job, hooks, cell) -> ref, or None when the cell was settled without a call
Score = Callable[[Any, Any, Any, Any], Any]


@dataclass(frozen=True)
class StageHandler:
    begin: Begin
    score: Score | None = None  # None: the begin call's result is the stage's whole outcome
    closes: bool = False  # call actor.close() when the cells are done
    # OOM fallbacks (resources.oom_fallbacks) reshape an engine: only kinds that open one take them.
    engine_fallbacks: bool = False
    # (job, hooks) -> True when the job was settled with no actor at all (the baseline "quantize").
    without_actor: Callable[[Any, Any], bool] | None = None


def _baseline(job, hooks) -> bool:
    if not job.stage.format.is_baseline:
        return False
    hooks.baseline_artifact(job)  # the base checkpoint itself
    return True


def _build(actor, job, hooks, model, engine):
    return "work", actor.build_model.remote(job.stage.model)


def _quantize(actor, job, hooks, model, engine):
    try:
        args = hooks.quantize_args(job)
    except Unresolved as e:  # a mixed format whose sensitivity results are missing: the actor says so
        return "work", actor.refuse.remote(e.error_class, str(e))
    return "work", actor.quantize.remote(*args)


def _open_engine(actor, job, hooks, model, engine):
    art, cal_hash = hooks.engine_args(job)
    return "open", actor.open_engine.remote(art, model, job.stage.format, engine or job.cells[0].engine, cal_hash)


def _evaluate(actor, job, hooks, cell):
    hooks.cell_started(cell)
    docs = hooks.next_documents(cell)  # an adaptive cell's next batch; None = all its documents
    return actor.evaluate.remote(cell) if docs is None else actor.evaluate.remote(cell, docs)


def _open_encoder(actor, job, hooks, model, engine):
    return "open", actor.open_encoder.remote(job.cells[0].encoder)


def _compare(actor, job, hooks, cell):
    pairs, why = hooks.comparison_pairs(cell)
    if pairs is None:  # a side of the comparison has no result: nothing to score
        hooks.fail_cells(job, [cell], FailureClass.DEPENDENCY_FAILED.value, why)
        return None
    hooks.cell_started(cell)
    return actor.compare.remote(cell, pairs)


def _open_server(actor, job, hooks, model, engine):
    art, _ = hooks.engine_args(job)
    server = hooks.settings.perf_server
    return "open", actor.open_server.remote(art, model, job.stage.format, job.cells[0].engine, server)


def _benchmark(actor, job, hooks, cell):
    hooks.cell_started(cell)
    return actor.benchmark.remote(cell)


def _open_sensitivity(actor, job, hooks, model, engine):
    base = hooks.base_artifact(job)
    return "open", actor.open_sensitivity.remote(base, job.stage.model, job.cells[0].settings)


def _sensitivity(actor, job, hooks, cell):
    hooks.cell_started(cell)
    return actor.sensitivity.remote(cell)


STAGES: dict[StageKind, StageHandler] = {
    StageKind.BUILD_MODEL: StageHandler(_build),
    StageKind.QUANTIZE: StageHandler(_quantize, without_actor=_baseline),
    StageKind.EVALUATE: StageHandler(_open_engine, _evaluate, engine_fallbacks=True),
    StageKind.SIMILARITY: StageHandler(_open_encoder, _compare),
    StageKind.PERF: StageHandler(_open_server, _benchmark, closes=True),
    StageKind.SENSITIVITY: StageHandler(_open_sensitivity, _sensitivity),
}
