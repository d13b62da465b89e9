"""`quantgrid status` and `quantgrid logs`: read the ledger (never MLflow), render with rich.

status: per (model, format) progress with the rate of finished cells and an ETA, the attempts in
flight, and every failed cell with its class and message; `--watch` refreshes until the sweep
stops. logs: the attempts of a sweep or one cell, and the tail of each attempt's worker log.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Group
from rich.table import Table

from orchestrator.console import make_console
from orchestrator.store.ledger import Ledger


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def status_view(ledger: Ledger, sweep: str) -> tuple[Group, int]:
    """(renderable, failed cell count)."""
    info = ledger.sweep_info(sweep) or {}
    counts = ledger.counts(sweep)
    now = time.time()
    head = f"sweep [cyan]{sweep}[/cyan] ({info.get('state', '?')}): " + ", ".join(
        f"{v} {k}" for k, v in counts.items() if v
    )
    t = Table("model", "format", "execution", "done", "failed", "running", "pending", "cells/min", "ETA")
    total_left, total_rate = 0, 0.0
    for r in ledger.rates(sweep):
        pending = r["total"] - r["done"] - r["failed"] - r["running"]
        left = pending + r["running"]
        rate = None
        if r["done"] and r["first_start"] and r["last_done"] and r["last_done"] > r["first_start"]:
            rate = r["done"] / (r["last_done"] - r["first_start"])  # cells per second while this group ran
        eta = left / rate if rate and left else (0 if not left else None)
        total_left += left
        total_rate += rate or 0.0
        t.add_row(
            r["model"],
            r["format"],
            r["execution"] or "native",
            str(r["done"]),
            str(r["failed"]),
            str(r["running"]),
            str(pending),
            f"{rate * 60:.1f}" if rate else "—",
            "done" if not left else _dur(eta),
        )
    parts: list = [head]
    if info.get("host"):  # the machine class the sweep was planned for (quantgrid/host.py)
        h = info["host"]
        parts.append(
            f"host {h.get('name')} ({h.get('cpu_model') or h.get('gpu') or ''}"
            + (
                f", vLLM {h.get('vllm_library')}, bf16 hardware: {'yes' if h.get('native_bf16') else 'no'}"
                if h.get("device") == "cpu"
                else ""
            )
            + ")"
        )
    parts.append(t)
    live = [a for a in ledger.attempts(sweep) if a["state"] == "leased"]
    for a in live:
        parts.append(
            f"  running {a['stage']} (pid {a['worker_pid']}, node {a['node']}, {_dur(now - a['started'])}"
            + (f", OOM fallback {a['fallback']['steps']}" if a["fallback"] else "")
            + ")"
        )
    if total_left and info.get("state") == "running":
        parts.append(
            f"  {total_left} cells left"
            + (f", ETA {_dur(total_left / total_rate)} at the current rate" if total_rate else "")
        )
    for c in ledger.cells(sweep):
        if c["state"] == "failed":
            parts.append(
                f"[red]failed[/red] {c['model']}/{c['format']}/{c['task']}: {c['failure_class']}: {c['failure']}"
            )
    if counts["rejected"]:
        parts.append(
            f"[yellow]{counts['rejected']} late results from given-up attempts were rejected (fenced)[/yellow]"
        )
    if info.get("state") == "incomplete":  # the run ended with cells neither scored nor failed
        left = [c for c in ledger.cells(sweep) if c["state"] not in ("done", "failed")]
        parts.append(
            f"[yellow]the last run ended with {len(left)} cells neither scored nor failed"
            + (
                f" (e.g. {left[0]['model']}/{left[0]['format']}/{left[0]['task']}"
                + (f": {left[0]['failure_class']}: {left[0]['failure']}" if left[0]["failure_class"] else "")
                + ")"
                if left
                else ""
            )
            + f": `quantgrid resume {sweep}` scores them[/yellow]"
        )
    fallbacks: dict[tuple[str, str, str], list[str]] = {}
    for r in ledger.results(sweep):  # scored on an engine rebuilt after an OOM (orchestrator/execution/scheduler.py)
        fb = (r.get("provenance") or {}).get("oom_fallback")
        if fb:
            what = "+".join(fb.get("steps") or []) + (" (may change scores)" if fb.get("may_change_scores") else "")
            fallbacks.setdefault((r["model"], r["format"], what), []).append(r["task"])
    for (model, fmt, what), tasks in sorted(fallbacks.items()):
        parts.append(f"[yellow]scored after OOM fallback {what}: {model}/{fmt} {', '.join(sorted(tasks))}[/yellow]")
    verdicts = ledger.adaptive(sweep)  # adaptive cells: the verdict so far, per batch (sweep.adaptive)
    if verdicts:
        a = Table("model", "format", "task", "verdict", "CS on E[Z]", "documents", "saved", title="adaptive verdicts")
        for v in verdicts:
            a.add_row(
                v["model"],
                v["format"],
                v["task"],
                v["verdict"] + ("" if v.get("final") else " (so far)"),
                f"[{v['low']:+.3f}, {v['high']:+.3f}]",
                f"{v['documents']} / {v['max_documents']}",
                str(v["saved"]) if v.get("final") else "—",
            )
        used, full = sum(v["documents"] for v in verdicts), sum(v["max_documents"] for v in verdicts)
        parts += [a, f"  adaptive: {used} of {full} documents scored"]
    for w in ledger.withdrawn(sweep):
        parts.append(f"[yellow]withdrawn result {w['cell_key'][:12]}: {w['reason']} (rescored on resume)[/yellow]")
    return Group(*parts), counts["failed"]


def show_status(ledger: Ledger, sweep: str, watch: float = 0.0) -> int:
    console = make_console()
    if not watch:
        view, failed = status_view(ledger, sweep)
        console.print(view)
        return 1 if failed else 0
    from rich.live import Live

    with Live(console=console, refresh_per_second=2) as live:
        while True:
            view, failed = status_view(ledger, sweep)
            live.update(view)
            if (ledger.sweep_info(sweep) or {}).get("state") != "running":
                return 1 if failed else 0
            time.sleep(watch)


def show_logs(ledger: Ledger, sweep: str, cell: str | None, lines: int = 40) -> int:
    """Attempts (optionally of one cell: key prefix or model/format/task) and their log tails."""
    console = make_console()
    key = None
    if cell:
        matches = [
            c
            for c in ledger.cells(sweep)
            if c["cell_key"].startswith(cell) or f"{c['model']}/{c['format']}/{c['task']}" == cell
        ]
        if not matches:
            from orchestrator.config import ConfigError

            raise ConfigError(f"sweep {sweep} has no cell '{cell}' (give a cell key prefix or model/format/task)")
        key = matches[0]["cell_key"]
        c = matches[0]
        console.print(
            f"cell {key}: {c['model']}/{c['format']}/{c['task']} seed {c['seed']}: {c['state']}"
            + (f" ({c['failure_class']}: {c['failure']})" if c["failure_class"] else "")
        )
    attempts = ledger.attempts(sweep, key)
    if not attempts:
        console.print("no attempts recorded yet")
        return 0
    t = Table("token", "stage", "state", "started", "took", "pid", "class", "log")
    for a in attempts:
        took = (a["finished"] or time.time()) - a["started"] if a["started"] else None
        t.add_row(
            str(a["token"]),
            a["stage"],
            a["state"],
            time.strftime("%H:%M:%S", time.localtime(a["started"])),
            _dur(took),
            str(a["worker_pid"] or ""),
            a["failure_class"] or "",
            a["log_path"] or "",
        )
    console.print(t)
    for a in attempts if key else attempts[-1:]:
        path = Path(a["log_path"] or "")
        if a["log_path"] and path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            console.rule(f"{a['stage']} attempt {a['token']} ({a['state']}): last {len(tail)} lines of {path}")
            console.print("\n".join(tail), markup=False, highlight=False)
        if a["failure"]:
            console.print(f"[red]{a['failure_class']}: {a['failure']}[/red]")
    return 0
