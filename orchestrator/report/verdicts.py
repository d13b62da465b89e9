"""The adaptive verdicts of a sweep (`sweep.adaptive`): one row per adaptive cell, read from the
result records (their provenance's `adaptive`, written by orchestrator/execution/adaptive.py).

The interval is the anytime-valid confidence sequence on E[Z] at the cell's stopping time, Z the
paired quantity sequential.py decides on: x - target * y for a recovery target (verdict `above`
iff the interval is above 0), x - y for a difference (above iff it is above -margin). The recovery
column is the point estimate on the documents scored (format mean / baseline mean on them)."""

from __future__ import annotations

import math
from typing import Any


def rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        a = (r.get("provenance") or {}).get("adaptive") or {}
        if "verdict" not in a:
            continue
        base = a.get("baseline_mean", math.nan)
        out.append(
            {
                "model": r["model"],
                "format": r["format"],
                "task": r["task"],
                "verdict": a["verdict"],
                "target": a["target"],
                "value": a["value"],
                "alpha": a["alpha"],
                "low": a["low"],
                "high": a["high"],
                "recovery": a["mean"] / base if base and not math.isnan(base) else math.nan,
                "documents": a["documents"],
                "max_documents": a["max_documents"],
                "saved": a["saved"],
                "batches": a["batches"],
            }
        )
    return sorted(out, key=lambda x: (x["model"], x["task"], x["format"]))


def summary(vrows: list[dict[str, Any]]) -> dict[str, Any]:
    used = sum(r["documents"] for r in vrows)
    full = sum(r["max_documents"] for r in vrows)
    decided = [r for r in vrows if r["verdict"] != "undecided"]
    return {
        "cells": len(vrows),
        "decided": len(decided),
        "documents": used,
        "max_documents": full,
        "saved": full - used,
        "fewer": full / used if used else math.nan,
    }


def to_markdown(vrows: list[dict[str, Any]], baseline: str) -> str:
    if not vrows:
        return ""
    s = summary(vrows)
    t = vrows[0]
    what = f"recovery ≥ {t['value']:g} × {baseline}" if t["target"] == "recovery" else f"difference ≥ −{t['value']:g}"
    lines = [
        f"### Adaptive verdicts: {what} (anytime-valid, α = {t['alpha']:g})",
        "",
        f"{s['cells']} cells, {s['decided']} decided; {s['documents']:,} of {s['max_documents']:,} documents "
        f"scored ({s['saved']:,} saved, {s['fewer']:.1f}× fewer). Interval: the betting confidence sequence "
        "on E[Z] at the stopping time (Z = x − target·y for recovery, x − y for a difference; "
        "orchestrator/report/sequential.py), valid however often it was looked at.",
        "",
        "| model | task | format | verdict | recovery (scored docs) | CS on E[Z] | documents | saved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in vrows:
        rec = "—" if math.isnan(r["recovery"]) else f"{100 * r['recovery']:.1f}%"
        lines.append(
            f"| {r['model']} | {r['task']} | {r['format']} | **{r['verdict']}** | {rec} | "
            f"[{r['low']:+.3f}, {r['high']:+.3f}] | {r['documents']} / {r['max_documents']} | {r['saved']} |"
        )
    return "\n".join(lines) + "\n"
