"""Adaptive paired scoring through the real driver, scheduler and ledger, without Ray (the fake
actor API and clock of test_scheduler.py): batches in a seeded order shared by the formats, the
verdict stops the cell early, every batch is committed, and a retried or resumed cell continues
from its last committed batch."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from orchestrator.execution.adaptive import document_order
from orchestrator.planning.placement import NodeShape
from quantgrid.settings import Adaptive
from quantgrid.types import SampleRecord, TaskResult
from tests.orchestrator.execution.test_scheduler import _Clock, _FakeRay
from tests.support.sleep_worker import SleepWorker

N_DOCS = 400
P_BASE = 0.6


def _baseline_value(task: str, doc: int) -> float:
    return float(np.random.default_rng([doc, len(task)]).random() < P_BASE)


class StreamWorker(SleepWorker):
    """Per-document 0/1 scores: the baseline's from a seeded stream, a quantized format's equal to
    the baseline's except on the documents `flip` says (so its true recovery is known)."""

    calls: list[tuple[str, str, list[int] | None]] = []
    flip = staticmethod(lambda fmt, doc: False)

    def evaluate(self, cell, documents=None):
        StreamWorker.calls.append((cell.format.name, cell.task.name, documents))
        docs = list(range(N_DOCS)) if documents is None else list(documents)
        samples = []
        for d in docs:
            y = _baseline_value(cell.task.name, d)
            x = 1.0 - y if cell.format.name != "bf16" and StreamWorker.flip(cell.format.name, d) else y
            samples.append(SampleRecord(doc_id=d, target="", response="", metrics={"acc": x}))
        return TaskResult(
            cell_key=cell.key,
            model=cell.model.name,
            format=cell.format.name,
            task=cell.task.name,
            metrics={"acc,none": float(np.mean([s.metrics["acc"] for s in samples]))},
            samples=samples,
            num_samples=len(docs),
            seconds=0.5,
            provenance={"synthetic": True},
            primary_metric="acc,none",
            tokens={"prompt": 10 * len(docs)},
        )


def _run(tmp_path, monkeypatch, adaptive: Adaptive, on_call=None):
    from orchestrator.execution import driver as driver_mod
    from orchestrator.execution import scheduler as sched_mod
    from orchestrator.execution.driver import Driver
    from orchestrator.execution.scheduler import Scheduler
    from orchestrator.planning.plan import expand
    from orchestrator.planning.policy import PlacementPolicy
    from orchestrator.store.ledger import Ledger
    from orchestrator.store.results import RunStore
    from quantgrid.settings import Resources
    from tests.support.synthetic_sweeps import wide_sweep

    clock = _Clock()
    monkeypatch.setattr(sched_mod, "time", clock)
    monkeypatch.setattr(driver_mod, "time", clock)
    sweep = wide_sweep(models=1, recipes=2, tasks=2, seeds=1, seed=3)  # bf16 + r000 x 2 tasks
    res = Resources.of({"cpus_per_actor": 1, "data_parallel": "off", "reuse_actors": False, "lease_s": 20})
    sweep = replace(
        sweep,
        run_dir=tmp_path,
        resources=res,
        synthetic=True,
        adaptive=adaptive,
        engine=replace(sweep.engine, accelerator="cpu", batch_size="auto"),
    )
    plan = expand(sweep)
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.open_sweep(plan.sweep.name, [], [], plan.cells)
    nodes = [NodeShape(4, 0, 0, "")]
    events = []
    drv = Driver(
        plan,
        RunStore(tmp_path),
        progress=lambda e, **i: events.append((e, i)),
        ledger=ledger,
        worker=(StreamWorker, ("", {}, 0.0, 0.0)),
        nodes=nodes,
        run_dir=tmp_path,
    )
    drv.policy = PlacementPolicy(nodes, res)
    s = Scheduler(drv, drv.policy.jobs(plan.stages, drv.todo), nodes)
    s.ray = _FakeRay(clock, on_call=on_call)
    s.run()
    return plan, drv, ledger, events


def _results(ledger, name="synthetic"):
    return {(r["format"], r["task"]): r for r in ledger.results(name)}


def test_a_clear_cell_stops_early_in_batches_of_the_shared_order(tmp_path, monkeypatch):
    StreamWorker.calls = []
    StreamWorker.flip = staticmethod(lambda fmt, doc: False)  # recovery 1.0 vs a target of 0.9
    a = Adaptive(enabled=True, target="recovery", value=0.9, alpha=0.05, batch_documents=25, seed=7)
    plan, drv, ledger, _ = _run(tmp_path, monkeypatch, a)
    adaptive = [c for c in plan.cells if c.task.adaptive]
    assert {c.format.name for c in adaptive} == {"r000"}  # the baseline is scored whole
    assert len({c.key for c in plan.cells}) == len(plan.cells)
    res = _results(ledger)
    for task in ("t000", "t001"):
        calls = [d for f, t, d in StreamWorker.calls if f == "r000" and t == task]
        order = document_order(list(range(N_DOCS)), 7, task, plan.cells[0].seed)
        # batch k = documents [25k, 25k + 25) of the seeded order, on the same engine (one load)
        assert calls == [order[25 * k : 25 * k + 25] for k in range(len(calls))]
        rec = res[("r000", task)]
        v = rec["provenance"]["adaptive"]
        assert v["verdict"] == "above" and v["documents"] == 25 * len(calls) < N_DOCS
        assert v["saved"] == N_DOCS - v["documents"] and v["low"] > 0  # CS on E[x - 0.9 y] above 0
        assert rec["num_samples"] == v["documents"] and rec["metrics"]["adaptive_verdict"] == 1.0
        scored = [d for c in calls for d in c]
        want = np.mean([_baseline_value(task, d) for d in scored])
        assert abs(rec["metrics"]["acc,none"] - want) < 1e-12  # recomputed from the merged samples
        assert rec["tokens"] == {"prompt": 10 * v["documents"]}
        batches = ledger.batches("synthetic", rec["cell_key"])
        assert [b["batch"] for b in batches] == list(range(len(calls)))
        assert all(b["samples"] == [] for b in batches)  # dropped once the merged result is committed
        assert [b["verdict"]["verdict"] for b in batches][-1] == "above"
        assert all(b["verdict"]["verdict"] == "undecided" for b in batches[:-1])
    # the baseline: one whole call per task, before any batch
    base_calls = [i for i, (f, _, d) in enumerate(StreamWorker.calls) if f == "bf16"]
    assert all(StreamWorker.calls[i][2] is None for i in base_calls)
    assert max(base_calls) < min(i for i, (f, _, _) in enumerate(StreamWorker.calls) if f == "r000")
    rows = {(r["format"], r["task"]): r for r in ledger.adaptive("synthetic")}
    assert set(rows) == {("r000", "t000"), ("r000", "t001")} and rows[("r000", "t000")]["verdict"] == "above"
    # status, report and the MLflow report metrics say the same
    from rich.console import Console

    from orchestrator.monitor.status import status_view
    from orchestrator.report import verdicts

    console = Console(record=True, width=200)
    console.print(status_view(ledger, "synthetic")[0])
    text = console.export_text()
    used = sum(r["documents"] for r in rows.values())
    assert "adaptive verdicts" in text and f"adaptive: {used} of {2 * N_DOCS} documents scored" in text
    vrows = verdicts.rows(ledger.results("synthetic"))
    assert [(r["format"], r["task"], r["verdict"]) for r in vrows] == [
        ("r000", "t000", "above"),
        ("r000", "t001", "above"),
    ]
    md = verdicts.to_markdown(vrows, "bf16")
    assert "recovery ≥ 0.9 × bf16" in md and f"{used:,} of {2 * N_DOCS:,} documents" in md


def test_a_degraded_cell_is_below_and_an_unclear_one_runs_out_undecided(tmp_path, monkeypatch):
    StreamWorker.calls = []
    # t000: every other baseline-correct doc flipped (recovery ~0.5): below. t001: max 50 documents.
    StreamWorker.flip = staticmethod(lambda fmt, doc: doc % 2 == 0)
    a = Adaptive(enabled=True, value=0.99, batch_documents=50, max_documents=100, tasks=("t000", "t001"))
    plan, drv, ledger, _ = _run(tmp_path, monkeypatch, a)
    res = _results(ledger)
    v0 = res[("r000", "t000")]["provenance"]["adaptive"]
    assert v0["verdict"] in ("below", "undecided") and v0["max_documents"] == 100
    if v0["verdict"] == "below":
        assert v0["documents"] <= 100 and v0["high"] < 0  # CS on E[x - 0.99 y] below 0
    else:
        assert v0["documents"] == 100 and v0["saved"] == 0
    assert all(d is not None and len(d) <= 50 for f, _, d in StreamWorker.calls if f == "r000")


def test_a_lost_attempt_and_a_restarted_driver_continue_from_the_last_batch(tmp_path, monkeypatch):
    from orchestrator.store.ledger import Ledger

    StreamWorker.calls = []
    StreamWorker.flip = staticmethod(lambda fmt, doc: False)
    a = Adaptive(enabled=True, value=0.9, batch_documents=20, seed=1)
    state = {"batches": 0, "killed": False}

    def kill_at_third_batch(ray, actor, name, args):
        # The actor dies during r000's third batch: the retry scores that batch again, not 0 and 1.
        if name == "evaluate" and args[0].format.name == "r000" and len(args) > 1:
            state["batches"] += 1
            if state["batches"] == 3 and not state["killed"]:
                state["killed"] = args[1]  # never scored: the actor is gone before it returns
                actor.dies_at = ray.clock.now + 0.1

    _, _, ledger, events = _run(tmp_path, monkeypatch, a, on_call=kill_at_third_batch)
    calls = [d for f, t, d in StreamWorker.calls if f == "r000" and t == "t000"]
    assert state["killed"] and any(e == "retry" for e, _ in events)
    order = document_order(list(range(N_DOCS)), 1, "t000", 0)  # wide_sweep seeds: [0]
    # batches 0 and 1 on the first actor; the lost batch 2 is the retry's first call, not batch 0
    assert calls[2] == state["killed"] == order[40:60]
    assert calls == [order[20 * k : 20 * k + 20] for k in range(len(calls))]
    rec = _results(ledger)[("r000", "t000")]
    assert rec["provenance"]["adaptive"]["verdict"] == "above"
    assert len(ledger.batches("synthetic", rec["cell_key"])) == len(calls)
    ledger.close()

    # A driver that stopped mid-cell: a fresh one continues from the ledger's batches.
    run2 = tmp_path / "second"
    run2.mkdir()
    StreamWorker.calls = []
    stop = {"n": 0}

    def stop_driver(ray, actor, name, args):
        if name == "evaluate" and args[0].format.name == "r000" and len(args) > 1:
            stop["n"] += 1
            if stop["n"] == 3:  # two batches committed, the third never comes back
                Ledger(run2 / "ledger.db").set_sweep_state("synthetic", "cancelled")

    _run(run2, monkeypatch, a, on_call=stop_driver)
    first = [d for f, t, d in StreamWorker.calls if f == "r000"]
    led = Ledger(run2 / "ledger.db")
    key = next(c["cell_key"] for c in led.cells("synthetic") if c["format"] == "r000" and c["state"] != "done")
    done_batches = led.batches("synthetic", key)
    assert len(done_batches) >= 1
    led.close()
    StreamWorker.calls = []
    _run(run2, monkeypatch, a)
    task = next(c["task"] for c in Ledger(run2 / "ledger.db").cells("synthetic") if c["cell_key"] == key)
    again = [d for f, t, d in StreamWorker.calls if f == "r000" and t == task]
    scored_before = [d for b in done_batches for d in b["documents"]]
    assert first and not set(again[0]) & set(scored_before)  # continues after the committed batches
    final = Ledger(run2 / "ledger.db")
    rec = {r["cell_key"]: r for r in final.results("synthetic")}[key]
    assert rec["provenance"]["adaptive"]["documents"] == len(scored_before) + sum(len(d) for d in again)
    assert all(c["state"] == "done" for c in final.cells("synthetic"))


def test_adaptive_settings_refuse_bad_input_in_one_line():
    import pytest

    from quantgrid.errors import ConfigError

    assert not Adaptive.of(None).enabled and Adaptive.of(True).enabled
    assert Adaptive.of({"value": 0.95, "batch_documents": 8}) == Adaptive(enabled=True, value=0.95, batch_documents=8)
    for bad, says in (
        ({"margin": 1}, "sweep.adaptive.margin: unknown setting"),
        ({"target": "ratio"}, "must be recovery or difference"),
        ({"value": 1.5}, "sweep.adaptive.value must be a number in (0, 1)"),
        ({"alpha": 0}, "sweep.adaptive.alpha must be a number in (0, 1)"),
        ({"batch_documents": 0}, "sweep.adaptive.batch_documents must be an integer >= 1"),
        ({"tasks": "mmlu"}, "sweep.adaptive.tasks must be a list"),
        ("yes", "sweep.adaptive must be true, false or a mapping"),
    ):
        with pytest.raises(ConfigError, match=re.escape(says)):
            Adaptive.of(bad)
    assert Adaptive.eligible("acc,none", True, "lm_eval") == ""
    assert "not a per-document score" in Adaptive.eligible("word_perplexity,none", False, "lm_eval")
    assert "scored by arena_hard" in Adaptive.eligible("score,none", True, "arena_hard")
