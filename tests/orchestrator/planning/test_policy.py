"""The placement policy and the simulator that shares it: ordering, data-parallel splits,
the lower bound, and the paper grid's shapes (no Ray, no GPUs)."""

from orchestrator.planning.placement import ClusterState, NodeShape
from orchestrator.planning.plan import expand
from orchestrator.planning.policy import PlacementPolicy, ReadyQueue
from orchestrator.planning.simulate import simulate
from quantgrid.types import StageKind

from tests.support.synthetic_sweeps import paper_sweep, wide_sweep

NODE = NodeShape(cpus=128, gpus=8, memory_gb=2000)


def test_quantize_before_evaluate_and_longest_first():
    plan = expand(wide_sweep(models=3, recipes=4, tasks=6, seeds=1))
    policy = PlacementPolicy([NODE] * 4, {"data_parallel": "off"})
    jobs = {j.id: j for j in policy.jobs(plan.stages)}
    for j in jobs.values():
        for d in j.deps:  # a job's priority covers everything after it
            assert jobs[d].priority >= j.priority + jobs[d].seconds - 1e-6
    ready = ReadyQueue()
    evals = [j for j in jobs.values() if j.kind is StageKind.EVALUATE and j.stage.format.is_baseline]
    quants = [j for j in jobs.values() if j.kind is StageKind.QUANTIZE and not j.stage.format.is_baseline]
    assert evals and quants
    for j in evals + quants:
        ready.push(j)
    order = [job for job, _ in policy.dispatch(ready, ClusterState([NODE] * 4))]
    assert [j.kind for j in order] == [StageKind.QUANTIZE] * len(quants) + [StageKind.EVALUATE] * len(evals)
    for kind in (StageKind.QUANTIZE, StageKind.EVALUATE):  # longest chain first within each
        prios = [j.priority for j in order if j.kind is kind]
        assert prios == sorted(prios, reverse=True)


def test_every_cell_in_exactly_one_job_and_splits_cost_loads():
    plan = expand(wide_sweep(models=4, recipes=3, tasks=12, seeds=2))
    split = PlacementPolicy([NODE] * 16, {}).jobs(plan.stages)
    cells = [c.key for j in split for c in j.cells]
    assert sorted(cells) == sorted(c.key for c in plan.cells)
    evals = [j for j in split if j.kind is StageKind.EVALUATE]
    assert len(evals) > len(plan.evaluate_stages)  # 128 GPUs for 24 groups: replicas pay off
    off = PlacementPolicy([NODE] * 16, {"data_parallel": "off"}).jobs(plan.stages)
    assert sum(j.kind is StageKind.EVALUATE for j in off) == len(plan.evaluate_stages)


def test_cpu_machine_never_splits():
    plan = expand(wide_sweep(models=2, recipes=2, tasks=8, seeds=1))
    jobs = PlacementPolicy([NodeShape(cpus=2, gpus=0)], {}).jobs(plan.stages)
    assert sum(j.kind is StageKind.EVALUATE for j in jobs) == len(plan.evaluate_stages)


def test_simulation_respects_the_lower_bound_and_resume_skips_done_work():
    plan = expand(wide_sweep(models=6, recipes=5, tasks=20, seeds=2))
    r = simulate(plan.stages, [NODE] * 8)
    assert r.makespan_s >= r.lower_bound_s * (1 - 1e-9)
    assert r.ratio < 1.3 and 0 < r.utilization <= 1
    policy = PlacementPolicy([NODE] * 8, {})
    keep = {c.key for c in plan.cells[:10]}
    jobs = policy.jobs(plan.stages, lambda s: [c for c in s.cells if c.key in keep])
    assert sorted(c.key for j in jobs for c in j.cells) == sorted(keep)


def test_paper_grid_places_405b_bf16_on_two_nodes_and_quantized_on_one():
    plan = expand(paper_sweep())
    jobs = PlacementPolicy([NODE] * 4, {}).jobs(plan.stages)
    shapes = {(j.stage.model.name, j.stage.format.name): j.demand for j in jobs if j.kind is StageKind.EVALUATE}
    assert shapes[("llama-3.1-405b", "bf16")].nodes == 2 and shapes[("llama-3.1-405b", "bf16")].gpus == 16
    assert shapes[("llama-3.1-405b", "fp8")].nodes == 1 and shapes[("llama-3.1-405b", "fp8")].gpus == 8
    assert shapes[("llama-3.1-70b", "int8")].gpus == 4 and shapes[("llama-3.1-8b", "w4a16")].gpus == 1
    r = simulate(plan.stages, [NODE] * 2)
    assert r.ratio <= 1.1 and r.engine_loads >= 12 and r.makespan_s >= r.lower_bound_s
