"""Where a job's actor runs: resource demands, node bookkeeping and the Ray options for them.

Pure functions and plain objects, so the same code places jobs on a simulated cluster
(orchestrator/planning/simulate.py) and on a real one (orchestrator/execution/scheduler.py feeds it `ray.nodes()`).

- single node: one actor holds TP x PP GPUs (vLLM in-process, its multiprocessing executor
  for TP); small models are packed best-fit, several 8B engines per 8-GPU node.
- multi node (405B BF16 across two 8-GPU nodes): a placement group of 1-GPU bundles, PP
  nodes x TP GPUs each; the engine actor sits in bundle 0 with no GPU of its own and vLLM's
  Ray executor reuses the group (see `ray_options`).
- CPU machine: one actor takes every core of a node, so one engine runs at a time with all
  threads instead of several starving each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.config import ConfigError
from quantgrid.runtime import worker_env
from quantgrid.settings import Resources

CPUS_PER_GPU = 4  # host threads per GPU actor: tokenization, lm-eval bookkeeping, sandboxed code


@dataclass(frozen=True)
class NodeShape:
    cpus: int
    gpus: int
    memory_gb: float = 0.0  # 0 = not tracked
    node_id: str = ""  # Ray node id (empty in simulations)


@dataclass(frozen=True)
class Demand:
    """What one job needs. `nodes` > 1: `gpus` split evenly over that many nodes."""

    gpus: int = 0
    cpus: int = 1
    memory_gb: float = 0.0
    nodes: int = 1

    @property
    def shape(self) -> tuple:
        return (self.gpus, self.cpus, self.memory_gb, self.nodes)


@dataclass(frozen=True)
class Bundle:
    node: int  # index into the cluster's node list
    gpus: int
    cpus: int
    memory_gb: float = 0.0


Placement = tuple[Bundle, ...]


def nodes_from_ray(ray_nodes: list[dict[str, Any]]) -> list[NodeShape]:
    out = []
    for n in ray_nodes:
        if not n.get("Alive"):
            continue
        r = n["Resources"]
        out.append(
            NodeShape(
                int(r.get("CPU", 0)), int(r.get("GPU", 0)), float(r.get("memory", 0)) / 2**30, n.get("NodeID", "")
            )
        )
    return out


def demand(model, nodes: list[NodeShape], cfg: Resources | dict[str, Any] | None, role: str = "evaluate") -> Demand:
    """Resources for a job of `role` (build | quantize | evaluate | similarity | perf | sensitivity) of
    `model` on this cluster. Sensitivity runs the base model in float32 on CPU cores (no GPU).

    Refuses, in one line, an engine no node set can hold."""
    cfg = Resources.of(cfg)
    if not nodes:
        raise ConfigError("the cluster reports no alive nodes")
    largest_cpus = max(n.cpus for n in nodes)
    largest_gpus = max(n.gpus for n in nodes)
    qres = dict(getattr(model, "quantize_resources", None) or {})
    memory = float(qres.get("memory_gb", 0)) if role == "quantize" else 0.0
    if role in ("build", "similarity", "sensitivity") or largest_gpus == 0:
        gpus = 0
    elif role == "quantize":
        gpus = int(qres.get("gpus", 1))
    else:
        gpus = cfg.gpus_per_actor
        gpus = model.tensor_parallel_size * model.pipeline_parallel_size if gpus is None else int(gpus)
    n_nodes = 1
    if role == "perf":
        # Exclusive: every device and core of the node(s) the server runs on, so nothing else is
        # scheduled beside the measurement.
        tp, pp = model.tensor_parallel_size, model.pipeline_parallel_size
        if (
            largest_gpus
            and tp * pp > largest_gpus
            and not (pp > 1 and tp <= largest_gpus and sum(n.gpus >= tp for n in nodes) >= pp)
        ):
            raise ConfigError(
                f"model {model.name} needs {tp * pp} GPUs for perf (tensor_parallel_size {tp} x "
                f"pipeline_parallel_size {pp}) but the largest node has {largest_gpus}"
            )
        n = pp if largest_gpus and tp * pp > largest_gpus else 1
        return Demand(gpus=largest_gpus * n, cpus=largest_cpus, memory_gb=0.0, nodes=n)
    if gpus > largest_gpus:
        tp, pp = model.tensor_parallel_size, model.pipeline_parallel_size
        fits = role == "evaluate" and pp > 1 and tp <= largest_gpus and sum(n.gpus >= tp for n in nodes) >= pp
        if not fits:
            raise ConfigError(
                f"model {model.name} needs {gpus} GPUs for {role} (tensor_parallel_size {tp} x "
                f"pipeline_parallel_size {pp}) "
                f"but the largest node has {largest_gpus}"
                + (
                    ""
                    if role != "evaluate"
                    else f" and fewer than {pp} nodes have {tp} GPUs each "
                    "(multi-node engines use one node per pipeline stage)"
                )
            )
        n_nodes = pp
    largest_mem = max(n.memory_gb for n in nodes)
    if memory and largest_mem and memory > largest_mem:
        raise ConfigError(
            f"model {model.name}: quantize_resources.memory_gb {memory:g} is more than any node has "
            f"({largest_mem:.0f} GB)"
        )
    cpus = cfg.cpus_per_actor or (min(largest_cpus, CPUS_PER_GPU * gpus) if gpus else largest_cpus)
    if role in ("build", "similarity") and largest_gpus > 0 and not cfg.cpus_per_actor:
        cpus = min(largest_cpus, CPUS_PER_GPU)  # staging weights, a sentence encoder: a few cores
    cpus = max(1, min(int(cpus), largest_cpus))
    return Demand(gpus=gpus, cpus=cpus, memory_gb=memory, nodes=n_nodes)


def placement_from_bundles(
    bundles_to_node_id: dict[int, str], bundles: list[dict[str, float]], nodes: list[NodeShape]
) -> Placement:
    """Where a ready placement group's bundles actually are, as a Placement over `nodes`.

    A PACK group goes where Ray finds room, not necessarily on the nodes the policy chose (Ray
    only promises to pack as tightly as it can): `bundles_to_node_id` is what
    `ray.util.placement_group_table(pg)` reports once the group is ready. Bundle 0's node comes
    first (the engine actor sits there, with its cores)."""
    index = {n.node_id: i for i, n in enumerate(nodes) if n.node_id}
    per_node: dict[int, list[float]] = {}
    for k in sorted(int(b) for b in bundles_to_node_id):
        node_id = bundles_to_node_id.get(k, bundles_to_node_id.get(str(k)))
        if node_id not in index:
            raise KeyError(f"placement group bundle {k} is on node {node_id}, which the scheduler does not know")
        acc = per_node.setdefault(index[node_id], [0.0, 0.0, 0.0])
        acc[0] += bundles[k].get("GPU", 0)
        acc[1] += bundles[k].get("CPU", 0)
        acc[2] += bundles[k].get("memory", 0) / 2**30
    return tuple(Bundle(i, int(g), int(c), m) for i, (g, c, m) in per_node.items())


class ClusterState:
    """Free resources per node; best-fit allocation so whole nodes stay free for big engines.

    Node indices are stable for the life of a run: a node that dies is marked dead (nothing is
    placed there again), one that joins is appended."""

    def __init__(self, nodes: list[NodeShape]):
        self.nodes = list(nodes)
        self.free = [[n.gpus, n.cpus, n.memory_gb] for n in nodes]
        self.total_gpus = sum(n.gpus for n in nodes)
        self.total_cpus = sum(n.cpus for n in nodes)
        self.dead: set[int] = set()
        # nodes by free GPU count: best fit looks at the fullest node that still fits first
        self._by_free: dict[int, set[int]] = {}
        for i, n in enumerate(nodes):
            self._by_free.setdefault(n.gpus, set()).add(i)

    def add_node(self, node: NodeShape) -> int:
        self.nodes.append(node)
        self.free.append([node.gpus, node.cpus, node.memory_gb])
        self.total_gpus += node.gpus
        self.total_cpus += node.cpus
        i = len(self.nodes) - 1
        self._by_free.setdefault(node.gpus, set()).add(i)
        return i

    def mark_dead(self, i: int) -> None:
        """Nothing is placed on node i again; its capacity leaves the totals."""
        if i in self.dead:
            return
        self.dead.add(i)
        self._by_free[self.free[i][0]].discard(i)
        self.total_gpus -= self.nodes[i].gpus
        self.total_cpus -= self.nodes[i].cpus

    def sync(self, alive: list[NodeShape]) -> tuple[list[int], list[int]]:
        """Match the cluster Ray reports now (alive nodes, with ids): (newly dead, newly added)
        node indices. Nodes without an id (a simulated cluster) are never matched."""
        alive_ids = {n.node_id for n in alive if n.node_id}
        known = {n.node_id for n in self.nodes if n.node_id}
        dead = [i for i, n in enumerate(self.nodes) if n.node_id and n.node_id not in alive_ids and i not in self.dead]
        for i in dead:
            self.mark_dead(i)
        added = [self.add_node(n) for n in alive if n.node_id and n.node_id not in known]
        return dead, added

    def adopt(self, planned: Placement, actual: Placement) -> None:
        """Charge what a placement group really holds instead of what the policy planned."""
        self.release(planned)
        for b in actual:
            before = self.free[b.node][0]
            self.free[b.node][0] -= b.gpus
            self.free[b.node][1] -= b.cpus
            self.free[b.node][2] -= b.memory_gb
            self._move(b.node, before)

    def _move(self, i: int, before: int) -> None:
        self._by_free.setdefault(before, set()).discard(i)
        if i not in self.dead:
            self._by_free.setdefault(self.free[i][0], set()).add(i)

    def _fits(self, i: int, gpus: int, cpus: int, mem: float) -> bool:
        if i in self.dead:
            return False
        g, c, m = self.free[i]
        return g >= gpus and c >= cpus and (mem <= 0 or self.nodes[i].memory_gb <= 0 or m >= mem)

    def _take(self, i: int, gpus: int, cpus: int, mem: float) -> Bundle:
        before = self.free[i][0]
        self.free[i][0] -= gpus
        self.free[i][1] -= cpus
        self.free[i][2] -= mem
        self._move(i, before)
        return Bundle(i, gpus, cpus, mem)

    def reserve_for(self, d: Demand) -> set[int]:
        """The nodes a blocked job will get first (the emptiest): kept free of backfill so that
        big engines are not starved by a stream of small ones."""
        order = sorted(
            (i for i in range(len(self.free)) if i not in self.dead),
            key=lambda i: (-self.free[i][0], -self.free[i][1], i),
        )
        return set(order[: d.nodes])

    def allocate(self, d: Demand, exclude: set[int] = frozenset()) -> Placement | None:
        if d.nodes == 1:
            for free in sorted(k for k, v in self._by_free.items() if v and k >= d.gpus):
                for i in sorted(self._by_free[free]):
                    if i not in exclude and self._fits(i, d.gpus, d.cpus, d.memory_gb):
                        return (self._take(i, d.gpus, d.cpus, d.memory_gb),)
            return None
        per_node = d.gpus // d.nodes
        # Multi-node: the emptiest nodes first; the engine actor's cores go to the first node.
        chosen: list[int] = []
        for free in sorted((k for k, v in self._by_free.items() if v and k >= per_node), reverse=True):
            for i in sorted(self._by_free[free]):
                if (
                    len(chosen) < d.nodes
                    and i not in exclude
                    and self._fits(i, per_node, d.cpus if not chosen else 0, 0)
                ):
                    chosen.append(i)
        if len(chosen) < d.nodes:
            return None
        return tuple(self._take(i, per_node, d.cpus if k == 0 else 0, 0) for k, i in enumerate(chosen))

    def release(self, p: Placement) -> None:
        for b in p:
            before = self.free[b.node][0]
            self.free[b.node][0] += b.gpus
            self.free[b.node][1] += b.cpus
            self.free[b.node][2] += b.memory_gb
            self._move(b.node, before)

    @property
    def free_gpus(self) -> int:
        return sum(f[0] for f in self.free)


def ray_options(
    placement: Placement, nodes: list[NodeShape], kv_cache_gb: int = 1, hub_offline: bool = True
) -> dict[str, Any]:
    """Ray actor options that put the actor exactly where the policy placed it.

    Single node: the actor holds its GPUs, pinned to the node (hard node affinity). Multi node:
    a placement group of 1-GPU bundles (PACK); the actor holds no GPU and sits in bundle 0, and
    vLLM's Ray executor finds the group with `get_current_placement_group()` and puts one worker
    per GPU bundle. vLLM issue #30016: the V1 engine core, when started as a subprocess, loses
    the placement-group context, so multi-node actors run the engine core in-process
    (VLLM_ENABLE_V1_MULTIPROCESSING=0) and `Engine` gets distributed_executor_backend="ray".
    Returns the options plus `_placement_group_bundles` for the scheduler to create the group.
    """
    gpus = sum(b.gpus for b in placement)
    cpus = placement[0].cpus
    env = worker_env(cpu_threads=cpus, kv_cache_gb=kv_cache_gb, gpu=gpus > 0, hub_offline=hub_offline)
    opts: dict[str, Any] = {"max_restarts": 0, "max_concurrency": 1}  # heartbeats: their own concurrency group
    if len(placement) == 1:
        b = placement[0]
        opts["num_cpus"] = b.cpus
        if b.gpus:
            opts["num_gpus"] = b.gpus
        if b.memory_gb:
            opts["memory"] = int(b.memory_gb * 2**30)
        node_id = nodes[b.node].node_id
        if node_id:
            opts["_node_id"] = node_id
    else:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        env["QUANTGRID_EXECUTOR"] = "ray"
        bundles = [{"GPU": 1, "CPU": cpus if (i == 0) else 0} for i in range(gpus)]
        bundles = [{k: v for k, v in b.items() if v} for b in bundles]
        opts["num_cpus"] = cpus
        opts["num_gpus"] = 0
        opts["_placement_group_bundles"] = bundles
    opts["runtime_env"] = {"env_vars": env}
    return opts
