"""Grid-engine benches (`make bench BENCH="plan-500k resume-500k simulate ray-cluster engine-loads"`).

Each runs in its own process (bench/run.py measures wall and peak RSS from outside too) and
prints one JSON line: the figures beside their targets. Sweeps come from tests/support/synthetic_sweeps.py
(seeded; size and duration distributions stated there).

  plan-500k     expand a 500,000-cell sweep (20 models x 25 recipes x 100 tasks x 10 seeds), hash
                every cell key, count, estimate GPU-hours and make the jobs for 128 x 8 GPUs.
                Targets: <= 5 s, peak RSS <= 1 GiB.
  resume-500k   the same sweep with 499,000 cells done in its ledger: open the ledger, read the
                done keys, plan only what is left. Target <= 5 s (ledger filling is untimed).
  simulate      the real placement policy on 1,024 simulated GPUs (target makespan <= 1.05 x
                lower bound), and the paper's grid on 2, 8 and 32 nodes of 8 GPUs.
  ray-cluster   a real Ray cluster on this machine (head + 2 nodes x 8 fake GPUs,
                ray.cluster_utils.Cluster) running sleep-workers through the real scheduler,
                leases and ledger: every cell committed once, makespan vs the simulated one.
  engine-loads  the paper grid: quantgrid's engine loads vs one lm-eval run per task.
  export        20,000 ledger results pushed to a local `mlflow server` (target <= 20 ms per
                cell), then re-exported: history length stays 1; runs a 500,000-cell sweep needs.
  samples-10m   10M per-sample rows written as a partitioned Parquet dataset and queried for a
                paired bootstrap comparison: throughput and peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tests.support.synthetic_sweeps import paper_sweep, wide_sweep
from orchestrator.planning.placement import NodeShape
from quantgrid.settings import Resources

GPU_NODE = NodeShape(cpus=128, gpus=8, memory_gb=2000)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plan_500k() -> dict:
    from orchestrator.planning.plan import expand
    from orchestrator.planning.policy import PlacementPolicy

    t0 = time.perf_counter()
    plan = expand(wide_sweep())
    keys = {c.key for c in plan.cells}
    counts = plan.counts()
    est = plan.estimate()
    jobs = PlacementPolicy([GPU_NODE] * 128, {}).jobs(plan.stages)
    wall = time.perf_counter() - t0
    assert len(keys) == 500_000
    return {
        "cells": counts["cells"],
        "samples": counts["samples"],
        "engine_loads": counts["engine_loads"],
        "quantize_jobs": counts["quantize_jobs"],
        "jobs_on_1024_gpus": len(jobs),
        "gpu_hours": round(est["device_hours"]),
        "wall_s": round(wall, 2),
        "target_wall_s": 5,
        "peak_rss_mb": round(_rss_mb()),
        "target_peak_rss_mb": 1024,
    }


def resume_500k() -> dict:
    from orchestrator.store.ledger import Ledger
    from orchestrator.planning.plan import expand
    from orchestrator.planning.policy import PlacementPolicy

    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-resume-"))
    plan = expand(wide_sweep())
    t_fill = time.perf_counter()
    led = Ledger(tmp / "ledger.db")
    led.open_sweep("synthetic", [], [], plan.cells)
    done = [c.key for c in plan.cells[:499_000]]
    with led._tx() as db:  # untimed setup: 499,000 cells marked done
        db.executemany("UPDATE cells SET state='done' WHERE sweep='synthetic' AND cell_key=?", [(k,) for k in done])
    led.close()
    fill = time.perf_counter() - t_fill
    del plan, done

    t0 = time.perf_counter()
    led = Ledger(tmp / "ledger.db")
    done_keys = led.done_keys("synthetic")
    plan = expand(wide_sweep())
    jobs = PlacementPolicy([GPU_NODE] * 128, {}).jobs(
        plan.stages, lambda s: [c for c in s.cells if c.key not in done_keys]
    )
    wall = time.perf_counter() - t0
    left = sum(len(j.cells) for j in jobs)
    return {
        "cells": len(plan.cells),
        "done_in_ledger": len(done_keys),
        "cells_left": left,
        "jobs_left": len(jobs),
        "wall_s": round(wall, 2),
        "target_wall_s": 5,
        "ledger_fill_s_untimed": round(fill, 1),
        "peak_rss_mb": round(_rss_mb()),
    }


def simulate_all() -> dict:
    from orchestrator.planning.plan import expand
    from orchestrator.planning.simulate import simulate

    out: dict = {}
    t0 = time.perf_counter()
    wide = expand(wide_sweep())
    r = simulate(wide.stages, [GPU_NODE] * 128)
    out["wide_1024_gpus"] = {**r.as_dict(), "target_ratio": 1.05, "sim_wall_s": round(time.perf_counter() - t0, 1)}
    off = simulate(wide.stages, [GPU_NODE] * 128, {"data_parallel": "off"})
    out["wide_1024_gpus_no_dp"] = off.as_dict()
    paper = expand(paper_sweep())
    for n in (2, 8, 32):
        out[f"paper_{n}_nodes"] = simulate(paper.stages, [GPU_NODE] * n).as_dict()
    return out


def ray_cluster() -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.planning.cost import CostModel
    from orchestrator.execution.driver import Driver
    from orchestrator.store.ledger import Ledger
    from orchestrator.planning.plan import expand
    from orchestrator.planning.placement import nodes_from_ray
    from orchestrator.planning.simulate import simulate
    from tests.support.sleep_worker import SleepWorker

    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-ray-"))
    sweep = wide_sweep(models=4, recipes=3, tasks=8, seeds=1, seed=1)
    # One model is served TP8 x PP2: a 16-GPU placement group across both nodes (the 405B path).
    models = [replace(m, quantize_resources={"gpus": 1}) for m in sweep.models]
    models[0] = replace(models[0], tensor_parallel_size=8, pipeline_parallel_size=2)
    sweep = replace(
        sweep, run_dir=tmp, synthetic=True, resources=Resources(reuse_actors=False, lease_s=60), models=models
    )
    plan = expand(sweep)
    cost = CostModel()
    # Scale so the simulated makespan on this cluster is ~40 s of real sleeping.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    for _ in range(2):
        cluster.add_node(num_cpus=64, num_gpus=8)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=True, logging_level="ERROR")
    try:
        nodes = nodes_from_ray(ray.nodes())
        sim = simulate(plan.stages, nodes, sweep.resources)
        scale = 40.0 / sim.makespan_s
        secs = {c.key: cost.cell_seconds(c) for c in plan.cells}
        ledger = Ledger(tmp / sweep.name / "ledger.db")
        ledger.open_sweep(sweep.name, [], [], plan.cells)

        class NullSink:
            def __getattr__(self, name):
                return lambda *a, **k: None

        loads = {"n": 0}
        drv = Driver(
            plan,
            NullSink(),
            ledger=ledger,
            nodes=nodes,
            progress=lambda e, **i: loads.__setitem__("n", loads["n"] + (e == "engine")),
            worker=(SleepWorker, ("", secs, scale, cost.load_seconds(plan.sweep.models[0], "h100-80gb"))),
        )
        pgs: set = set()
        from orchestrator.execution import scheduler as sched

        create = sched.Scheduler._create_actor

        def spy(self, job, placement):  # record the placement groups the scheduler really made
            actor, pg = create(self, job, placement)
            if pg is not None:
                pgs.add((job.stage.name, len(placement), sum(b.gpus for b in placement)))
            return actor, pg

        sched.Scheduler._create_actor = spy
        t0 = time.perf_counter()
        summary = drv.run()
        wall = time.perf_counter() - t0
        results = ledger.db.execute("SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM results").fetchone()
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {
        "nodes": [f"{n.cpus} CPU / {n.gpus} GPU" for n in nodes],
        "cells": len(plan.cells),
        "jobs": summary.jobs,
        "cells_done": summary.done,
        "results_rows": results[0],
        "distinct_results": results[1],
        "failed": len(summary.failed),
        "engine_loads": loads["n"],
        "wall_s": round(wall, 1),
        "placement_groups": sorted(f"{name}: {n} nodes, {g} GPUs" for name, n, g in pgs),
        "simulated_makespan_s": round(sim.makespan_s * scale, 1),
        "overhead_vs_simulation": round(wall / (sim.makespan_s * scale), 2),
    }


def engine_loads() -> dict:
    from orchestrator.planning.plan import expand
    from orchestrator.planning.simulate import simulate

    paper = expand(paper_sweep())
    groups = len(paper.evaluate_stages)
    per_task = sum(len(s.cells) for s in paper.evaluate_stages)  # lm-eval CLI: one engine per task run
    return {
        "paper_grid_cells": len(paper.cells),
        "quantgrid_engine_loads": groups,
        "lm_eval_run_per_task_loads": per_task,
        "with_dp_replicas_on_8_nodes": simulate(paper.stages, [GPU_NODE] * 8).engine_loads,
        "with_dp_replicas_on_32_nodes": simulate(paper.stages, [GPU_NODE] * 32).engine_loads,
    }


def export() -> dict:
    """Tracking overhead per cell against a local MLflow server (target <= 20 ms), runs per
    cells, and an idempotent re-export (every metric history still length 1)."""
    from mlflow.tracking import MlflowClient

    from orchestrator.store.export import Exporter
    from orchestrator.store.ledger import Ledger
    from orchestrator.planning.plan import expand
    from quantgrid.types import TaskResult

    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-export-"))
    sweep = replace(wide_sweep(models=2, recipes=10, tasks=100, seeds=10, seed=2), run_dir=tmp)  # 20,000 cells
    plan = expand(sweep)
    ledger = Ledger(tmp / "ledger.db")
    ledger.open_sweep("synthetic", [], [], plan.cells)
    token = ledger.lease("synthetic", "all", [c.key for c in plan.cells], 3600)
    for i, c in enumerate(plan.cells):
        ledger.commit_result(
            "synthetic",
            token,
            TaskResult(
                c.key,
                c.model.name,
                c.format.name,
                c.task.name,
                {"acc,none": (i % 13) / 13, "acc_stderr,none": 0.01},
                [],
                0,
                1.0,
                {},
                primary_metric="acc,none",
                tokens={"prompt_tokens": 1000, "generation_tokens": 10},
            ),
        )
    from orchestrator.monitor.ui import start_server, stop

    proc, uri = start_server(f"sqlite:///{tmp / 'server.db'}", tmp / "artifacts", tmp / "server.log")
    try:
        t0 = time.perf_counter()
        pushed = Exporter(tmp / "ledger.db", "synthetic", uri, plan).push()
        first = time.perf_counter() - t0
        ledger.db.execute("DELETE FROM exports")
        t0 = time.perf_counter()
        Exporter(tmp / "ledger.db", "synthetic", uri, plan).push()
        again = time.perf_counter() - t0
        c = MlflowClient(uri)
        exp = c.get_experiment_by_name("quantgrid/synthetic")
        runs = c.search_runs([exp.experiment_id], max_results=5000)
        groups = [r for r in runs if r.data.tags.get("quantgrid.kind") == "engine_group"]
        sample = groups[:5]
        lengths = {len(c.get_metric_history(r.info.run_id, k)) for r in sample for k in list(r.data.metrics)[:20]}
    finally:
        stop(proc)
    big = expand(wide_sweep())
    return {
        "cells_exported": pushed,
        "metrics_per_cell": 5,
        "ms_per_cell": round(1000 * first / pushed, 2),
        "target_ms_per_cell": 20,
        "reexport_ms_per_cell": round(1000 * again / pushed, 2),
        "runs": len(runs),
        "history_lengths_after_2_exports": sorted(lengths),
        "runs_for_500k_cells": len(big.evaluate_stages) + 1,
    }


def samples_10m() -> dict:
    """10M per-sample rows as a Parquet dataset partitioned model/format/task (as the run store
    writes them), then a paired comparison (baseline vs one format on one model's tasks)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from orchestrator.report.analysis import Samples, paired_task

    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-samples-"))
    rng = np.random.default_rng(0)
    models, formats, tasks, docs = 10, 4, 25, 10_000  # 10 x 4 x 25 x 10,000 = 10,000,000 rows
    t0 = time.perf_counter()
    for m in range(models):
        for f in ("bf16", "fp8", "int8", "w4a16")[:formats]:
            for t in range(tasks):
                p = 0.4 + 0.02 * t - (0.01 if f != "bf16" else 0)
                table = pa.table(
                    {
                        "cell_key": pa.array([f"{m}{f}{t}"] * docs),
                        "doc_id": np.arange(docs),
                        "m_acc": (rng.random(docs) < p).astype(np.float64),
                    }
                )
                d = tmp / "samples" / f"model=m{m}" / f"format={f}" / f"task=t{t}"
                d.mkdir(parents=True)
                pq.write_table(table, d / "part.parquet")
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    dataset = ds.dataset(tmp / "samples", format="parquet", partitioning="hive")
    rows = dataset.count_rows()
    t1 = time.perf_counter()
    model = dataset.to_table(
        columns=["format", "task", "doc_id", "m_acc"], filter=ds.field("model") == "m3"
    ).to_pandas()
    diffs = []
    for task, g in model.groupby("task"):
        base = g[g.format == "bf16"]
        other = g[g.format == "fp8"]
        p, _, _ = paired_task(
            task,
            Samples(base.doc_id.to_numpy(), base.m_acc.to_numpy()),
            Samples(other.doc_id.to_numpy(), other.m_acc.to_numpy()),
            True,
            resamples=1000,
        )
        diffs.append(p.diff)
    query = time.perf_counter() - t0
    return {
        "rows": rows,
        "write_s": round(write, 1),
        "write_rows_per_s": round(rows / write),
        "count_s": round(t1 - t0, 2),
        "paired_query_s": round(query, 1),
        "paired_rows_read": len(model),
        "tasks_compared": len(diffs),
        "bootstrap_resamples": 1000,
        "peak_rss_mb": round(_rss_mb()),
    }


BENCHES = {
    "plan-500k": plan_500k,
    "resume-500k": resume_500k,
    "simulate": simulate_all,
    "ray-cluster": ray_cluster,
    "engine-loads": engine_loads,
    "export": export,
    "samples-10m": samples_10m,
}


if __name__ == "__main__":
    name = sys.argv[1]
    print(json.dumps(BENCHES[name]()))
