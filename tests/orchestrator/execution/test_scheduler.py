"""Scheduler bookkeeping against the cluster as Ray reports it, without a Ray cluster: a
placement group's real bundle -> node map and a node that dies (ray's calls are stood in for)."""

import json
from types import SimpleNamespace

import pytest

from orchestrator.planning.placement import Bundle, ClusterState, NodeShape
from orchestrator.execution.scheduler import Attempt, Scheduler


class _Driver:
    def __init__(self):
        self.events = []

    def emit(self, event, **info):
        self.events.append((event, info))


def _scheduler(nodes):
    s = Scheduler.__new__(Scheduler)  # the bookkeeping under test needs no Ray and no plan
    s.state = ClusterState(nodes)
    s.nodes = s.state.nodes
    s.drv = _Driver()
    s.running, s.zombies, s.refs, s.ready = [], [], {}, SimpleNamespace(push=lambda job: s.requeued.append(job))
    s.requeued, s.killed, s.retried = [], [], []
    s._kill = lambda actor, placement, pg=None, att=None: (
        s.killed.append(att),
        s.state.release(placement),
        att in s.running and s.running.remove(att),
    )
    s._retry = lambda job, cells, cls, msg: s.retried.append((job, cls, msg))
    return s


def test_a_ready_placement_group_is_charged_on_the_nodes_ray_chose(monkeypatch):
    import importlib

    pgmod = importlib.import_module("ray.util.placement_group")  # the module (ray.util also exports the function)

    nodes = [NodeShape(64, 8, 0, f"n{i}") for i in range(3)]
    s = _scheduler(nodes)
    planned = (Bundle(0, 8, 16), Bundle(1, 8, 0))
    for b in planned:
        s.state.free[b.node][0] -= b.gpus
        s.state.free[b.node][1] -= b.cpus
    bundles = [{"GPU": 1, "CPU": 16}] + [{"GPU": 1}] * 15
    pg = SimpleNamespace(bundle_specs=bundles)
    monkeypatch.setattr(
        pgmod,
        "placement_group_table",
        lambda g: {"bundles_to_node_id": {k: "n2" if k < 8 else "n0" for k in range(16)}},
    )
    att = Attempt(job=SimpleNamespace(name="evaluate/405b/bf16"), actor=None, placement=planned, pg=pg)
    s._adopt_placement(att)
    assert att.placement == (Bundle(2, 8, 16, 0.0), Bundle(0, 8, 0, 0.0)) and att.node_ids == "n2,n0"
    assert s.state.free == [[0, 64, 0], [8, 64, 0], [0, 48, 0]]
    assert s.drv.events == [("placement", {"stage": "evaluate/405b/bf16", "planned": [0, 1], "actual": [2, 0]})]
    same = Attempt(job=SimpleNamespace(name="x"), actor=None, placement=(Bundle(1, 0, 2),))
    s._adopt_placement(same)  # an actor pinned to its node: nothing to adopt
    assert same.node_ids == "n1" and len(s.drv.events) == 1


def test_a_dead_node_gets_no_work_and_its_waiting_actor_is_retried_now():
    nodes = [NodeShape(2, 0, 0, "a"), NodeShape(2, 0, 0, "b")]
    s = _scheduler(nodes)
    waiting = Attempt(
        job=SimpleNamespace(name="evaluate/m/f"),
        actor=None,
        placement=s.state.allocate(s_d := _d(2)),
        cells=["c1", "c2"],
        phase="begin",
    )
    working = Attempt(
        job=SimpleNamespace(name="evaluate/m/g"), actor=None, placement=s.state.allocate(s_d), phase="eval"
    )
    s.running = [waiting, working]
    assert {waiting.placement[0].node, working.placement[0].node} == {0, 1}
    dead = waiting.placement[0].node
    s.ray = SimpleNamespace(
        nodes=lambda: [
            {"Alive": n.node_id != nodes[dead].node_id, "NodeID": n.node_id, "Resources": {"CPU": 2}} for n in nodes
        ]
    )
    s._refresh_nodes()
    assert s.killed == [waiting] and s.running == [working]  # the working one fails on its own call
    assert [(cls, msg) for _, cls, msg in s.retried] == [
        ("actor_died", f"node {nodes[dead].node_id} died before the actor started")
    ]
    assert ("node", {"state": "lost", "node": nodes[dead].node_id}) in s.drv.events
    assert s.state.allocate(_d(2)) is None and s.state.dead == {dead}  # nothing placed there again


def _d(cpus):
    from orchestrator.planning.placement import Demand

    return Demand(cpus=cpus)


@pytest.mark.parametrize("injected", [[NodeShape(2, 0)]])
def test_a_simulated_cluster_is_never_asked_to_ray(injected):
    s = _scheduler(injected)
    s.ray = SimpleNamespace(nodes=lambda: pytest.fail("ray.nodes() called for a cluster without node ids"))
    s._refresh_nodes()


# -- the event loop without Ray: a fake actor API on a fake clock ------------------------------
# The real Scheduler, Driver, policy and SQLite ledger; only Ray's calls (remote actors, wait,
# get, kill, nodes) and the clock are stood in for. A call takes virtual seconds, so lease
# expiry, retries, OOM fallbacks, cancellation and zombie fencing each run in milliseconds.


class _Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def time(self):
        return self.now

    monotonic = time  # the driver's cancel check is throttled on it


class _Ref:
    def __init__(self, actor, name, args, ready_at):
        self.actor, self.name, self.args, self.ready_at = actor, name, args, ready_at


class _Actor:
    def __init__(self, ray, instance):
        self.ray, self.instance, self.busy_until = ray, instance, ray.clock.now
        self.paused_from = self.paused_until = 0.0  # SIGSTOPped between: no call (heartbeat included) completes
        self.dies_at = None  # the process (or its node) goes away then
        self.killed = False
        self.pid = 100 + len(ray.actors)

    def __getattr__(self, name):
        return SimpleNamespace(remote=lambda *a: self.ray.submit(self, name, a))


class _FakeRay:
    """ray.remote / wait / get / kill / nodes with calls that finish at clock times."""

    def __init__(self, clock, seconds=None, load_s=5.0, on_call=None):
        self.clock, self.seconds, self.load_s, self.on_call = clock, seconds or {}, load_s, on_call
        self.actors: list[_Actor] = []

    def remote(self, **_):
        ray = self

        class _Class:
            def __init__(self, cls):
                self.cls = cls

            def options(self, **opts):
                return self

            def remote(self, *args):
                actor = _Actor(ray, self.cls(*args))
                ray.actors.append(actor)
                return actor

        return _Class

    def submit(self, actor, name, args):
        now = self.clock.now
        if name == "ping":
            ref = _Ref(actor, name, args, now + 0.01)
        else:
            task = getattr(getattr(args[0], "task", None), "name", "") if args else ""
            took = {"open_engine": self.load_s, "evaluate": self.seconds.get(task, 1.0)}
            actor.busy_until = max(now, actor.busy_until) + took.get(name, 0.1)
            ref = _Ref(actor, name, args, actor.busy_until)
        if self.on_call:
            self.on_call(self, actor, name, args)
        return ref

    def _when(self, ref):
        a = ref.actor
        if a.killed:
            return float("inf")
        t = ref.ready_at
        if a.paused_from <= t and a.paused_until > a.paused_from:  # would finish while stopped: after SIGCONT
            t = max(t, a.paused_until)
        return min(t, a.dies_at) if a.dies_at is not None else t

    def wait(self, refs, num_returns=1, timeout=None):
        ready = [r for r in refs if self._when(r) <= self.clock.now]
        if len(ready) < num_returns and timeout:
            nxt = min((self._when(r) for r in refs), default=float("inf"))
            self.clock.now = min(nxt, self.clock.now + timeout) if nxt > self.clock.now else self.clock.now
            ready = [r for r in refs if self._when(r) <= self.clock.now]
        return ready[:num_returns], [r for r in refs if r not in ready[:num_returns]]

    def get(self, ref):
        import ray.exceptions

        a = ref.actor
        if a.dies_at is not None and a.dies_at <= ref.ready_at:
            raise ray.exceptions.ActorDiedError()
        if ref.name == "begin":
            return a.pid
        value = getattr(a.instance, ref.name)(*ref.args)
        if isinstance(value, BaseException):
            raise value
        return value

    def kill(self, actor):
        actor.killed = True

    def nodes(self):
        return []


class _Sink:
    def __getattr__(self, name):
        return lambda *a, **k: None


def _loop(tmp_path, monkeypatch, on_call=None, seconds=None, **resources):
    """(scheduler, driver, ledger, events) for one model x bf16 + one format x 3 tasks."""
    from dataclasses import replace

    from tests.support.synthetic_sweeps import wide_sweep
    from orchestrator.execution import scheduler as sched_mod
    from orchestrator.execution.driver import Driver
    from orchestrator.store.ledger import Ledger
    from orchestrator.planning.plan import expand
    from orchestrator.planning.policy import PlacementPolicy
    from quantgrid.settings import Resources
    from tests.support.sleep_worker import SleepWorker

    clock = _Clock()
    from orchestrator.execution import driver as driver_mod

    monkeypatch.setattr(sched_mod, "time", clock)
    monkeypatch.setattr(driver_mod, "time", clock)
    sweep = wide_sweep(models=1, recipes=2, tasks=3, seeds=1, seed=3)  # bf16 + r000 x 3 tasks
    res = Resources.of({"cpus_per_actor": 1, "data_parallel": "off", "reuse_actors": False, "lease_s": 20, **resources})
    sweep = replace(
        sweep,
        run_dir=tmp_path,
        resources=res,
        synthetic=True,
        engine=replace(sweep.engine, accelerator="cpu", batch_size="auto"),
    )
    plan = expand(sweep)
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.open_sweep(plan.sweep.name, [], [], plan.cells)
    events = []
    nodes = [NodeShape(4, 0, 0, "")]
    drv = Driver(
        plan,
        _Sink(),
        progress=lambda e, **i: events.append((e, i)),
        ledger=ledger,
        worker=(SleepWorker, ("", {}, 0.0, 0.0)),
        nodes=nodes,
        run_dir=tmp_path,
    )
    drv.policy = PlacementPolicy(nodes, res)
    s = Scheduler(drv, drv.policy.jobs(plan.stages, drv.todo), nodes)
    s.ray = _FakeRay(clock, seconds, on_call=on_call)
    return s, drv, ledger, events, clock


def _rows(ledger, sql):
    return ledger.db.execute(sql).fetchall()


def test_event_loop_scores_every_cell_once(tmp_path, monkeypatch):
    from orchestrator.execution.hooks import Hooks

    s, drv, ledger, events, clock = _loop(tmp_path, monkeypatch)
    assert isinstance(drv, Hooks)  # the driver offers every call the scheduler makes, and nothing else is read
    assert not isinstance(object(), Hooks)
    t0 = clock.now
    s.run()
    assert _rows(ledger, "SELECT state, COUNT(*) FROM cells GROUP BY state") == [("done", len(drv.plan.cells))]
    assert _rows(ledger, "SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM results") == [(6, 6)]
    assert sorted(drv.summary.engine_loads.values()) == [1, 1] and clock.now - t0 > 5  # virtual time passed


def test_a_silent_actor_loses_its_lease_and_its_late_result_is_rejected(tmp_path, monkeypatch):
    def pause_first_eval(ray, actor, name, args):
        if name == "evaluate" and not getattr(ray, "paused", False):
            ray.paused = True
            actor.paused_from, actor.paused_until = (
                ray.clock.now,
                ray.clock.now + 25,
            )  # past lease_s=20; wakes before the retry is done

    s, drv, ledger, events, clock = _loop(tmp_path, monkeypatch, on_call=pause_first_eval)
    s.run()
    given = _rows(ledger, "SELECT failure_class FROM attempts WHERE state='given_up'")
    assert given == [("lease_expired",)]
    assert _rows(ledger, "SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM results") == [(6, 6)]
    assert len(_rows(ledger, "SELECT * FROM rejected")) == 1 and drv.summary.rejected == 1  # the zombie's, fenced
    assert [e for e, _ in events].count("retry") == 1


def test_a_dead_actor_is_retried_on_a_fresh_one(tmp_path, monkeypatch):
    def die(ray, actor, name, args):
        if name == "evaluate" and not getattr(ray, "died", False):
            ray.died = True
            actor.dies_at = ray.clock.now + 0.5

    s, drv, ledger, events, clock = _loop(tmp_path, monkeypatch, on_call=die)
    s.run()
    assert _rows(ledger, "SELECT failure_class FROM attempts WHERE state='given_up'") == [("actor_died",)]
    assert _rows(ledger, "SELECT state, COUNT(*) FROM cells GROUP BY state") == [("done", 6)]


def test_an_oom_at_engine_load_falls_back_and_records_it(tmp_path, monkeypatch):
    from quantgrid.failures import StageFailure

    def oom_once(ray, actor, name, args):
        if name == "open_engine" and not getattr(ray, "oomed", False):
            ray.oomed = True
            actor.instance.open_engine = lambda *a: StageFailure(
                "oom", "KV cache is needed, which is larger than the available"
            )

    s, drv, ledger, events, clock = _loop(tmp_path, monkeypatch, on_call=oom_once)
    s.run()
    ((stage,),) = _rows(ledger, "SELECT stage FROM attempts WHERE failure_class='oom'")
    rows = _rows(ledger, f"SELECT state, failure_class, fallback FROM attempts WHERE stage='{stage}' ORDER BY token")
    assert [r[:2] for r in rows] == [("given_up", "oom"), ("finished", None)]
    assert json.loads(rows[1][2]) == {"steps": ["halve_batch_size"]}
    assert [i["step"] for e, i in events if e == "fallback"] == ["halve_batch_size"]
    assert _rows(ledger, "SELECT COUNT(*) FROM results") == [(6,)]
    ((rec,),) = _rows(
        ledger, f"SELECT record FROM results r JOIN attempts a ON a.token = r.token WHERE a.stage='{stage}' LIMIT 1"
    )
    assert json.loads(rec)["provenance"]["oom_fallback"]["steps"] == ["halve_batch_size"]


def test_cancel_stops_the_loop_and_leaves_the_rest_pending(tmp_path, monkeypatch):
    def cancel_mid_run(ray, actor, name, args):
        ray.evals = getattr(ray, "evals", 0) + (name == "evaluate")
        if ray.evals == 4:  # two cells are in by then
            ledger.set_sweep_state(drv.sweep_name, "cancelled")

    s, drv, ledger, events, clock = _loop(tmp_path, monkeypatch, on_call=cancel_mid_run)
    s.run()
    done = _rows(ledger, "SELECT COUNT(*) FROM cells WHERE state='done'")[0][0]
    assert drv.summary.cancelled and 0 < done < 6
    assert all(a.killed for a in s.ray.actors if not a.dies_at)  # nothing left running
