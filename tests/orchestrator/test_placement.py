"""Placement policy: GPU-cluster paths checked without GPUs (pure function of node shapes)."""

import pytest

from orchestrator.config import ConfigError
from orchestrator.placement import NodeShape, actor_resources, nodes_from_ray
from quantgrid.types import ModelSpec

M8B = ModelSpec(name="llama-8b", source={"kind": "local", "path": "/x"})
M70B = ModelSpec(name="llama-70b", source={"kind": "local", "path": "/x"}, tensor_parallel_size=4)
M405B = ModelSpec(name="llama-405b", source={"kind": "local", "path": "/x"}, tensor_parallel_size=8, pipeline_parallel_size=2)


def test_cpu_machine_one_actor_takes_every_core_with_cpu_env():
    opts = actor_resources(M8B, [NodeShape(cpus=2, gpus=0)], {})
    assert opts["num_cpus"] == 2 and "num_gpus" not in opts
    env = opts["runtime_env"]["env_vars"]
    assert env["VLLM_TARGET_DEVICE"] == "cpu" and env["OMP_NUM_THREADS"] == "2"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["HF_HUB_OFFLINE"] == "1"


def test_gpu_node_actor_holds_tp_gpus_and_keeps_vllm_gpu_defaults():
    opts = actor_resources(M70B, [NodeShape(cpus=64, gpus=8)], {})
    assert opts["num_gpus"] == 4 and opts["num_cpus"] == 16
    env = opts["runtime_env"]["env_vars"]
    assert "VLLM_TARGET_DEVICE" not in env and "VLLM_ENABLE_V1_MULTIPROCESSING" not in env
    assert "VLLM_CPU_KVCACHE_SPACE" not in env


def test_small_models_pack_one_gpu_each():
    opts = actor_resources(M8B, [NodeShape(cpus=64, gpus=8)], {})
    assert opts["num_gpus"] == 1 and opts["num_cpus"] == 4  # 8 such actors fit one 8-GPU node


def test_engine_larger_than_any_node_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="needs 16 GPUs .* largest node has 8"):
        actor_resources(M405B, [NodeShape(64, 8), NodeShape(64, 8)], {})


def test_config_overrides_and_bounds():
    opts = actor_resources(M8B, [NodeShape(cpus=16, gpus=0)], {"cpus_per_actor": 64})
    assert opts["num_cpus"] == 16  # never more than a node has: the actor would never schedule


def test_nodes_from_ray_skips_dead_nodes():
    nodes = nodes_from_ray([{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}},
                            {"Alive": False, "Resources": {"CPU": 64.0}}])
    assert nodes == [NodeShape(8, 2)]
