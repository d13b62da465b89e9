"""The StageKind -> handler table: every kind has a row, and every call a row makes is a method
both worker classes (the real StageWorker and the sleep-worker) define."""

import ast
from pathlib import Path
from types import SimpleNamespace

from orchestrator.execution.stages import STAGES
from quantgrid.settings import ServeSettings
from quantgrid.types import StageKind

ROOT = Path(__file__).resolve().parents[3]


def _methods(path: Path, cls: str) -> set[str]:
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    return {f.name for f in node.body if isinstance(f, ast.FunctionDef)}


class _Recorder:
    """An actor handle that records `actor.<method>.remote(...)` calls."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return SimpleNamespace(remote=lambda *a, **k: self.calls.append(name) or f"ref:{name}")


class _Hooks:
    def __init__(self, pairs=([(0, "a", "b")], "")):
        self.pairs, self.failed, self.started, self.baseline = pairs, [], [], []
        self.settings = SimpleNamespace(perf_server=ServeSettings())

    def quantize_args(self, job):
        return ("model", "format")

    def engine_args(self, job):
        return "artifact", "calibration-hash"

    def comparison_pairs(self, cell):
        return self.pairs

    def cell_started(self, cell):
        self.started.append(cell)

    def fail_cells(self, job, cells, cls, msg):
        self.failed.append((cells, cls))

    def baseline_artifact(self, job):
        self.baseline.append(job)

    def next_documents(self, cell):
        return None

    def base_artifact(self, job):
        return "base-artifact"


def _job(kind, baseline=False):
    cell = SimpleNamespace(engine="engine", encoder="encoder", settings={"documents": 2})
    stage = SimpleNamespace(model="model", format=SimpleNamespace(is_baseline=baseline))
    return SimpleNamespace(kind=kind, stage=stage, cells=[cell])


def test_every_stage_kind_has_a_row_whose_calls_both_workers_define():
    assert set(STAGES) == set(StageKind)
    real = _methods(ROOT / "workers" / "actor.py", "StageWorker")
    sleep = _methods(ROOT / "tests" / "support" / "sleep_worker.py", "SleepWorker")
    for kind, handler in STAGES.items():
        actor, hooks, job = _Recorder(), _Hooks(), _job(kind)
        phase, ref = handler.begin(actor, job, hooks, "model", None)
        assert phase in ("work", "open") and ref == f"ref:{actor.calls[-1]}"
        assert (phase == "open") == (handler.score is not None), kind  # scoring kinds open something first
        if handler.score:
            assert handler.score(actor, job, hooks, job.cells[0]) == f"ref:{actor.calls[-1]}"
            assert hooks.started == [job.cells[0]]  # the ledger hears of a cell before its call goes out
        if handler.closes:
            actor.close.remote()
        assert actor.calls and set(actor.calls) <= real & sleep, (kind, actor.calls)


def test_a_comparison_with_a_missing_side_is_failed_without_a_call():
    actor, hooks, job = _Recorder(), _Hooks(pairs=(None, "the baseline's cell failed")), _job(StageKind.SIMILARITY)
    assert STAGES[StageKind.SIMILARITY].score(actor, job, hooks, job.cells[0]) is None
    assert actor.calls == [] and hooks.failed == [([job.cells[0]], "dependency_failed")] and hooks.started == []


def test_only_the_baseline_quantize_runs_without_an_actor_and_only_engines_take_oom_fallbacks():
    hooks = _Hooks()
    without = STAGES[StageKind.QUANTIZE].without_actor
    assert without(_job(StageKind.QUANTIZE, baseline=True), hooks) and len(hooks.baseline) == 1
    assert not without(_job(StageKind.QUANTIZE), hooks) and len(hooks.baseline) == 1
    assert [k for k, h in STAGES.items() if h.without_actor] == [StageKind.QUANTIZE]
    assert [k for k, h in STAGES.items() if h.engine_fallbacks] == [StageKind.EVALUATE]


def test_a_stage_without_its_arguments_fails_on_its_actor():
    """A mixed format whose sensitivity has no result: the driver raises Unresolved, the actor's
    `refuse` call fails the attempt with that class and line (classified like any failure)."""
    from orchestrator.execution.stages import Unresolved

    class Missing(_Hooks):
        def quantize_args(self, job):
            raise Unresolved("dependency_failed", "quantize/m/mixed-5b: the sensitivity of m to w4 has no result")

    actor = _Recorder()
    phase, ref = STAGES[StageKind.QUANTIZE].begin(actor, _job(StageKind.QUANTIZE), Missing(), "model", None)
    assert (phase, ref, actor.calls) == ("work", "ref:refuse", ["refuse"])
