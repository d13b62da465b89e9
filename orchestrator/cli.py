"""`quantgrid` command line.

  quantgrid run  [hydra overrides...]   e.g. sweep=demo sweep.formats=[fp8,w4a16]
  quantgrid submit [overrides...] --address http://HEAD:8265 [--wait S]   a Ray job on a cluster
  quantgrid plan [hydra overrides...] [--json] [--nodes N --gpus-per-node G]
  quantgrid resume SWEEP | status SWEEP [--watch S] | logs SWEEP [CELL] | cancel SWEEP | gc
  quantgrid report SWEEP   paper-layout tables with paired bootstrap CIs, HTML + PNG plots
  quantgrid export SWEEP [--tracking-uri URI]   (re-)push results from the ledger to MLflow
  quantgrid ui [SWEEP]     the MLflow UI on the sweep's store, 127.0.0.1

Bad input gets one line on stderr and exit 2, never a traceback; failed cells exit 1 after the
rest of the sweep has run and been recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from orchestrator.execution import run
from orchestrator.config import ConfigError, SearchPath, compose, load_sweep
from orchestrator.planning.plan import execution_lines
from quantgrid.checkpoint import CheckpointError


def _error(msg: str) -> int:
    print(f"quantgrid: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def _plan(overrides: list[str], conf: SearchPath):
    from orchestrator.planning.plan import expand

    return expand(load_sweep(compose(overrides, conf), conf))


def cmd_plan(args) -> int:
    plan = _plan(args.overrides, args.conf)
    counts = plan.counts()
    est = plan.estimate()
    sim = None
    if args.nodes:
        from orchestrator.planning.placement import NodeShape
        from orchestrator.planning.simulate import simulate

        shape = NodeShape(cpus=args.cpus_per_node, gpus=args.gpus_per_node, memory_gb=args.memory_gb_per_node)
        sim = simulate(plan.stages, [shape] * args.nodes, plan.sweep.resources, None).as_dict()
    power = None
    if args.pilot:
        from orchestrator.report.power import plan_power

        pilot = Path(args.pilot)
        if not (pilot / "results.jsonl").is_file():
            raise ConfigError(f"--pilot {pilot}: no results.jsonl there (a finished run's folder, e.g. runs/demo)")
        if not all(0 < d < 1 for d in args.drop) or not 0 < args.power < 1 or not 0 < args.alpha < 1:
            raise ConfigError("--drop, --power and --alpha must each be in (0, 1)")
        power = plan_power(pilot, args.drop, args.alpha, args.power, plan.sweep.baseline)
    if args.json:
        print(
            json.dumps(
                {
                    "sweep": plan.sweep.name,
                    "counts": counts,
                    "engine_splits": plan.engine_splits(),
                    "estimate": est,
                    "simulation": sim,
                    "power": power,
                    "host": plan.sweep.host.as_dict() if plan.sweep.host else None,
                    "sizing": plan.sweep.sizing,
                    "execution": {
                        m: {f: ex.as_dict() for f, ex in fmts.items()} for m, fmts in plan.sweep.execution.items()
                    },
                    "cells": [
                        {
                            "key": c.key,
                            "model": c.model.name,
                            "format": c.format.name,
                            "task": c.task.name,
                            "seed": c.seed,
                        }
                        for c in plan.cells
                    ],
                    "stages": [
                        {
                            "key": s.key,
                            "name": s.name,
                            "kind": s.kind.value,
                            "depends_on": s.depends_on,
                            "cells": [c.key for c in s.cells],
                        }
                        for s in plan.stages
                    ],
                }
            )
        )
        return 0
    print(f"sweep {plan.sweep.name}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    for line in execution_lines(plan.sweep):
        print(line)
    for setting, tasks in plan.engine_splits().items():
        print(
            f"a second engine load per (model, format, seed): {setting} for {', '.join(tasks)} (an engine-level "
            "setting)"
        )
    acc = est["by_model_format"][0]["accelerator"] if est["by_model_format"] else "cpu"
    unit = "CPU-hours" if acc == "cpu" else "GPU-hours"
    print(
        f"estimated {unit} ({acc}, cost model: orchestrator/planning/cost.py, overridable as `cost:`): "
        f"{est['device_hours']:.2f}"
    )
    for r in est["by_model_format"][:50]:
        print(
            f"  {r['model']}/{r['format']}: {r['device_hours']:.2f} {unit}, "
            f"{r['prompt_tokens'] / 1e6:.2f}M prompt + {r['output_tokens'] / 1e6:.2f}M generated tokens"
        )
    if len(est["by_model_format"]) > 50:
        print(f"  ... {len(est['by_model_format']) - 50} more (model, format) groups (--json for all)")
    if power:
        print(
            f"power (pilot {power['pilot']}, McNemar, alpha {power['alpha']}, power {power['power']}): documents "
            "needed per task to detect a recovery drop of " + ", ".join(f"{d:g}" for d in power["recovery_drops"])
        )
        for task, r in power["tasks"].items():
            need = ", ".join(f"{d}: {n if n is not None else 'n/a'}" for d, n in r["documents_needed"].items())
            print(
                f"  {task}: baseline {r['p_base']:.3f}, discordant {r['discordance']:.3f} "
                f"(over {r['documents']} documents) -> {need}"
            )
    if est["by_task"]:
        print("per task (all its cells; tokens from conf/task cost: samples x prompt / output tokens):")
    for t in est["by_task"][:50]:
        print(
            f"  {t['task']}: {t['cells']} cells, {t['samples']:,} samples, {t['prompt_tokens'] / 1e6:.2f}M prompt + "
            f"{t['output_tokens'] / 1e6:.2f}M generated tokens, {t['device_hours']:.2f} {unit}"
        )
    if sim:
        print(
            f"simulated on {args.nodes} x {args.gpus_per_node} GPUs: makespan {sim['makespan_s'] / 3600:.2f} h "
            f"(lower bound {sim['lower_bound_s'] / 3600:.2f} h, x{sim['ratio']}), {sim['engine_loads']} engine loads, "
            f"utilization {sim['utilization']:.0%}"
        )
    if len(plan.stages) <= 200:
        for s in plan.stages:
            print(f"  {s.name}" + (f"  [{', '.join(c.task.name for c in s.cells)}]" if s.cells else ""))
    return 0


def cmd_run(args) -> int:
    return run.execute(
        _plan(args.overrides, args.conf), args.overrides, [str(d) for d in args.conf.extra], args.verbose
    )


def _ledger_for(name: str, run_root: str):
    from orchestrator.store.ledger import Ledger

    path = Path(run_root) / name / "ledger.db"
    if not path.exists():
        raise ConfigError(f"no sweep '{name}' under {Path(run_root).resolve()} (no {path})")
    return Ledger(path)


def _stored_overrides(ledger, name: str, run_dir: str, conf: SearchPath) -> tuple[list[str], SearchPath]:
    """(overrides, search path) a ledger's sweep was run with, pointed at `run_dir`; its config
    dirs are layered in front so composing them again finds the same files."""
    info = ledger.sweep_info(name)
    if info is None:
        raise ConfigError(f"ledger {ledger.path} holds no sweep named '{name}'")
    overrides = [o for o in info["overrides"] if not o.startswith("run_dir=")] + [f"run_dir={Path(run_dir).resolve()}"]
    return overrides, conf.with_extra(info["conf_dirs"])


def _sweep_plan(ledger, name: str, run_dir: str, conf: SearchPath):
    """The plan a ledger's sweep was run with, composed again."""
    return _plan(*_stored_overrides(ledger, name, run_dir, conf))


def cmd_report(args) -> int:
    ledger = _ledger_for(args.sweep, args.run_dir)
    plan = _sweep_plan(ledger, args.sweep, args.run_dir, args.conf)
    paths = run.make_report(plan, ledger, Path(args.run_dir).resolve() / args.sweep, args.resamples, args.seed)
    print((Path(args.run_dir) / args.sweep / "report" / "report.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_export(args) -> int:
    """Push the ledger's results to MLflow (again, or to another server): idempotent."""
    from orchestrator.store.export import Exporter
    from orchestrator.store.tracking import local_tracking_uri

    ledger = _ledger_for(args.sweep, args.run_dir)
    plan = _sweep_plan(ledger, args.sweep, args.run_dir, args.conf)
    run_dir = Path(args.run_dir).resolve() / args.sweep
    uri = (
        args.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or plan.sweep.tracking_uri
        or local_tracking_uri(run_dir)
    )
    exporter = Exporter(run_dir / "ledger.db", args.sweep, uri, plan, artifact_root=run_dir / "mlartifacts")
    t0 = time.perf_counter()
    info = ledger.sweep_info(args.sweep) or {}
    sizing = run_dir / "sizing.json"
    try:
        # a run the server never saw: its params too, as that run recorded them (host, sizing)
        exporter.log_sweep(run_dir, info.get("host"), json.loads(sizing.read_text()) if sizing.exists() else None)
        pushed = exporter.push(run_dir)
        state = info.get("state")
        if state in ("done", "failed"):
            exporter.finish(
                {"cells_done": ledger.counts(args.sweep)["done"]}, "FAILED" if state == "failed" else "FINISHED"
            )
    except Exception as exc:
        total, acked = ledger.export_counts(args.sweep, uri)
        raise ConfigError(
            f"MLflow at {uri} unreachable or failing ({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); "
            f"{acked} of {total} results exported, the rest stay in the ledger: run export again"
        ) from None
    total, acked = ledger.export_counts(args.sweep, uri)
    print(f"exported {pushed} results to {uri} in {time.perf_counter() - t0:.1f}s ({acked} of {total} acknowledged)")
    return 0


def cmd_ui(args) -> int:
    from orchestrator.monitor.ui import serve

    return serve(Path(args.run_dir), args.sweep, args.host, args.port)


def cmd_resume(args) -> int:
    """Rerun only missing and failed cells, from the ledger alone (not MLflow)."""
    ledger = _ledger_for(args.sweep, args.run_dir)
    overrides, conf = _stored_overrides(ledger, args.sweep, args.run_dir, args.conf)
    ledger.close()
    # Where and how to run may change on resume (another cluster, other workers); what a cell
    # is may not: that would be a different sweep.
    allowed = ("resources.", "+resources.", "ray_address=", "tracking_uri=", "cost.", "+cost.")
    bad = [o for o in args.overrides if not o.startswith(allowed)]
    if bad:
        raise ConfigError(
            f"resume takes only resources.*, ray_address, tracking_uri and cost.* overrides, got {bad[0]} "
            "(other settings change the cells: start a new sweep with `quantgrid run`)"
        )
    plan = _plan(overrides + args.overrides, conf)
    return run.execute(plan, overrides + args.overrides, [str(d) for d in conf.extra], args.verbose)


def cmd_submit(args) -> int:
    """Submit the sweep as a Ray job (Ray's job submission API); print its id and how to follow it."""
    from orchestrator.execution import preflight, submit

    plan = _plan(args.overrides, args.conf)  # validated here: bad config never reaches the cluster
    for w in preflight.check(plan, submitting=True):
        print(f"warning: {w}", file=sys.stderr)
    job_id = submit.submit(plan, args.overrides, args.address, [str(d) for d in args.conf.extra])
    name, run_dir = plan.sweep.name, Path(plan.sweep.run_dir)
    print(f"submitted sweep {name} as Ray job {job_id}")
    print(f"  follow:  ray job logs --follow --address {args.address} {job_id}")
    print(f"  status:  quantgrid status {name} --address {args.address} --run-dir {run_dir}")
    print(f"  logs:    quantgrid logs {name} --address {args.address} --run-dir {run_dir}")
    print(f"  cancel:  quantgrid cancel {name} --address {args.address} --run-dir {run_dir}")
    if args.wait:
        state = submit.wait(args.address, job_id, args.wait)
        print(f"job {job_id}: {state}")
        return 0 if state == "SUCCEEDED" else 1
    return 0


def _visible(args) -> bool:
    """Whether this machine sees the sweep's run directory (a submitted sweep's may be elsewhere)."""
    return (Path(args.run_dir) / args.sweep / "ledger.db").exists()


def cmd_status(args) -> int:
    from orchestrator.monitor.status import show_status

    if args.address:  # a submitted sweep: its Ray jobs, then its ledger where this machine sees it
        from orchestrator.execution import submit

        print("\n".join(submit.job_lines(args.address, args.sweep)))
        if not _visible(args):
            return 0
    return show_status(_ledger_for(args.sweep, args.run_dir), args.sweep, watch=args.watch)


def cmd_logs(args) -> int:
    from orchestrator.monitor.status import show_logs

    if args.address:
        from orchestrator.execution import submit

        print(submit.job_logs(args.address, args.sweep, args.lines))
        if not _visible(args):
            return 0
    return show_logs(_ledger_for(args.sweep, args.run_dir), args.sweep, args.cell, lines=args.lines)


def cmd_gc(args) -> int:
    from orchestrator.store.cache_gc import collect
    from quantgrid.runtime import cache_dir

    roots = [Path(r) for r in (args.run_dir or ["runs"])]
    for r in roots:
        if not r.is_dir():
            raise ConfigError(f"--run-dir {r}: not a directory")
    removed, kept = collect(cache_dir(), roots, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path, size in removed:
        print(f"{verb} {path} ({size / 2**20:.1f} MiB)")
    print(
        f"gc: {verb} {len(removed)} unreferenced artifacts ({sum(s for _, s in removed) / 2**20:.1f} MiB); "
        f"kept {kept} referenced by ledgers under {', '.join(map(str, roots))} or being built"
    )
    return 0


def cmd_cancel(args) -> int:
    """Mark the sweep cancelled in its ledger: the driver stops at the next cell and results of
    attempts still running are rejected (fenced), never recorded."""
    if args.address:  # a submitted sweep: stop its Ray job (the driver), mark the ledger where visible
        from orchestrator.execution import submit

        stopped = submit.stop_jobs(args.address, args.sweep)
        print(
            f"sweep {args.sweep}: stopped Ray job(s) {', '.join(stopped)}"
            if stopped
            else f"sweep {args.sweep}: no running Ray job"
        )
        if not _visible(args):
            return 0
    ledger = _ledger_for(args.sweep, args.run_dir)
    if ledger.sweep_info(args.sweep) is None:
        raise ConfigError(f"no sweep '{args.sweep}' in {ledger.path}")
    ledger.set_sweep_state(args.sweep, "cancelled")
    print(f"sweep {args.sweep}: cancelled ({ledger.counts(args.sweep)['done']} cells done are kept)")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        print(f"quantgrid: error: {message} (see quantgrid --help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="quantgrid", description="LLM quantization study orchestrator")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_run = sub.add_parser("run", help="run a sweep: quantize -> vLLM -> lm-eval -> MLflow")
    p_run.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweep=demo sweep.formats=[fp8]")
    p_run.add_argument("-v", "--verbose", action="store_true", help="show worker logs")
    p_run.set_defaults(func=cmd_run)
    p_submit = sub.add_parser("submit", help="submit a sweep as a Ray job to a cluster (Ray's job submission API)")
    p_submit.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweep=paper run_dir=/shared/runs")
    p_submit.add_argument("--address", required=True, help="the head's dashboard / job API, e.g. http://HEAD:8265")
    p_submit.add_argument("--wait", type=float, default=0, metavar="S", help="wait up to S seconds for the job to end")
    p_submit.set_defaults(func=cmd_submit)
    p_plan = sub.add_parser("plan", help="expand a sweep into cells and stages without running it")
    p_plan.add_argument("overrides", nargs="*")
    p_plan.add_argument("--json", action="store_true", help="the whole plan, machine-readable")
    p_plan.add_argument("--nodes", type=int, default=0, help="also simulate the sweep on this many nodes")
    p_plan.add_argument("--gpus-per-node", type=int, default=8)
    p_plan.add_argument("--cpus-per-node", type=int, default=64)
    p_plan.add_argument("--memory-gb-per-node", type=float, default=0.0)
    p_plan.add_argument(
        "--pilot", metavar="RUN_DIR", help="a finished run (e.g. runs/demo): documents each task needs for --drop"
    )
    p_plan.add_argument(
        "--drop", type=float, nargs="+", default=[0.01, 0.03], help="recovery drops to detect (0.01 = 1 point)"
    )
    p_plan.add_argument("--power", type=float, default=0.8)
    p_plan.add_argument("--alpha", type=float, default=0.05)
    p_plan.set_defaults(func=cmd_plan)
    p_resume = sub.add_parser("resume", help="rerun only missing and failed cells of a sweep, from its ledger")
    p_resume.add_argument("sweep")
    p_resume.add_argument(
        "overrides", nargs="*", help="where/how to run now, e.g. ray_address=auto resources.max_retries=4"
    )
    p_resume.add_argument("--run-dir", default="runs", help="where the sweep's run directory lives (default: runs)")
    p_resume.add_argument("-v", "--verbose", action="store_true")
    p_resume.set_defaults(func=cmd_resume)
    p_status = sub.add_parser("status", help="per (model, format) progress and failures of a sweep, from its ledger")
    p_status.add_argument("sweep")
    p_status.add_argument("--run-dir", default="runs")
    p_status.add_argument("--address", help="a submitted sweep's Ray job API (http://HEAD:8265): its jobs too")
    p_status.set_defaults(func=cmd_status)
    p_status.add_argument("--watch", type=float, default=0.0, metavar="SECONDS", help="refresh until the sweep stops")
    p_logs = sub.add_parser("logs", help="attempts of a sweep (or one cell) and their worker logs, from its ledger")
    p_logs.add_argument("sweep")
    p_logs.add_argument("cell", nargs="?", help="cell key (or prefix) or model/format/task")
    p_logs.add_argument("--run-dir", default="runs")
    p_logs.add_argument("--address", help="a submitted sweep's Ray job API (http://HEAD:8265): its jobs too")
    p_logs.add_argument("-n", "--lines", type=int, default=40)
    p_logs.set_defaults(func=cmd_logs)
    p_gc = sub.add_parser("gc", help="remove cached checkpoints that no sweep's ledger references")
    p_gc.add_argument("--run-dir", action="append", help="run root(s) whose ledgers keep artifacts (default: runs)")
    p_gc.add_argument("--dry-run", action="store_true")
    p_gc.set_defaults(func=cmd_gc)
    p_report = sub.add_parser("report", help="paper-layout tables with paired bootstrap CIs, HTML page and plots")
    p_report.add_argument("sweep")
    p_report.add_argument("--run-dir", default="runs")
    p_report.add_argument("--resamples", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    p_report.add_argument("--seed", type=int, default=0)
    p_report.set_defaults(func=cmd_report)
    p_export = sub.add_parser("export", help="push a sweep's results from its ledger to MLflow (idempotent)")
    p_export.add_argument("sweep")
    p_export.add_argument("--run-dir", default="runs")
    p_export.add_argument("--tracking-uri", default="", help="another server, e.g. http://127.0.0.1:5000")
    p_export.set_defaults(func=cmd_export)
    p_ui = sub.add_parser("ui", help="serve the MLflow UI on a sweep's tracking store (127.0.0.1; Ctrl-C stops it)")
    p_ui.add_argument("sweep", nargs="?")
    p_ui.add_argument("--run-dir", default="runs")
    p_ui.add_argument("--host", default="127.0.0.1")
    p_ui.add_argument("--port", type=int, default=0, help="default: a free port")
    p_ui.set_defaults(func=cmd_ui)
    p_cancel = sub.add_parser("cancel", help="stop a running sweep at its next cell (done cells are kept)")
    p_cancel.add_argument("sweep")
    p_cancel.add_argument("--run-dir", default="runs")
    p_cancel.add_argument("--address", help="a submitted sweep's Ray job API (http://HEAD:8265): its jobs too")
    p_cancel.set_defaults(func=cmd_cancel)
    for p in (p_run, p_plan, p_resume, p_submit):
        p.add_argument(
            "--conf-dir",
            action="append",
            default=[],
            metavar="DIR",
            help="extra config tree (model/, format/, task/, sweep/) layered over conf/",
        )
    # Overrides may come before or after options (`resume S --run-dir R k=v`): argparse leaves
    # positionals after an option unparsed, so take the ones that look like overrides.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    conf_dirs = getattr(args, "conf_dir", [])
    for d in conf_dirs:
        if not Path(d).is_dir():
            return _error(f"--conf-dir {d}: not a directory")
    args.conf = SearchPath().with_extra(conf_dirs)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError) as e:
        return _error(e)
    except KeyboardInterrupt:
        return _error("interrupted; results recorded so far are kept in the run directory")
    except BrokenPipeError:  # `quantgrid plan ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except Exception as e:  # an internal error: one line here, the traceback in a log file
        import traceback

        from quantgrid.runtime import cache_dir

        log = cache_dir() / "last-error.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        print(
            f"quantgrid: error: {type(e).__name__}: {' '.join(str(e).split())[:300]} (traceback: {log})",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
