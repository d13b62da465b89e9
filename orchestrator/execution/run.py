"""`quantgrid run` / `resume` end to end, and the report: what the CLI calls once a plan is composed.

The driver (orchestrator/execution/driver.py) schedules the work; this module wires it to the ledger, the
local run store, the background MLflow exporter and the console, and writes the tables at the end.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from orchestrator.config import ConfigError
from orchestrator.planning.plan import execution_lines

# Seconds the final MLflow export (last results, runs closed, report attached) may take before the
# run exits anyway, leaving the rest buffered in the ledger: short once the server has failed a
# push, longer while it has answered every one (a healthy server with a large last batch).
EXPORT_GRACE_S = 10.0
HEALTHY_EXPORT_GRACE_S = 30.0
LOCAL_EXPORT_GRACE_S = 600.0


def make_report(
    plan, ledger, run_dir: Path, resamples: int = 2000, seed: int = 0, log=print, attach: bool = True
) -> list[Path]:
    """Write report/ (markdown, HTML, JSON, PNGs) and attach it to the sweep's MLflow parent run
    (`attach=False`: a run attaches it from its background exporter, within its export deadline)."""
    from orchestrator.report import paper as paper_report

    from orchestrator.store.results import check_samples

    sweep = plan.sweep
    everything = ledger.results(sweep.name)
    # A result whose samples file is missing or does not match what was committed is left out and
    # named (the report is written from the rest); `resume` withdraws and rescores it.
    omitted = {
        r["cell_key"]: f"{r['model']}/{r['format']}/{r['task']}: {why}"
        for r in everything
        if (why := check_samples(run_dir, r, full=True))
    }
    for why in omitted.values():
        log(f"left out of the report: {why} (`quantgrid resume {sweep.name}` scores it again)")
    everything = [r for r in everything if r["cell_key"] not in omitted]
    keys = {c.key for c in plan.cells}
    results = [r for r in everything if r["cell_key"] in keys]
    perf_keys = {c.key for c in plan.perf_cells}
    perf_records = [r for r in everything if r["cell_key"] in perf_keys]
    sens_keys = {c.key for c in plan.sensitivity_cells}
    sens_records = [r for r in everything if r["cell_key"] in sens_keys]
    if not results and not perf_records and not sens_records:
        raise ConfigError(f"sweep {sweep.name} has no results yet")
    tasks = {
        t.name: {"metric": t.metric, "higher_is_better": t.higher_is_better, "chance": t.chance} for t in sweep.tasks
    }
    rows = (
        paper_report.build(
            results,
            run_dir,
            sweep.baseline,
            tasks,
            sweep.suites,
            sweep.format_names,
            resamples,
            seed,
            noise_floor=sweep.noise_floor.format_name(sweep.baseline),
        )
        if results
        else []
    )
    from orchestrator.report import fidelity, verdicts

    dist_tasks = [t.name for t in sweep.tasks if t.scorer_kind == "token_dist"]
    fidelity_rows = fidelity.table(results, run_dir, sweep.baseline, dist_tasks, resamples) if dist_tasks else []
    comps = {c.key for c in plan.comparisons}
    similarity = [r for r in everything if r["cell_key"] in comps]
    perf = _perf_section(sweep, rows, perf_records, run_dir) if perf_records else None
    paths = paper_report.write(
        rows,
        run_dir / "report",
        sweep.name,
        sweep.baseline,
        sweep.format_names,
        {m.name: m.note for m in sweep.models},
        similarity,
        perf,
        sorted(omitted.values()),
        fidelity_rows,
        sweep.noise_floor.format_name(sweep.baseline),
        verdicts.rows(results),
        _mixed_section(sweep, run_dir, results, rows, fidelity_rows, sens_records, resamples, seed),
    )
    if attach:
        attach_to_mlflow(sweep, run_dir, paths, log)
    return paths


def _mixed_section(sweep, run_dir, results, rows, fidelity_rows, sens_records, resamples, seed) -> dict | None:
    """The sensitivity heatmap's data and the bits frontier (orchestrator/report/mixed.py)."""
    if not sens_records and not sweep.mixed.enabled:
        return None
    from orchestrator.report import mixed

    sens = mixed.sensitivity(sens_records, run_dir)
    table = mixed.frontier(results, run_dir, sweep, rows, fidelity_rows, resamples, seed) if rows else []
    return {
        "sensitivity": sens,
        "frontier": table,
        "markdown": mixed.to_markdown(sens, table, sweep.baseline),
        "metrics": mixed.metrics(table, sens),
    }


def attach_to_mlflow(sweep, run_dir: Path, paths: list[Path], log=print) -> None:
    try:
        from orchestrator.store.tracking import attach_report, local_tracking_uri

        uri = os.environ.get("MLFLOW_TRACKING_URI") or sweep.tracking_uri or local_tracking_uri(run_dir)
        if not _tracking_answers(uri):  # never sit in MLflow's HTTP retries against a dead server
            log(
                f"warning: MLflow at {uri} does not answer: the report is not attached (run `quantgrid report "
                f"{sweep.name}` again once it is up)"
            )
            return
        from orchestrator.store.tracking import report_metrics

        metrics = report_metrics(run_dir / "report" / "report.json")
        if attach_report(uri, f"quantgrid/{sweep.name}", paths, metrics):
            log(f"report attached to the sweep's MLflow run ({uri})")
    except Exception as exc:  # tracking down: the files are written, attach later with `report`
        log(f"warning: could not attach the report to MLflow ({type(exc).__name__}: {exc})")


def _tracking_answers(uri: str) -> bool:
    from orchestrator.execution import preflight

    try:
        preflight.check_tracking(uri, timeout_s=3)
        return True
    except ConfigError:
        return False


def _perf_section(sweep, rows: list[dict], records: list[dict], run_dir: Path) -> dict:
    """Perf table + recommendation; recovery from this sweep's accuracy rows, or from the report of
    the sweep named by perf.accuracy_from (a perf-only sweep)."""
    import json

    from orchestrator.report import recommend

    cfg = sweep.perf
    note = (
        "CPU figures are CPU figures: never compare them with GPU numbers (the paper's)."
        if any((r.get("provenance") or {}).get("hardware", {}).get("accelerator", "cpu") == "cpu" for r in records)
        else ""
    )
    source = rows
    if not rows and cfg.accuracy_from:
        other = run_dir.parent / cfg.accuracy_from / "report" / "report.json"
        try:
            source = json.loads(other.read_text())["rows"]
            note += f" Recovery from sweep {cfg.accuracy_from}'s report ({other})."
        except (OSError, ValueError, KeyError, TypeError):
            note += (
                f" Recovery unknown: no report for sweep {cfg.accuracy_from} at {other} "
                f"(run `quantgrid report {cfg.accuracy_from}`, then this report again)."
            )
    recovery = recommend.recovery_by_format(source, sweep.baseline)
    for m in sweep.models:
        recovery.setdefault((m.name, sweep.baseline), 100.0)
    table = recommend.perf_table(records, recovery, cfg.price_per_hour)
    limits = cfg.latency_limits
    recs = recommend.recommend(table, sweep.baseline, list(cfg.recovery_floors), limits)
    return {"table": table, "recommendations": recs, "limits": limits, "note": note.strip()}


def execute(plan, overrides: list[str], conf_dirs: list[str], verbose: bool) -> int:
    """Run a plan: ledger, result store, background MLflow export, the Ray driver, the tables."""
    from orchestrator.execution import preflight
    from orchestrator.execution.sweep_lock import SweepLock, check_local

    warnings = preflight.check(plan)  # before anything is written or started
    sweep = plan.sweep
    run_dir = (Path(sweep.run_dir) / sweep.name).resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ".write-test").touch()
        (run_dir / ".write-test").unlink()
    except OSError as e:
        raise ConfigError(f"run_dir: cannot write {run_dir} ({e.strerror or e})") from None
    check_local(run_dir)
    # One driver per sweep: a second run/resume on a live sweep is refused here, before it could
    # abandon the first driver's leases (orchestrator/execution/sweep_lock.py).
    with SweepLock(run_dir, sweep.name):
        return _execute(plan, overrides, conf_dirs, verbose, run_dir, warnings)


def _execute(
    plan, overrides: list[str], conf_dirs: list[str], verbose: bool, run_dir: Path, warnings: list[str]
) -> int:

    from orchestrator.execution.driver import Driver
    from orchestrator.store.export import BackgroundExport, Exporter
    from orchestrator.console import make_console
    from orchestrator.store.ledger import Ledger
    from orchestrator.report.tables import build_rows, print_table, to_markdown
    from orchestrator.store.results import RunStore, check_samples
    from orchestrator.store.tracking import local_tracking_uri

    console = make_console()
    sweep = plan.sweep
    sweep.run_dir = run_dir
    sink = RunStore(run_dir)
    ledger = Ledger(run_dir / "ledger.db")
    ledger.open_sweep(
        sweep.name,
        list(overrides),
        conf_dirs,
        plan.recorded_cells,
        host=sweep.host.as_dict() if sweep.host else None,
    )
    # A done cell is only as good as its per-sample file: one missing or damaged (a crash, a
    # deleted file) withdraws the result, and this run scores the cell again.
    keys = {c.key for c in plan.recorded_cells}
    bad = {
        r["cell_key"]: why
        for r in ledger.done_records(sweep.name)
        if r["cell_key"] in keys and (why := check_samples(run_dir, r))
    }
    if bad:
        ledger.reopen(sweep.name, bad)
        console.print(
            f"[yellow]{len(bad)} done cells have no trustworthy samples file (e.g. {next(iter(bad.values()))}): "
            "their results are withdrawn and scored again[/yellow]",
            soft_wrap=True,
        )
    for w in warnings:
        console.print(f"[yellow]warning: {w}[/yellow]", soft_wrap=True)
    counts = plan.counts()
    console.print(
        f"[bold]quantgrid[/bold] sweep [cyan]{sweep.name}[/cyan]: "
        + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items())
    )
    for line in execution_lines(sweep):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if sweep.sizing:  # what the budget chose on this host, beside the results it sized
        (run_dir / "sizing.json").write_text(json.dumps(sweep.sizing, indent=1))
    sink.sweep_started(
        sweep.name,
        {
            "params": {
                "models": [m.name for m in sweep.models],
                "formats": sweep.format_names,
                "tasks": [t.name for t in sweep.tasks],
                "seeds": sweep.seeds,
                "host": sweep.host.name if sweep.host else "",
                **(
                    {
                        "sizing": {k: sweep.sizing[k] for k in ("budget_s", "factor", "tasks")},
                        "probe_gflops": sweep.sizing["probe"]["gflops"],
                    }
                    if sweep.sizing
                    else {}
                ),
            }
        },
    )
    # MLflow is fed from the ledger by a background exporter: a slow or absent tracking server
    # never slows the scheduler, and nothing is lost while it is down (`quantgrid export` drains).
    uri = os.environ.get("MLFLOW_TRACKING_URI") or sweep.tracking_uri or local_tracking_uri(run_dir)
    exporter = Exporter(run_dir / "ledger.db", sweep.name, uri, plan, artifact_root=run_dir / "mlartifacts")

    def log_sweep() -> None:  # the parent run's params and tags, once the server answers
        exporter.log_sweep(run_dir, sweep.host.as_dict() if sweep.host else None, sweep.sizing)

    # Never on the scheduler's path: a tracking server that is down (or hangs in MLflow's HTTP
    # retries) delays the export, never the sweep; the ledger buffers every result meanwhile.
    background = BackgroundExport(exporter, run_dir, first=log_sweep).start()
    t0 = time.perf_counter()

    def progress(event: str, **info) -> None:
        from rich.markup import escape

        # Stage names ("evaluate/m/f [task]") and error messages are text, not rich markup.
        info = {k: escape(v) if isinstance(v, str) else v for k, v in info.items()}
        elapsed = f"[dim]{time.perf_counter() - t0:7.1f}s[/dim]"
        if event == "start":
            console.print(f"{elapsed} ▶ {info['stage']}" + (f" ({info['tasks']} cells)" if info.get("tasks") else ""))
        elif event == "done":
            took = "cached" if info.get("reused") else f"{info.get('seconds', 0):.1f}s"
            if info.get("sanity"):  # the post-quantize probe vs the base model (workers/stages/sanity.py)
                took += f"; sanity: KL {info['sanity']['kl_mean']:.3g}, ppl x{info['sanity']['ppl_ratio']:.3g}"
            console.print(f"{elapsed} ✓ {info['stage']} ({took})")
        elif event == "engine":
            what = (
                f"vllm serve healthy on port {info['port']}"
                if "port" in info
                else f"encoder {info['encoder']} loaded"
                if "encoder" in info
                else "base model and its held-out log-probs loaded"
                if "model" in info
                else "engine loaded"
            )
            console.print(f"{elapsed}   {info['stage']}: {what} in {info['load_seconds']:.1f}s")
        elif event == "result":
            tok = info.get("tokens") or {}
            rate = (tok.get("prompt_tokens", 0) + tok.get("generation_tokens", 0)) / max(info["seconds"], 1e-9)
            score = "—" if info["score"] is None else f"{info['score']:.4g}"
            console.print(
                f"{elapsed}   {info['stage']} {info['task']}: {info['metric'].split(',')[0]} = {score} "
                f"({info['seconds']:.1f}s" + (f", {rate:.0f} tok/s)" if tok else ")")
            )
        elif event == "batch":  # an adaptive cell's batch (orchestrator/execution/adaptive.py)
            console.print(
                f"{elapsed}   {info['stage']} {info['task']}: {info['documents']}/{info['max_documents']} documents, "
                f"{info['verdict']} ({info['seconds']:.1f}s)"
            )
        elif event == "mixed":  # a mixed format's assignment (orchestrator/planning/mixed.py)
            groups = ", ".join(f"{n} {c}" for c, n in info["groups"].items())
            console.print(
                f"{elapsed}   {info['stage']}: {info['bits']:.3f} bits ({groups} groups), "
                f"predicted KL {info['predicted_kl']:.4g}"
            )
        elif event == "adaptive":
            console.print(
                f"{elapsed} [yellow]  {info['stage']} {info['task']}: scored whole: {info['skipped']}[/yellow]"
            )
        elif event == "retry":
            console.print(
                f"{elapsed} [yellow]↻ {info['stage']}: {info['error_class']}: {info['message']} "
                f"(attempt {info['attempt']})[/yellow]"
            )
        elif event == "fallback":
            console.print(
                f"{elapsed} [yellow]↻ {info['stage']}: out of memory, retrying with {info['step']} "
                f"({info['message']})[/yellow]"
            )
        elif event == "rejected":
            console.print(f"{elapsed} [yellow]  {info['task']}: late result from a given-up attempt rejected[/yellow]")
        elif event == "failed":
            console.print(f"{elapsed} [red]✗ {info['stage']}: {info['error_class']}: {info['message']}[/red]")
        elif event == "node":
            style = "yellow" if info["state"] == "lost" else "dim"
            console.print(f"{elapsed} [{style}]  Ray node {info['node']} {info['state']}[/{style}]")
        elif event == "placement":
            console.print(
                f"{elapsed} [dim]  {info['stage']}: placement group on nodes {info['actual']} "
                f"(planned {info['planned']})[/dim]"
            )

    done_before = len(ledger.done_keys(sweep.name) & {c.key for c in plan.cells})
    if done_before:
        console.print(
            f"ledger {run_dir / 'ledger.db'}: {done_before} of {len(plan.cells)} cells already done, not rescored"
        )
    driver = Driver(plan, sink, progress=progress, verbose=verbose, ledger=ledger, run_dir=run_dir)
    try:
        summary = driver.run()
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    tasks = {
        t.name: {"metric": t.metric, "higher_is_better": t.higher_is_better, "chance": t.chance} for t in sweep.tasks
    }
    cell_keys = {c.key for c in plan.cells}
    rows = build_rows([r for r in ledger.results(sweep.name) if r["cell_key"] in cell_keys], sweep.baseline, tasks)
    # A run that leaves any cell neither done nor failed (a rejected commit, a job the scheduler
    # dropped) never says done and never exits 0: `status` names them, `resume` scores them.
    stuck = [] if summary.cancelled else ledger.not_terminal(sweep.name, keys)
    if not summary.cancelled:
        ledger.set_sweep_state(sweep.name, "failed" if summary.failed else "incomplete" if stuck else "done")
    notes = {m.name: m.note for m in sweep.models}
    print_table(rows, sweep.format_names, console, notes)
    (run_dir / "table.md").write_text(to_markdown(rows, sweep.format_names, notes))
    if (rows or plan.perf_cells) and not summary.cancelled:
        try:  # the paper-layout report with paired CIs: run_dir/report/
            paths = make_report(plan, ledger, run_dir, log=lambda m: console.print(f"[dim]{m}[/dim]"), attach=False)
            # Attached by the exporter after its last push: a dead server must not hold the exit.
            background.last = lambda: attach_to_mlflow(sweep, run_dir, paths, log=lambda m: None)
            console.print(f"report: {run_dir / 'report' / 'report.html'}")
        except ConfigError as exc:
            console.print(f"[yellow]report skipped: {exc}[/yellow]")
    final = {
        "run_dir": str(run_dir),
        "cells_done": summary.done,
        "cells_failed": len(summary.failed),
        "failed": len(summary.failed),
        "seconds": summary.seconds,
    }
    sink.sweep_finished(final)
    # The last export gets a few seconds, whatever the tracking server does: what it could not
    # take stays in the ledger for `quantgrid export` (one line says how much).
    # A local store (the run directory's sqlite) cannot be down: its export is waited for in full,
    # unless it keeps failing (a broken store, e.g. a deleted working directory).
    remote = uri.startswith(("http://", "https://"))
    grace = (
        (HEALTHY_EXPORT_GRACE_S if not exporter.last_error and _tracking_answers(uri) else EXPORT_GRACE_S)
        if remote
        else LOCAL_EXPORT_GRACE_S
    )
    exported = background.drain(
        final, "FAILED" if summary.failed or stuck else "FINISHED", grace, stop_on_error=not remote
    )
    total, acked = ledger.export_counts(sweep.name, uri)
    if not exported or acked < total:
        why = f" ({exporter.last_error})" if getattr(exporter, "last_error", "") else ""
        when = "" if not remote and why else f" within {grace:g}s"
        console.print(
            f"[yellow]MLflow at {uri} did not take everything{when}{why}: {total - acked} of "
            f"{total} results are buffered in the ledger; `quantgrid export {sweep.name}` pushes them[/yellow]",
            soft_wrap=True,
        )
    console.print(
        f"done in {summary.seconds:.0f}s: {summary.done} cells scored, {summary.skipped} already done, "
        f"{len(summary.failed)} stages failed, {summary.rejected} late results rejected; "
        f"engine loads {summary.engine_loads}"
    )
    console.print(f"results: {run_dir}  MLflow: {uri}")
    if summary.cancelled:
        console.print("[yellow]sweep cancelled: `quantgrid resume` picks it up where it stopped[/yellow]")
    if stuck:
        console.print(
            f"[red]{len(stuck)} cells were neither scored nor failed (e.g. {stuck[0]['model']}/{stuck[0]['format']}/"
            f"{stuck[0]['task']}): sweep marked incomplete; `quantgrid resume {sweep.name}` scores them[/red]",
            soft_wrap=True,
        )
    return 1 if summary.failed or summary.cancelled or stuck else 0
