"""`quantgrid report SWEEP`: the paper's tables with paired statistics, as markdown, a
self-contained HTML page and PNG plots, from the ledger and the per-sample Parquet files.

Layout per model: rows = tasks, then suite averages; columns = the baseline's score, then for
each format its score and recovery with a 95% paired-bootstrap CI (plus the score difference
CI and McNemar's exact p for 0/1 outcomes). Recovery is "N/A" where the baseline is 0 or its own
95% CI contains chance (1/k choices).
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.report.analysis import Samples, baseline_ci, not_applicable, paired_task, suite_recovery
from orchestrator.config import ConfigError
from orchestrator.store.results import samples_file
from quantgrid.types import SIMILARITY_SUFFIX


def read_samples(path: Path, columns: list[str] | None = None):
    """A per-sample Parquet file of the run store as a DataFrame; a missing or damaged one is bad
    input in one line (the report is never half written from it)."""
    import pandas as pd

    try:
        return pd.read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise ConfigError(f"missing samples file {path} (the run store is incomplete)") from None
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ConfigError(
            f"corrupt samples file {path}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        ) from None


def load_samples(path: Path, metric: str) -> Samples:
    """Per-document outcomes of the primary metric under its filter (`exact_match,strict-match` ->
    column m_exact_match of the rows whose filter is strict-match): lm-eval logs one sample per
    (document, filter), and mixing filters would count each document twice."""
    name, _, filt = metric.partition(",")
    df = read_samples(path)
    if "filter" in df.columns:  # files written before filters were kept hold one filter's rows
        df = df[df["filter"] == (filt or "none")]
        if df.empty:
            have = sorted(set(read_samples(path, ["filter"])["filter"]))
            raise ConfigError(
                f"samples file {path} has no rows for filter '{filt or 'none'}' of metric "
                f"'{metric}' (filters: {', '.join(have)})"
            )
        if df["doc_id"].duplicated().any():
            raise ConfigError(f"samples file {path} repeats documents under filter '{filt or 'none'}'")
    if f"ll_{name}" in df.columns:  # corpus metric: re-aggregated per resample
        return Samples(df["doc_id"].to_numpy(), df[f"ll_{name}"].to_numpy(float), df[f"units_{name}"].to_numpy(float))
    if f"num_{name}" in df.columns:  # ratio metric (judge win rate): pooled per resample
        return Samples(
            df["doc_id"].to_numpy(), df[f"num_{name}"].to_numpy(float), df[f"den_{name}"].to_numpy(float), ratio=True
        )
    if "perplexity" in name or name == "bits_per_byte":
        raise ConfigError(
            f"samples file {path} has no per-document loglikelihoods for corpus metric '{name}' "
            "(written by an older quantgrid): rerun that cell"
        )
    if f"m_{name}" not in df.columns:
        raise ConfigError(f"samples file {path} has no per-sample '{name}' column")
    return Samples(df["doc_id"].to_numpy(), df[f"m_{name}"].to_numpy(float))


def build(
    results: list[dict[str, Any]],
    run_dir: Path,
    baseline: str,
    tasks: dict[str, dict[str, Any]],
    suites: dict[str, list[str]],
    formats: list[str],
    resamples: int = 2000,
    seed: int = 0,
    noise_floor: str = "",
) -> list[dict]:
    """Report rows: one per (model, task) and per (model, suite), each with every format.
    `noise_floor`: the baseline's rerun format; each format's paired difference is then read
    against it (`within_noise_floor`)."""
    latest = {(r["model"], r["format"], r["task"]): r for r in results}
    models = sorted({m for m, _, _ in latest})
    if not any(f == baseline for _, f, _ in latest):
        raise ConfigError(f"no results for the baseline format '{baseline}': recovery needs it (resume the sweep)")
    rows: list[dict] = []
    for model in models:
        draws: dict[tuple[str, str], tuple[float, float, np.ndarray, np.ndarray]] = {}
        for task, spec in tasks.items():
            base_rec = latest.get((model, baseline, task))
            if base_rec is None:
                continue
            metric, hib = spec["metric"], spec["higher_is_better"]
            base = load_samples(samples_file(run_dir, model, baseline, task, base_rec["cell_key"]), metric)
            lo, hi = baseline_ci(base, resamples, seed)
            chance = spec.get("chance")
            base_score = float(base.statistic(np.arange(len(base.doc_ids))[None, :])[0])
            na = not_applicable(base_score, lo, chance)
            row = {
                "model": model,
                "kind": "task",
                "name": task,
                "metric": metric.split(",")[0],
                "higher_is_better": hib,
                "baseline": base_score,
                "baseline_ci": [lo, hi],
                "n": len(base.doc_ids),
                "formats": {},
            }
            for fmt in formats:
                rec = latest.get((model, fmt, task))
                if fmt == baseline or rec is None:
                    continue
                other = load_samples(samples_file(run_dir, model, fmt, task, rec["cell_key"]), metric)
                p, bs, ss = paired_task(task, base, other, hib, resamples, seed)
                d = asdict(p)
                if na:
                    d["recovery"], d["recovery_ci"], d["note"] = None, None, na
                row["formats"][fmt] = d
                draws[(task, fmt)] = (p.base, p.score, bs, ss)
            floor = row["formats"].get(noise_floor) if noise_floor else None
            if floor:
                row["noise_floor"] = {"diff": floor["diff"], "discordant": floor["discordant"]}
                for fmt, d in row["formats"].items():
                    if fmt != noise_floor:
                        d["within_noise_floor"] = within_noise_floor(d, floor)
            rows.append(row)
        na_tasks = {
            r["name"]
            for r in rows
            if r["model"] == model and r["kind"] == "task" and any(f.get("note") for f in r["formats"].values())
        }
        for suite, members in suites.items():
            row = {
                "model": model,
                "kind": "suite",
                "name": suite,
                "metric": "average",
                "higher_is_better": True,
                "baseline": None,
                "formats": {},
            }
            for fmt in formats:
                parts = [draws[(t, fmt)] for t in members if (t, fmt) in draws]
                if fmt == baseline or len(parts) != len(members):
                    continue
                rec, ci = suite_recovery(parts)
                row["baseline"] = float(np.mean([p[0] for p in parts]))
                row["formats"][fmt] = {
                    "score": float(np.mean([p[1] for p in parts])),
                    "recovery": rec,
                    "recovery_ci": ci,
                    "diff": None,
                    "diff_ci": None,
                }
                weak = sorted(set(members) & na_tasks)
                if weak:  # a ratio of averages over tasks at chance or 0 says nothing about the format
                    row["formats"][fmt].update(recovery=None, recovery_ci=None, note=f"N/A ({', '.join(weak)} N/A)")
            rows.append(row)
    return rows


def within_noise_floor(d: dict, floor: dict) -> bool:
    """A format's difference from the baseline is no larger than the baseline's from itself:
    its absolute score difference is within the rerun's, and for 0/1 outcomes it flips no more
    documents (either way) than the rerun did."""
    if abs(d["diff"]) > abs(floor["diff"]):
        return False
    if d.get("discordant") is not None and floor.get("discordant") is not None:
        return sum(d["discordant"]) <= sum(floor["discordant"])
    return True


def _fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"


def _cell(f: dict | None) -> tuple[str, str]:
    if not f:
        return "—", "—"
    rec = f.get("note") or (
        "—"
        if f.get("recovery") is None
        else f"{f['recovery']:.1f} [{f['recovery_ci'][0]:.1f}, {f['recovery_ci'][1]:.1f}]"
    )
    return _fmt(f.get("score")), rec


def to_markdown(rows: list[dict], baseline: str, formats: list[str], notes: dict[str, str]) -> str:
    others = [f for f in formats if f != baseline]
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        out.append(f"### {model}" + (f" — {notes[model]}" if notes.get(model) else ""))
        head = ["task", "metric", f"{baseline} score"] + [
            c for f in others for c in (f"{f} score", f"{f} recovery % [95% CI]")
        ]
        out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in (r for r in rows if r["model"] == model):
            cells = [("**" + r["name"] + "**") if r["kind"] == "suite" else r["name"], r["metric"], _fmt(r["baseline"])]
            for f in others:
                cells += list(_cell(r["formats"].get(f)))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        diffs = [
            (r, f, r["formats"][f])
            for r in rows
            if r["model"] == model and r["kind"] == "task"
            for f in others
            if f in r["formats"]
        ]
        if diffs:
            out += [
                "Paired differences vs the baseline (same documents; bootstrap 95% CI; McNemar exact p for 0/1 "
                "outcomes):",
                "",
                "| task | format | n | difference [95% CI] | flips (correct→wrong, wrong→correct) | McNemar p "
                "| vs noise floor |",
                "|---|---|---|---|---|---|---|",
            ]
            for r, f, d in diffs:
                disc = "—" if d["discordant"] is None else f"{d['discordant'][0]}, {d['discordant'][1]}"
                floor = (
                    "(the floor)"
                    if "noise_floor" in r and "within_noise_floor" not in d
                    else {True: "within", False: "outside", None: "—"}[d.get("within_noise_floor")]
                )
                out.append(
                    f"| {r['name']} | {f} | {d['n']} | {d['diff']:+.4g} [{d['diff_ci'][0]:+.4g}, "
                    f"{d['diff_ci'][1]:+.4g}] | "
                    f"{disc} | {_fmt(d['mcnemar_p'], 3)} | {floor} |"
                )
            out.append("")
    return "\n".join(out)


def to_html(markdown_text: str, images: list[Path], title: str) -> str:
    """One self-contained page: the tables (rendered from the markdown) and the PNGs inlined."""
    body = []
    table: list[str] = []

    def flush() -> None:
        if table:
            rows = [
                [html.escape(c.strip()).replace("**", "") for c in line.strip("|").split("|")]
                for line in table
                if not set(line) <= set("|-")
            ]
            body.append(
                "<table><tr>"
                + "".join(f"<th>{c}</th>" for c in rows[0])
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows[1:])
                + "</table>"
            )
            table.clear()

    for line in markdown_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("### "):
            body.append(f"<h2>{html.escape(line[4:])}</h2>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    for img in images:
        data = base64.b64encode(img.read_bytes()).decode()
        body.append(
            f'<h2>{html.escape(img.stem.replace("_", " "))}</h2><img alt="{img.stem}" '
            f'src="data:image/png;base64,{data}">'
        )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px "
        "8px;text-align:right}td:first-child{text-align:left}img{max-width:100%}"
    )
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>"


SIMILARITY_COLUMNS = {"rouge1": "ROUGE-1", "rougeL": "ROUGE-L", "semantic": "semantic (MiniLM cosine)"}


def similarity(records: list[dict[str, Any]], run_dir: Path, formats: list[str]) -> tuple[list[dict], dict]:
    """Rows (model, task, format: mean and median per measure, share identical) from the
    similarity stage's results, and per-document values for the distribution plot."""
    rows, dists = [], {}
    order = {f: i for i, f in enumerate(formats)}
    for r in sorted(records, key=lambda r: (r["model"], r["task"], order.get(r["format"], 99))):
        task = r["task"].removesuffix(SIMILARITY_SUFFIX)
        m = r["metrics"]
        rows.append(
            {
                "model": r["model"],
                "task": task,
                "format": r["format"],
                "n": r.get("num_samples", 0),
                **{k: m.get(f"{k},none") for k in (*SIMILARITY_COLUMNS, "identical")},
                **{f"{k}_median": m.get(f"{k}_median,none") for k in SIMILARITY_COLUMNS},
            }
        )
        df = read_samples(
            samples_file(run_dir, r["model"], r["format"], r["task"], r["cell_key"]),
            [f"m_{k}" for k in SIMILARITY_COLUMNS],
        )
        dists.setdefault((r["model"], task), {})[r["format"]] = {k: df[f"m_{k}"].tolist() for k in SIMILARITY_COLUMNS}
    return rows, dists


def similarity_markdown(rows: list[dict], baseline: str) -> str:
    if not rows:
        return ""
    head = [
        "model",
        "task",
        "format",
        "n",
        *(f"{v} mean (median)" for v in SIMILARITY_COLUMNS.values()),
        "identical outputs",
    ]
    out = [
        f"### Output similarity to {baseline}",
        "",
        f"Each document's generation compared with {baseline}'s for the same prompt "
        "(ROUGE F1, Porter-stemmed; cosine of all-MiniLM-L6-v2 embeddings, first 256 word pieces).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [r["model"], r["task"], r["format"], str(r["n"])]
        cells += [f"{_fmt(r[k], 3)} ({_fmt(r[f'{k}_median'], 3)})" for k in SIMILARITY_COLUMNS]
        cells.append("—" if r["identical"] is None else f"{100 * r['identical']:.0f}%")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out + [""])


def write(
    rows: list[dict],
    out_dir: Path,
    sweep: str,
    baseline: str,
    formats: list[str],
    notes: dict[str, str],
    similarity_records: list[dict[str, Any]] | None = None,
    perf: dict[str, Any] | None = None,
    omitted: list[str] | None = None,
    fidelity_rows: list[dict] | None = None,
    noise_floor: str = "",
    verdict_rows: list[dict] | None = None,
    mixed: dict[str, list[dict]] | None = None,
) -> list[Path]:
    """`mixed`: {sensitivity, frontier, markdown, metrics} from orchestrator/report/mixed.py `section`,
    or None; `perf`: {table,
    recommendations, limits, note} from orchestrator/report/recommend.py, or None;
    `omitted`: results left out (their samples file is missing or damaged), one line each."""
    from orchestrator.report import fidelity, recommend, verdicts
    from orchestrator.report.plots import (
        bits_frontier,
        perf_frontier,
        recovery_heatmap,
        sensitivity_heatmap,
        similarity_distributions,
        task_differences,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    others = [f for f in formats if f != baseline]
    sim_rows, dists = similarity(similarity_records or [], out_dir.parent, formats)
    perf = perf or {"table": [], "recommendations": [], "limits": {}, "note": ""}
    mixed = mixed or {"sensitivity": [], "frontier": [], "markdown": "", "metrics": {}}
    md = "\n".join(
        part
        for part in (
            to_markdown(rows, baseline, formats, notes),
            fidelity.to_markdown(fidelity_rows or [], baseline, noise_floor),
            verdicts.to_markdown(verdict_rows or [], baseline),
            mixed["markdown"],
            similarity_markdown(sim_rows, baseline),
            recommend.to_markdown(perf["table"], perf["recommendations"], perf["limits"], perf["note"]),
            "## Left out\n\nThese results have no trustworthy samples file; `quantgrid resume` "
            "scores them again:\n\n" + "\n".join(f"- {o}" for o in omitted)
            if omitted
            else "",
        )
        if part
    )
    images = [
        p
        for p in (
            recovery_heatmap(rows, others, out_dir / "recovery_heatmap.png"),
            task_differences(rows, others, out_dir / "task_differences.png"),
            similarity_distributions(dists, list(SIMILARITY_COLUMNS), out_dir / "similarity_distributions.png"),
            perf_frontier(perf["table"], out_dir / "perf_frontier.png"),
            sensitivity_heatmap(mixed["sensitivity"], out_dir / "sensitivity_heatmap.png"),
            bits_frontier(mixed["frontier"], out_dir / "frontier.png"),
        )
        if p
    ]
    (out_dir / "report.md").write_text(f"# quantgrid report: {sweep}\n\n{md}")
    (out_dir / "report.html").write_text(to_html(md, images, f"quantgrid report: {sweep}"))
    (out_dir / "report.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "similarity": sim_rows,
                "fidelity": fidelity_rows or [],
                "adaptive": verdict_rows or [],
                "frontier": mixed["frontier"],
                "sensitivity": mixed["sensitivity"],
                "mixed_metrics": mixed["metrics"],
                "perf": perf["table"],
                "recommendations": perf["recommendations"],
                "omitted": omitted or [],
            },
            indent=1,
            default=float,
        )
    )
    return [out_dir / "report.md", out_dir / "report.html", out_dir / "report.json", *images]
