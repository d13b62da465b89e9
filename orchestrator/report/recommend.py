"""Which format to deploy: accuracy recovery joined with serving performance, per scenario and
hardware, as numbers.

- Synchronous serving (one request at a time): the format with the lowest median request
  latency at 1 stream.
- Asynchronous serving (continuous batching): the format with the highest output tokens/s at
  any concurrency level whose latencies stay within `perf.latency_limits`; and the cheapest per
  million output tokens at that level (`perf.price_per_hour` x devices).
Both only among formats whose accuracy recovery is at least the floor (each of
`perf.recovery_floors`); the baseline counts as 100%. A format's recovery is its lowest suite
recovery (or lowest task recovery when no suite has a ratio); "N/A" everywhere = unknown, and an
unknown recovery never passes a floor.
"""

from __future__ import annotations

import math
from typing import Any

from quantgrid.types import PERF_SUFFIX


def recovery_by_format(rows: list[dict], baseline: str) -> dict[tuple[str, str], float | None]:
    """(model, format) -> recovery % from the paired report's rows (paper_report.build)."""
    out: dict[tuple[str, str], float | None] = {}
    for kind in ("task", "suite"):  # suites, where they have a ratio, win over tasks
        found: dict[tuple[str, str], list[float]] = {}
        for r in rows:
            if r["kind"] != kind:
                continue
            out.setdefault((r["model"], baseline), 100.0)
            for fmt, f in r["formats"].items():
                out.setdefault((r["model"], fmt), None)
                if f.get("recovery") is not None and not math.isnan(f["recovery"]):
                    found.setdefault((r["model"], fmt), []).append(f["recovery"])
        out.update({k: min(v) for k, v in found.items()})
    return out


def _levels(metrics: dict[str, float]) -> dict[int, dict[str, float]]:
    """{streams: {metric: value}} from flat keys `sync_ttft_ms_p50,none`, `c4_output_tok_per_s,none`."""
    levels: dict[int, dict[str, float]] = {}
    for key, v in metrics.items():
        name = key.split(",")[0]
        level, _, metric = name.partition("_")
        n = 1 if level == "sync" else int(level[1:]) if level[1:].isdigit() else None
        if n is not None:
            levels.setdefault(n, {})[metric] = v
    return levels


def perf_table(records: list[dict[str, Any]], recovery: dict, prices: dict[str, float]) -> list[dict]:
    """One row per (model, scenario, format): hardware, recovery and every measured level."""
    rows = []
    for r in records:
        p = r.get("provenance") or {}
        hw = p.get("hardware") or {}
        acc = hw.get("accelerator", "cpu")
        price = prices.get(acc)
        devices = int(p.get("devices") or 1)
        levels = _levels(r["metrics"])
        for m in levels.values():  # $ per million output tokens at that level's throughput
            tps = m.get("output_tok_per_s") or 0.0
            m["usd_per_m_output_tok"] = price * devices / 3600 / tps * 1e6 if price and tps else None
        rows.append(
            {
                "model": r["model"],
                "format": r["format"],
                "scenario": r["task"].removesuffix(PERF_SUFFIX),
                "accelerator": acc,
                "hardware": hw.get("gpu_model") or hw.get("cpu_model", ""),
                "devices": devices,
                "recovery": recovery.get((r["model"], r["format"])),
                "levels": levels,
                "scenario_tokens": p.get("scenario", {}),
            }
        )
    return sorted(rows, key=lambda x: (x["model"], x["scenario"], x["accelerator"], x["format"]))


def _within(m: dict[str, float], limits: dict[str, float]) -> bool:
    return all(m.get(k) is not None and m[k] <= v for k, v in limits.items())


def best_async(row: dict, limits: dict[str, float]) -> tuple[int, dict[str, float]] | None:
    """The concurrency level with the highest output tokens/s within the latency limits."""
    ok = [(n, m) for n, m in row["levels"].items() if _within(m, limits)]
    return max(ok, key=lambda x: x[1].get("output_tok_per_s", 0.0)) if ok else None


def recommend(table: list[dict], baseline: str, floors: list[float], limits: dict[str, float]) -> list[dict]:
    out = []
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in table:
        groups.setdefault((row["model"], row["scenario"], row["accelerator"]), []).append(row)
    for (model, scenario, acc), rows in groups.items():
        base = next((r for r in rows if r["format"] == baseline), None)
        for floor in floors:
            eligible = [r for r in rows if r["recovery"] is not None and r["recovery"] >= floor]
            rec = {
                "model": model,
                "scenario": scenario,
                "accelerator": acc,
                "floor": floor,
                "eligible": [r["format"] for r in eligible],
            }
            sync = [(r, r["levels"][1]["request_latency_s_p50"]) for r in eligible if 1 in r["levels"]]
            if sync:
                r, lat = min(sync, key=lambda x: x[1])
                base_lat = base["levels"].get(1, {}).get("request_latency_s_p50") if base else None
                rec["sync"] = {
                    "format": r["format"],
                    "request_latency_s_p50": lat,
                    "recovery": r["recovery"],
                    "ttft_ms_p50": r["levels"][1].get("ttft_ms_p50"),
                    "itl_ms_p50": r["levels"][1].get("itl_ms_p50"),
                    "speedup_vs_baseline": base_lat / lat if base_lat and lat else None,
                }
            asyn = [(r, *b) for r in eligible if (b := best_async(r, limits))]
            if asyn:
                r, n, m = max(asyn, key=lambda x: x[2].get("output_tok_per_s", 0.0))
                base_best = best_async(base, limits) if base else None
                base_tps = base_best[1].get("output_tok_per_s") if base_best else None
                rec["async"] = {
                    "format": r["format"],
                    "streams": n,
                    "output_tok_per_s": m.get("output_tok_per_s"),
                    "requests_per_s": m.get("requests_per_s"),
                    "ttft_ms_p99": m.get("ttft_ms_p99"),
                    "recovery": r["recovery"],
                    "usd_per_m_output_tok": m.get("usd_per_m_output_tok"),
                    "speedup_vs_baseline": m.get("output_tok_per_s") / base_tps if base_tps else None,
                }
                priced = [(r, n, m) for r, n, m in asyn if m.get("usd_per_m_output_tok")]
                if priced:
                    r, n, m = min(priced, key=lambda x: x[2]["usd_per_m_output_tok"])
                    rec["cost"] = {
                        "format": r["format"],
                        "streams": n,
                        "usd_per_m_output_tok": m["usd_per_m_output_tok"],
                        "output_tok_per_s": m.get("output_tok_per_s"),
                        "recovery": r["recovery"],
                    }
            out.append(rec)
    return out


def _f(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 10**digits else f"{v:.{digits}g}"


def to_markdown(table: list[dict], recs: list[dict], limits: dict[str, float], note: str = "") -> str:
    if not table:
        return ""
    lines = ["### Serving performance (GuideLLM against vllm serve)", ""]
    if note:
        lines += [note, ""]
    head = [
        "model",
        "scenario",
        "hardware",
        "format",
        "recovery %",
        "sync TTFT p50 ms",
        "sync ITL p50 ms",
        "sync latency p50 / p90 / p99 s",
        "streams",
        "req/s",
        "output tok/s",
        "TTFT p99 ms",
        "$ / 1M output tok",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        s = r["levels"].get(1, {})
        for i, (n, m) in enumerate(sorted(r["levels"].items())):
            first = i == 0
            lines.append(
                "| "
                + " | ".join(
                    [
                        r["model"] if first else "",
                        r["scenario"] if first else "",
                        f"{r['accelerator']}: {r['hardware']}" if first else "",
                        r["format"],
                        (_f(r["recovery"], 4) if r["recovery"] is not None else "unknown") if first else "",
                        _f(s.get("ttft_ms_p50")) if first else "",
                        _f(s.get("itl_ms_p50")) if first else "",
                        " / ".join(_f(s.get(f"request_latency_s_{q}")) for q in ("p50", "p90", "p99")) if first else "",
                        str(n),
                        _f(m.get("requests_per_s")),
                        _f(m.get("output_tok_per_s")),
                        _f(m.get("ttft_ms_p99")),
                        _f(m.get("usd_per_m_output_tok")),
                    ]
                )
                + " |"
            )
    lines.append("")
    if recs:
        lim = ", ".join(f"{k} ≤ {v:g}" for k, v in limits.items()) or "none"
        lines += [
            f"### Recommendation (recovery floor; async latency limits: {lim})",
            "",
            "| model | scenario | hardware | floor % | eligible | sync: format (latency p50 s, × baseline) | "
            "async: format @ streams (output tok/s, × baseline) | cheapest: format ($ / 1M output tok) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in recs:
            sy, an, co = c.get("sync"), c.get("async"), c.get("cost")
            lines.append(
                "| "
                + " | ".join(
                    [
                        c["model"],
                        c["scenario"],
                        c["accelerator"],
                        f"{c['floor']:g}",
                        ", ".join(c["eligible"]) or "none",
                        f"{sy['format']} ({_f(sy['request_latency_s_p50'])}, {_f(sy['speedup_vs_baseline'])}×)"
                        if sy
                        else "—",
                        f"{an['format']} @ {an['streams']} ({_f(an['output_tok_per_s'])}, "
                        f"{_f(an['speedup_vs_baseline'])}×)"
                        if an
                        else "—",
                        f"{co['format']} ({_f(co['usd_per_m_output_tok'])})" if co else "—",
                    ]
                )
                + " |"
            )
        lines.append("")
    return "\n".join(lines)
