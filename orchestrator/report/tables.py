"""The end-of-run table: per format and task, score and recovery vs the baseline format.

Recovery as the paper defines it: quantized / baseline x 100, and baseline / quantized x 100 for
lower-is-better metrics (perplexity). "N/A" by analysis.not_applicable, the rule the paired report
uses, with the baseline's 95% interval as score +- 1.96 x lm-eval's stderr (no per-sample data here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.report.analysis import not_applicable


@dataclass
class Row:
    model: str
    format: str
    task: str
    metric: str
    score: float | None
    stderr: float | None
    recovery: float | None
    recovery_note: str
    num_samples: int
    execution: str = "native"  # native | emulated (quantgrid/capability.py): emulated scores are flagged
    # OOM fallback steps the engine was built with (orchestrator/execution/scheduler.py), and whether one of
    # them can change scores (a shorter context truncates documents): flagged next to the score.
    fallback: tuple[str, ...] = ()
    fallback_changes_scores: bool = False


def _stderr_key(metric: str) -> str:
    name, _, flt = metric.partition(",")
    return f"{name}_stderr,{flt}" if flt else f"{name}_stderr"


def recovery(
    score: float | None, base: float | None, base_stderr: float | None, higher_is_better: bool, chance: float | None
) -> tuple[float | None, str]:
    if score is None or base is None:
        return None, "missing"
    # The same rule as the paired report, with lm-eval's stderr for the baseline's interval.
    na = not_applicable(base, base - 1.96 * (base_stderr or 0.0), chance)
    if na or (score == 0 and not higher_is_better):
        return None, na or "N/A (score 0)"
    ratio = score / base if higher_is_better else base / score
    return 100.0 * ratio, ""


def build_rows(results: list[dict[str, Any]], baseline: str, tasks: dict[str, dict[str, Any]]) -> list[Row]:
    """`results`: RunStore records; `tasks`: name -> {metric, higher_is_better, chance}."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in results:
        latest[(r["model"], r["format"], r["task"])] = r  # a re-run supersedes
    rows = []
    for (model, fmt, task), r in latest.items():
        spec = tasks.get(
            task,
            {"metric": r.get("primary_metric"), "higher_is_better": r.get("higher_is_better", True), "chance": None},
        )
        metric = spec["metric"]
        score = r["metrics"].get(metric)
        stderr = r["metrics"].get(_stderr_key(metric))
        base = latest.get((model, baseline, task))
        if fmt == baseline:
            rec, note = None, ("baseline" if score is not None else "missing")
        elif base is None:
            rec, note = None, "no baseline"
        else:
            rec, note = recovery(
                score,
                base["metrics"].get(metric),
                base["metrics"].get(_stderr_key(metric)),
                spec["higher_is_better"],
                spec.get("chance"),
            )
        prov = r.get("provenance") or {}
        mode = prov.get("execution_mode") or "native"
        fb = prov.get("oom_fallback") or {}
        rows.append(
            Row(
                model,
                fmt,
                task,
                metric,
                score,
                stderr,
                rec,
                note,
                int(r.get("num_samples", 0)),
                mode,
                tuple(fb.get("steps") or ()),
                bool(fb.get("may_change_scores")),
            )
        )
    return rows


COLUMNS = ("format", "task", "metric", "score", "± stderr", "recovery %", "n")


def _by_model(rows: list[Row], format_order: list[str]) -> dict[str, list[tuple[str, ...]]]:
    """Rows per model, in format order then task, as the table's display strings."""
    out: dict[str, list[tuple[str, ...]]] = {}
    key = lambda r: (format_order.index(r.format) if r.format in format_order else 99, r.task)
    for r in sorted(rows, key=lambda r: (r.model, *key(r))):
        rec = f"{r.recovery:.1f}" if r.recovery is not None else r.recovery_note
        if r.recovery is not None and r.recovery_note:
            rec += f" ({r.recovery_note})"
        score = "—" if r.score is None else f"{r.score:.4g}"
        if r.fallback:  # scored after an OOM fallback: "!" where it can change the score itself
            score += f" ({'!' if r.fallback_changes_scores else ''}{'+'.join(r.fallback)})"
        out.setdefault(r.model, []).append(
            (
                r.format if r.execution == "native" else f"{r.format} ({r.execution})",
                r.task,
                r.metric.split(",")[0],
                score,
                "" if r.stderr is None else f"{r.stderr:.3g}",
                rec,
                str(r.num_samples),
            )
        )
    return out


def to_markdown(rows: list[Row], format_order: list[str], notes: dict[str, str] | None = None) -> str:
    lines = []
    for model, cells in _by_model(rows, format_order).items():
        lines.append(f"### {model}" + (f" — {notes[model]}" if notes and notes.get(model) else ""))
        lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        lines.append("")
    return "\n".join(lines)


def print_table(rows: list[Row], format_order: list[str], console=None, notes: dict[str, str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for model, cells in _by_model(rows, format_order).items():
        t = Table(title=f"{model}" + (f"\n[dim]{notes[model]}[/dim]" if notes and notes.get(model) else ""))
        for col in COLUMNS:
            t.add_column(col, justify="left" if col in ("format", "task", "metric") else "right")
        for c in cells:
            t.add_row(*c)
        console.print(t)
