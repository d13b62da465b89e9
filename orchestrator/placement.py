"""Resources and environment for a stage's actor, from the model's parallelism and the cluster.

Pure functions of (model, node shapes, config), so the policy is tested here without GPUs; the
Ray driver feeds it `ray.nodes()`. The grid engine extends this with placement groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.config import ConfigError
from quantgrid.runtime import worker_env
from quantgrid.types import ModelSpec

CPUS_PER_GPU = 4  # host threads per GPU actor: tokenization, lm-eval bookkeeping, sandboxed code


@dataclass(frozen=True)
class NodeShape:
    cpus: int
    gpus: int


def nodes_from_ray(ray_nodes: list[dict[str, Any]]) -> list[NodeShape]:
    return [NodeShape(int(n["Resources"].get("CPU", 0)), int(n["Resources"].get("GPU", 0)))
            for n in ray_nodes if n.get("Alive")]


def actor_resources(model: ModelSpec, nodes: list[NodeShape], cfg: dict[str, Any], kv_cache_gb: int = 1) -> dict[str, Any]:
    """Ray actor options: num_cpus / num_gpus and the worker's environment variables.

    GPU cluster: one actor holds TP x PP GPUs (vLLM in-process, its own executor for TP) on one
    node. CPU machine: one actor takes every core of a node, so one engine runs at a time with
    all threads instead of several starving each other.
    """
    if not nodes:
        raise ConfigError("Ray reports no alive nodes")
    largest_cpus = max(n.cpus for n in nodes)
    largest_gpus = max(n.gpus for n in nodes)
    gpus = cfg.get("gpus_per_actor")
    if gpus is None:
        gpus = model.tensor_parallel_size * model.pipeline_parallel_size if largest_gpus > 0 else 0
    if gpus > largest_gpus and largest_gpus > 0:
        raise ConfigError(
            f"model {model.name} needs {gpus} GPUs (tensor_parallel_size {model.tensor_parallel_size} x "
            f"pipeline_parallel_size {model.pipeline_parallel_size}) but the largest node has {largest_gpus}; "
            "multi-node engines need a placement group (not supported yet)"
        )
    cpus = cfg.get("cpus_per_actor") or (min(largest_cpus, CPUS_PER_GPU * gpus) if gpus else largest_cpus)
    cpus = max(1, min(int(cpus), largest_cpus))
    opts: dict[str, Any] = {"num_cpus": cpus, "max_restarts": 0, "max_concurrency": 1}
    if gpus:
        opts["num_gpus"] = gpus
    opts["runtime_env"] = {"env_vars": worker_env(cpu_threads=cpus, kv_cache_gb=kv_cache_gb, gpu=bool(gpus))}
    return opts
