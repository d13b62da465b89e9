"""Placement: demands, best-fit packing, multi-node placement groups and Ray options, checked
without GPUs (pure functions of node shapes)."""

import pytest

from orchestrator.config import ConfigError
from orchestrator.planning.placement import (
    Bundle,
    ClusterState,
    Demand,
    NodeShape,
    demand,
    nodes_from_ray,
    placement_from_bundles,
    ray_options,
)
from quantgrid.types import ModelSpec

M8B = ModelSpec(name="llama-8b", source={"kind": "local", "path": "/x"})
M70B = ModelSpec(name="llama-70b", source={"kind": "local", "path": "/x"}, tensor_parallel_size=4)
M405B = ModelSpec(
    name="llama-405b",
    source={"kind": "local", "path": "/x"},
    tensor_parallel_size=8,
    pipeline_parallel_size=2,
    quantize_resources={"gpus": 8, "memory_gb": 1600},
)
GPU_NODE = NodeShape(cpus=64, gpus=8, memory_gb=2000, node_id="n0")


def test_cpu_machine_one_actor_takes_every_core_with_cpu_env():
    nodes = [NodeShape(cpus=2, gpus=0)]
    d = demand(M8B, nodes, {})
    assert d == Demand(gpus=0, cpus=2)
    opts = ray_options(ClusterState(nodes).allocate(d), nodes)
    assert opts["num_cpus"] == 2 and "num_gpus" not in opts and opts["max_concurrency"] == 1
    env = opts["runtime_env"]["env_vars"]
    assert env["VLLM_TARGET_DEVICE"] == "cpu" and env["OMP_NUM_THREADS"] == "2"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["HF_HUB_OFFLINE"] == "1"


def test_gpu_node_actor_holds_tp_gpus_pinned_to_its_node_with_vllm_gpu_defaults():
    d = demand(M70B, [GPU_NODE], {})
    assert d == Demand(gpus=4, cpus=16)
    opts = ray_options(ClusterState([GPU_NODE]).allocate(d), [GPU_NODE])
    assert opts["num_gpus"] == 4 and opts["num_cpus"] == 16 and opts["_node_id"] == "n0"
    env = opts["runtime_env"]["env_vars"]
    assert "VLLM_TARGET_DEVICE" not in env and "VLLM_ENABLE_V1_MULTIPROCESSING" not in env
    assert "VLLM_CPU_KVCACHE_SPACE" not in env


def test_small_models_pack_eight_per_node_best_fit():
    state = ClusterState([GPU_NODE, NodeShape(64, 8, 2000, "n1")])
    d8 = demand(M8B, state.nodes, {})
    assert d8 == Demand(gpus=1, cpus=4)
    first = state.allocate(d8)
    placed = [state.allocate(d8) for _ in range(7)]
    assert {p[0].node for p in placed} == {first[0].node}  # best fit fills one node first
    big = state.allocate(demand(M70B, state.nodes, {}))
    assert big[0].node != first[0].node  # the other node stays whole for the TP4 engine
    assert state.allocate(d8)[0].node == big[0].node and state.free_gpus == 3


def test_405b_bf16_spans_two_nodes_as_a_placement_group_with_vllm_ray_executor():
    nodes = [GPU_NODE, NodeShape(64, 8, 2000, "n1"), NodeShape(64, 8, 2000, "n2")]
    d = demand(M405B, nodes, {})
    assert d.gpus == 16 and d.nodes == 2
    state = ClusterState(nodes)
    state.allocate(Demand(gpus=1, cpus=4))  # one node is partly used: the group takes two whole ones
    p = state.allocate(d)
    assert len(p) == 2 and all(b.gpus == 8 for b in p) and 0 not in {b.node for b in p}
    opts = ray_options(p, nodes)
    assert opts["num_gpus"] == 0 and len(opts["_placement_group_bundles"]) == 16
    assert all(b["GPU"] == 1 for b in opts["_placement_group_bundles"])
    env = opts["runtime_env"]["env_vars"]
    # vLLM #30016: the engine core must stay in the actor's process to keep the group context.
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["QUANTGRID_EXECUTOR"] == "ray"
    assert state.allocate(d) is None  # no second pair of whole nodes
    state.release(p)
    assert state.allocate(d) is not None


def test_engines_no_node_set_can_hold_and_oversized_quantize_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="needs 16 GPUs .* largest node has 8 and fewer than 2 nodes"):
        demand(M405B, [GPU_NODE], {})
    wide_tp = ModelSpec(name="x", source={}, tensor_parallel_size=16)
    with pytest.raises(ConfigError, match="needs 16 GPUs for evaluate"):
        demand(wide_tp, [GPU_NODE, GPU_NODE], {})
    with pytest.raises(ConfigError, match="memory_gb 1600 is more than any node has"):
        demand(M405B, [NodeShape(64, 8, 512)], {}, role="quantize")
    assert demand(M405B, [GPU_NODE], {}, role="quantize") == Demand(gpus=8, cpus=32, memory_gb=1600)


def test_config_overrides_and_bounds():
    d = demand(M8B, [NodeShape(cpus=16, gpus=0)], {"cpus_per_actor": 64})
    assert d.cpus == 16  # never more than a node has: the actor would never schedule


def test_nodes_from_ray_skips_dead_nodes():
    nodes = nodes_from_ray(
        [
            {"Alive": True, "NodeID": "a", "Resources": {"CPU": 8.0, "GPU": 2.0, "memory": 2**34}},
            {"Alive": False, "Resources": {"CPU": 64.0}},
        ]
    )
    assert nodes == [NodeShape(8, 2, 16.0, "a")]


def test_workers_stay_offline_unless_the_sweep_lets_them_reach_the_hub():
    nodes = [NodeShape(cpus=8, gpus=0)]
    p = ClusterState(nodes).allocate(Demand(cpus=2))
    default = ray_options(p, nodes)["runtime_env"]["env_vars"]
    online = ray_options(p, nodes, hub_offline=False)["runtime_env"]["env_vars"]
    assert {default[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")} == {"1"}
    assert {online[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")} == {"0"}


def test_a_placement_group_is_accounted_where_ray_put_its_bundles():
    """The policy planned the 405B TP8xPP2 group on nodes 0 and 1; Ray packed it on 1 and 2
    (bundles_to_node_id as `placement_group_table` reports it): the state charges 1 and 2."""
    nodes = [NodeShape(64, 8, 2000, f"n{i}") for i in range(3)]
    state = ClusterState(nodes)
    planned = state.allocate(demand(M405B, nodes, {}, "evaluate"))
    assert sorted(b.node for b in planned) == [0, 1]
    opts = ray_options(planned, nodes)
    bundles = opts["_placement_group_bundles"]
    where = {k: ("n2" if k < 8 else "n1") for k in range(16)}  # bundle 0 (the actor, 64 CPUs) on n2
    actual = placement_from_bundles(where, bundles, nodes)
    assert actual == (Bundle(2, 8, 64, 0.0), Bundle(1, 8, 0, 0.0))
    state.adopt(planned, actual)
    assert state.free == [[8, 64, 2000], [0, 64, 2000], [0, 0, 2000]]
    state.release(actual)
    assert state.free == [[8, 64, 2000]] * 3
    with pytest.raises(KeyError, match="node n9"):
        placement_from_bundles({0: "n9"}, [{"GPU": 1}], nodes)


def test_dead_nodes_get_no_more_work_and_new_nodes_join():
    nodes = [NodeShape(2, 0, 0, "a"), NodeShape(2, 0, 0, "b")]
    state = ClusterState(nodes)
    held = state.allocate(Demand(cpus=2))
    assert held == (Bundle(0, 0, 2, 0.0),)
    dead, added = state.sync([NodeShape(2, 0, 0, "b"), NodeShape(4, 0, 0, "c")])  # a died, c joined
    assert (dead, added) == ([0], [2]) and state.total_cpus == 6
    state.release(held)  # the dead node's actor is killed: its cores do not come back
    assert all(state.allocate(Demand(cpus=2)) != (Bundle(0, 0, 2, 0.0),) for _ in range(3))
    assert state.allocate(Demand(cpus=1)) is None  # b and c are full now, a is never used again
    assert state.reserve_for(Demand(cpus=1)) != {0}
    assert state.sync([NodeShape(2, 0, 0, "b"), NodeShape(4, 0, 0, "c")]) == ([], [])
    sim = ClusterState([NodeShape(2, 0)])  # no node ids (a simulation): never matched
    assert sim.sync([]) == ([], [])
