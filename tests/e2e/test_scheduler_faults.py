"""Scheduler fault handling with real Ray actor processes (sleep-workers, no vLLM): a paused
actor's late result is rejected, an injected OOM takes the fallback, a hang hits its timeout,
deterministic errors fail only their cell or format. The real-stack kill -9, driver-kill and
cancel paths are in test_actor_kill / test_resume / test_cancel."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.synthetic_sweeps import wide_sweep
from orchestrator.execution.driver import Driver
from orchestrator.store.ledger import Ledger
from orchestrator.planning.plan import expand
from quantgrid.settings import Perf, Resources, Similarity
from tests.support.sleep_worker import SleepWorker


class NullSink:
    def __getattr__(self, name):
        return lambda *a, **k: None


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=True,
        logging_level="ERROR",
    )
    yield
    ray.shutdown()


def _plan(tmp_path, recipes, tasks, seconds, similarity=None, perf=None, **resources):
    sweep = wide_sweep(models=1, recipes=recipes, tasks=tasks, seeds=1, seed=3)
    res = {"cpus_per_actor": 1, "data_parallel": "off", "reuse_actors": True, "max_retries": 2, **resources}
    sweep = replace(
        sweep,
        run_dir=tmp_path,
        resources=Resources.of(res),
        synthetic=True,
        engine=replace(sweep.engine, accelerator="cpu", batch_size="auto"),
        similarity=Similarity(tuple(similarity or ())),
        perf=perf or Perf(),
    )
    plan = expand(sweep)
    secs = {c.key: seconds.get(c.task.name, 0.2) for c in plan.cells}
    return plan, secs


def _run(plan, secs, events):
    ledger = Ledger(Path(plan.sweep.run_dir) / plan.sweep.name / "ledger.db")
    ledger.open_sweep(plan.sweep.name, [], [], [*plan.cells, *plan.comparisons, *plan.perf_cells])
    drv = Driver(
        plan,
        NullSink(),
        progress=lambda e, **i: events.append((e, i)),
        ledger=ledger,
        worker=(SleepWorker, ("", secs, 1.0, 0.0)),
    )
    return drv.run()


def _db(plan):
    return sqlite3.connect(Path(plan.sweep.run_dir) / plan.sweep.name / "ledger.db", timeout=5)


def test_actor_paused_past_its_lease_has_its_late_result_rejected(tmp_path, ray_local):
    plan, secs = _plan(tmp_path, 1, 2, {"t000": 4.0, "t001": 0.5}, lease_s=2, stage_timeout_s=60)
    events: list = []
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("summary", _run(plan, secs, events)))
    th.start()
    pid, deadline = None, time.time() + 60
    while pid is None and time.time() < deadline:
        time.sleep(0.1)
        try:
            with _db(plan) as db:
                row = db.execute(
                    "SELECT a.worker_pid FROM attempts a JOIN cells c ON c.state='running' "
                    "WHERE a.state='leased' AND a.worker_pid IS NOT NULL"
                ).fetchone()
            pid = row[0] if row else None
        except sqlite3.Error:
            pass
    if pid is None:
        with _db(plan) as db:
            dump = (db.execute("SELECT * FROM attempts").fetchall(), db.execute("SELECT state FROM cells").fetchall())
    assert pid, f"no attempt started scoring: {dump} {events}"
    time.sleep(0.5)
    os.kill(pid, signal.SIGSTOP)  # mid-evaluation of t000
    try:
        while time.time() < deadline:
            with _db(plan) as db:
                if db.execute("SELECT COUNT(*) FROM attempts WHERE state='given_up'").fetchone()[0]:
                    break
            time.sleep(0.1)
    finally:
        os.kill(pid, signal.SIGCONT)  # the paused actor resumes and delivers its (late) result
    th.join(timeout=120)
    summary = out["summary"]
    with _db(plan) as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM cells GROUP BY state").fetchall())
        results = db.execute("SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM results").fetchone()
        given_up = db.execute("SELECT failure_class FROM attempts WHERE state='given_up'").fetchall()
        rejected = db.execute("SELECT reason FROM rejected").fetchall()
    assert states == {"done": 2} and results == (2, 2)  # 0 lost, 0 duplicated
    assert given_up == [("lease_expired",)]
    assert rejected == [("attempt given_up",)] and summary.rejected == 1
    assert any(e == "rejected" for e, _ in events)


def test_oom_fallback_hang_timeout_and_deterministic_errors(tmp_path, ray_local, monkeypatch):
    plan, secs = _plan(tmp_path, 3, 5, {}, stage_timeout_s=3, lease_s=30)
    model = plan.sweep.models[0].name
    faults = [
        {"at": "evaluate", "match": f"{model}/bf16/t001", "fault": "oom", "times": 1},
        {"at": "evaluate", "match": f"{model}/bf16/t002", "fault": "error", "times": 1},
        {"at": "evaluate", "match": f"{model}/bf16/t003", "fault": "hang", "times": 1},
        {"at": "quantize", "match": f"{model}/r001", "fault": "error", "times": 1},
    ]
    monkeypatch.setenv("QUANTGRID_FAULTS", json.dumps(faults))
    monkeypatch.setenv("QUANTGRID_FAULTS_DIR", str(tmp_path / "faults"))
    events: list = []
    summary = _run(plan, secs, events)
    with _db(plan) as db:
        cells = {
            (f, t): (s, cls) for f, t, s, cls in db.execute("SELECT format, task, state, failure_class FROM cells")
        }
        attempts = db.execute(
            "SELECT stage, state, failure_class, fallback FROM attempts WHERE stage LIKE 'evaluate/%/bf16' "
            "ORDER BY token"
        ).fetchall()
        records = {
            json.loads(r)["task"]: json.loads(r)
            for (r,) in db.execute(
                "SELECT record FROM results WHERE cell_key IN (SELECT cell_key FROM cells WHERE format='bf16')"
            )
        }
    # deterministic: only that cell, and only that format, fail; everything else is scored
    assert cells[("bf16", "t002")] == ("failed", "error")
    assert {v for (f, _), v in cells.items() if f == "r001"} == {("failed", "error")}
    assert {v for k, v in cells.items() if k != ("bf16", "t002") and k[0] != "r001"} == {("done", None)}
    # OOM: the group's next attempt runs with the first fallback, recorded in the ledger
    assert attempts[0][1:] == ("given_up", "oom", None)
    assert json.loads(attempts[1][3]) == {"steps": ["halve_batch_size"]}
    assert records["t001"]["provenance"]["engine"]["batch_size"] == 16
    assert records["t000"]["provenance"]["engine"]["batch_size"] == "auto"
    # ... and in the result itself: which steps, and whether one of them can change the score
    assert records["t001"]["provenance"]["oom_fallback"] == {"steps": ["halve_batch_size"], "may_change_scores": False}
    assert "oom_fallback" not in records["t000"]["provenance"]  # scored before the OOM, on the original engine
    # hang: past stage_timeout_s the attempt is given up and the rest retried
    assert attempts[1][1:3] == ("given_up", "timeout") and attempts[2][1] == "finished"
    assert any(e == "fallback" for e, _ in events) and any(
        e == "retry" and i["error_class"] == "timeout" for e, i in events
    )
    assert len(summary.failed) == 2


def test_similarity_runs_after_both_groups_and_fails_only_where_a_side_failed(tmp_path, ray_local, monkeypatch):
    plan, secs = _plan(tmp_path, 3, 2, {}, similarity=["t000", "t001"])  # bf16, r000, r001
    model = plan.sweep.models[0].name
    monkeypatch.setenv(
        "QUANTGRID_FAULTS", json.dumps([{"at": "evaluate", "match": f"{model}/r000/t001", "fault": "error"}])
    )
    monkeypatch.setenv("QUANTGRID_FAULTS_DIR", str(tmp_path / "faults"))
    summary = _run(plan, secs, [])
    with _db(plan) as db:
        cells = {
            (f, t): (s, cls) for f, t, s, cls in db.execute("SELECT format, task, state, failure_class FROM cells")
        }
        spans = {
            stage: (start, end) for stage, start, end in db.execute("SELECT stage, started, finished FROM attempts")
        }
    assert cells[("r000", "t001")] == ("failed", "error")
    assert cells[("r000", "t001.similarity")] == ("failed", "dependency_failed")  # its generations are missing
    assert cells[("r000", "t000.similarity")] == ("done", None)
    assert cells[("r001", "t000.similarity")] == cells[("r001", "t001.similarity")] == ("done", None)
    assert ("bf16", "t000.similarity") not in cells  # the baseline is not compared with itself
    for fmt in ("r000", "r001"):  # after the baseline's group and its own
        sim_start = spans[f"similarity/{model}/{fmt}"][0]
        assert sim_start >= spans[f"evaluate/{model}/bf16"][1] and sim_start >= spans[f"evaluate/{model}/{fmt}"][1]
    assert summary.engine_loads == {f"{model}/{f}/seed{plan.sweep.seeds[0]}": 1 for f in ("bf16", "r000", "r001")}


def test_perf_server_failure_fails_its_cells_with_the_class_and_the_sweep_goes_on(tmp_path, ray_local, monkeypatch):
    from quantgrid.types import LoadSettings, PerfScenario

    perf = Perf(scenarios=(PerfScenario("chat", 16, 8), PerfScenario("rag", 64, 4)), load=LoadSettings())
    plan, secs = _plan(tmp_path, 3, 1, {}, perf=perf)
    model = plan.sweep.models[0].name
    monkeypatch.setenv(
        "QUANTGRID_FAULTS",
        json.dumps(
            [
                {"at": "open_server", "match": f"{model}/r000", "fault": "server_unhealthy"},
                {"at": "benchmark", "match": f"{model}/r001/rag", "fault": "load_generator_failed"},
            ]
        ),
    )
    monkeypatch.setenv("QUANTGRID_FAULTS_DIR", str(tmp_path / "faults"))
    summary = _run(plan, secs, [])
    with _db(plan) as db:
        cells = {
            (f, t): (s, cls) for f, t, s, cls in db.execute("SELECT format, task, state, failure_class FROM cells")
        }
        msgs = dict(db.execute("SELECT format || '/' || task, failure FROM cells WHERE state='failed'").fetchall())
    assert cells[("r000", "chat.perf")] == cells[("r000", "rag.perf")] == ("failed", "server_unhealthy")
    assert "injected server_unhealthy in open_server" in msgs["r000/chat.perf"]
    assert cells[("r001", "rag.perf")] == ("failed", "load_generator_failed")  # only that scenario
    assert cells[("r001", "chat.perf")] == cells[("bf16", "chat.perf")] == cells[("bf16", "rag.perf")] == ("done", None)
    assert {v for (f, t), v in cells.items() if not t.endswith(".perf")} == {("done", None)}  # evaluation unaffected
    assert len(summary.failed) == 2
