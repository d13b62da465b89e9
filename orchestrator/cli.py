"""`quantgrid` command line.

  quantgrid run  [hydra overrides...]   e.g. sweep=demo sweep.formats=[fp8,w4a16]
  quantgrid plan [hydra overrides...] [--json]

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

from orchestrator.config import ConfigError, compose, load_sweep
from quantgrid.checkpoint import CheckpointError


def _error(msg: str) -> int:
    print(f"quantgrid: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def _plan(overrides: list[str]):
    from orchestrator.plan import expand

    cfg = compose(overrides)
    return expand(load_sweep(cfg))


def cmd_plan(args) -> int:
    plan = _plan(args.overrides)
    counts = plan.counts()
    if args.json:
        print(json.dumps({
            "sweep": plan.sweep.name, "counts": counts,
            "cells": [{"key": c.key, "model": c.model.name, "format": c.format.name, "task": c.task.name, "seed": c.seed} for c in plan.cells],
            "stages": [{"key": s.key, "name": s.name, "kind": s.kind.value, "depends_on": s.depends_on,
                        "cells": [c.key for c in s.cells]} for s in plan.stages],
        }, indent=1))
    else:
        print(f"sweep {plan.sweep.name}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
        for s in plan.stages:
            print(f"  {s.name}" + (f"  [{', '.join(c.task.name for c in s.cells)}]" if s.cells else ""))
    return 0


def cmd_run(args) -> int:
    from rich.console import Console

    from orchestrator.driver import Driver
    from orchestrator.report import build_rows, print_table, to_markdown
    from orchestrator.results import FanOut, RunStore
    from orchestrator.tracking import MlflowSink, local_tracking_uri

    console = Console(width=max(110, Console().width))
    plan = _plan(args.overrides)
    sweep = plan.sweep
    run_dir = (Path(sweep.run_dir) / sweep.name).resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ".write-test").touch()
        (run_dir / ".write-test").unlink()
    except OSError as e:
        raise ConfigError(f"run_dir: cannot write {run_dir} ({e.strerror or e})") from None
    sweep.run_dir = run_dir
    store = RunStore(run_dir)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or sweep.tracking_uri or local_tracking_uri(run_dir)
    warn = lambda sink, exc: console.print(f"[yellow]warning: {type(sink).__name__}: {exc}[/yellow]")
    try:
        sinks = [store, MlflowSink(uri, experiment=f"quantgrid/{sweep.name}", artifact_root=run_dir / "mlartifacts")]
    except Exception as exc:  # tracking down: results still go to the run store, never lost
        console.print(f"[yellow]warning: MLflow at {uri} unavailable ({type(exc).__name__}); "
                      f"results are kept in {run_dir}[/yellow]")
        sinks = [store]
    sink = FanOut(*sinks, on_error=warn)
    counts = plan.counts()
    console.print(f"[bold]quantgrid[/bold] sweep [cyan]{sweep.name}[/cyan]: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    sink.sweep_started(sweep.name, {
        "params": {"models": [m.name for m in sweep.models], "formats": sweep.format_names,
                   "tasks": [t.name for t in sweep.tasks], "seeds": sweep.seeds, "baseline": sweep.baseline},
        "tags": {"run_dir": str(run_dir), "versions": dict(sweep.versions)},
    })
    t0 = time.perf_counter()

    def progress(event: str, **info) -> None:
        elapsed = f"[dim]{time.perf_counter() - t0:7.1f}s[/dim]"
        if event == "start":
            console.print(f"{elapsed} ▶ {info['stage']}" + (f" ({info['tasks']} tasks)" if info.get("tasks") else ""))
        elif event == "done":
            took = "cached" if info.get("reused") else f"{info.get('seconds', 0):.1f}s"
            console.print(f"{elapsed} ✓ {info['stage']} ({took})")
        elif event == "engine":
            console.print(f"{elapsed}   engine loaded in {info['load_seconds']:.1f}s")
        elif event == "result":
            tok = info.get("tokens") or {}
            rate = (tok.get("prompt_tokens", 0) + tok.get("generation_tokens", 0)) / max(info["seconds"], 1e-9)
            score = "—" if info["score"] is None else f"{info['score']:.4g}"
            console.print(f"{elapsed}   {info['task']}: {info['metric'].split(',')[0]} = {score} "
                          f"({info['seconds']:.1f}s, {rate:.0f} tok/s)")
        elif event == "failed":
            console.print(f"{elapsed} [red]✗ {info['stage']}: {info['error_class']}: {info['message']}[/red]")

    driver = Driver(plan, sink, progress=progress, verbose=args.verbose)
    try:
        summary = driver.run()
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    tasks = {t.name: {"metric": t.metric, "higher_is_better": t.higher_is_better, "chance": t.chance} for t in sweep.tasks}
    rows = build_rows(store.results(), sweep.baseline, tasks)
    notes = {m.name: m.note for m in sweep.models}
    print_table(rows, sweep.format_names, console, notes)
    (run_dir / "table.md").write_text(to_markdown(rows, sweep.format_names, notes))
    sink.sweep_finished({"run_dir": str(run_dir), "cells_done": summary.done, "cells_failed": len(summary.failed),
                         "failed": len(summary.failed), "seconds": summary.seconds})
    console.print(f"done in {summary.seconds:.0f}s: {summary.done} cells scored, {len(summary.failed)} failed; "
                  f"engine loads {summary.engine_loads}")
    console.print(f"results: {run_dir}  MLflow: {uri}")
    return 1 if summary.failed else 0


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
    p_plan = sub.add_parser("plan", help="expand a sweep into cells and stages without running it")
    p_plan.add_argument("overrides", nargs="*")
    p_plan.add_argument("--json", action="store_true")
    p_plan.set_defaults(func=cmd_plan)
    for p in (p_run, p_plan):
        p.add_argument("--conf-dir", action="append", default=[], metavar="DIR",
                       help="extra config tree (model/, format/, task/, sweep/) layered over conf/")
    args = parser.parse_args(argv)
    from orchestrator import config

    for d in args.conf_dir:
        if not Path(d).is_dir():
            return _error(f"--conf-dir {d}: not a directory")
    config.EXTRA_CONF_DIRS[:] = [Path(d).resolve() for d in args.conf_dir]
    try:
        return args.func(args)
    except (ConfigError, CheckpointError) as e:
        return _error(e)
    except KeyboardInterrupt:
        return _error("interrupted; results recorded so far are kept in the run directory")
    except Exception as e:  # an internal error: one line here, the traceback in a log file
        import traceback

        from quantgrid.runtime import cache_dir

        log = cache_dir() / "last-error.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        print(f"quantgrid: error: {type(e).__name__}: {' '.join(str(e).split())[:300]} (traceback: {log})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
