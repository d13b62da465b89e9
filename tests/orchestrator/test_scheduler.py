"""Scheduler bookkeeping against the cluster as Ray reports it, without a Ray cluster: a
placement group's real bundle -> node map and a node that dies (ray's calls are stood in for)."""

from types import SimpleNamespace

import pytest

from orchestrator.placement import Bundle, ClusterState, NodeShape
from orchestrator.scheduler import Attempt, Scheduler


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
    s._kill = lambda actor, placement, pg=None, att=None: (s.killed.append(att), s.state.release(placement),
                                                          att in s.running and s.running.remove(att))
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
    monkeypatch.setattr(pgmod, "placement_group_table", lambda g: {"bundles_to_node_id": {k: "n2" if k < 8 else "n0" for k in range(16)}})
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
    waiting = Attempt(job=SimpleNamespace(name="evaluate/m/f"), actor=None, placement=s.state.allocate(s_d := _d(2)),
                      cells=["c1", "c2"], phase="begin")
    working = Attempt(job=SimpleNamespace(name="evaluate/m/g"), actor=None, placement=s.state.allocate(s_d), phase="eval")
    s.running = [waiting, working]
    assert {waiting.placement[0].node, working.placement[0].node} == {0, 1}
    dead = waiting.placement[0].node
    s.ray = SimpleNamespace(nodes=lambda: [{"Alive": n.node_id != nodes[dead].node_id, "NodeID": n.node_id,
                                            "Resources": {"CPU": 2}} for n in nodes])
    s._refresh_nodes()
    assert s.killed == [waiting] and s.running == [working]  # the working one fails on its own call
    assert [(cls, msg) for _, cls, msg in s.retried] == [("actor_died", f"node {nodes[dead].node_id} died before the actor started")]
    assert ("node", {"state": "lost", "node": nodes[dead].node_id}) in s.drv.events
    assert s.state.allocate(_d(2)) is None and s.state.dead == {dead}  # nothing placed there again


def _d(cpus):
    from orchestrator.placement import Demand

    return Demand(cpus=cpus)


@pytest.mark.parametrize("injected", [[NodeShape(2, 0)]])
def test_a_simulated_cluster_is_never_asked_to_ray(injected):
    s = _scheduler(injected)
    s.ray = SimpleNamespace(nodes=lambda: pytest.fail("ray.nodes() called for a cluster without node ids"))
    s._refresh_nodes()
