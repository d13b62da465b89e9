"""The deployment recommendation: recovery floors, latency limits, prices, evidence as numbers."""

import pytest

from orchestrator.report.recommend import perf_table, recommend, recovery_by_format, to_markdown


def _rec(fmt, sync_latency, levels, accelerator="h100-80gb", devices=1):
    metrics = {
        "sync_request_latency_s_p50,none": sync_latency,
        "sync_ttft_ms_p50,none": 50.0,
        "sync_itl_ms_p50,none": 10.0,
        "sync_output_tok_per_s,none": 100.0,
        "sync_ttft_ms_p99,none": 80.0,
    }
    for n, (tps, ttft99) in levels.items():
        metrics |= {
            f"c{n}_output_tok_per_s,none": tps,
            f"c{n}_ttft_ms_p99,none": ttft99,
            f"c{n}_requests_per_s,none": tps / 100,
        }
    return {
        "model": "m",
        "format": fmt,
        "task": "rag.perf",
        "metrics": metrics,
        "provenance": {"hardware": {"accelerator": accelerator, "gpu_model": "H100"}, "devices": devices},
    }


def test_recovery_per_format_uses_suites_over_tasks_and_skips_na():
    rows = [
        {
            "model": "m",
            "kind": "task",
            "name": "a",
            "formats": {"w4": {"recovery": 97.0}, "fp8": {"recovery": None, "note": "N/A"}},
        },
        {"model": "m", "kind": "task", "name": "b", "formats": {"w4": {"recovery": 99.5}, "fp8": {"recovery": None}}},
        {"model": "m", "kind": "suite", "name": "s", "formats": {"w4": {"recovery": 98.2}, "fp8": {"recovery": None}}},
    ]
    rec = recovery_by_format(rows, "bf16")
    assert rec == {("m", "bf16"): 100.0, ("m", "w4"): 98.2, ("m", "fp8"): None}  # unknown, never passes a floor


def test_floor_limits_and_price_pick_formats_with_their_numbers():
    recovery = {("m", "bf16"): 100.0, ("m", "fp8"): 99.6, ("m", "int8"): 98.0, ("m", "w4a16"): 97.5}
    records = [
        _rec("bf16", 2.0, {8: (1000.0, 900.0)}),
        _rec("fp8", 1.5, {8: (1800.0, 950.0)}),
        _rec("int8", 1.4, {8: (2000.0, 990.0), 16: (3000.0, 4000.0)}),  # 16 streams breaks the TTFT limit
        _rec("w4a16", 1.0, {8: (1500.0, 800.0)}),
    ]
    table = perf_table(records, recovery, {"h100-80gb": 3.6})
    recs = {r["floor"]: r for r in recommend(table, "bf16", [99, 97], {"ttft_ms_p99": 1000})}
    strict, loose = recs[99], recs[97]
    assert strict["eligible"] == ["bf16", "fp8"] and loose["eligible"] == ["bf16", "fp8", "int8", "w4a16"]
    assert strict["sync"]["format"] == "fp8" and strict["sync"]["speedup_vs_baseline"] == pytest.approx(2.0 / 1.5)
    assert loose["sync"]["format"] == "w4a16" and loose["sync"]["request_latency_s_p50"] == 1.0  # W4A16 wins sync
    assert (loose["async"]["format"], loose["async"]["streams"]) == ("int8", 8)  # 16 streams is over the limit
    assert loose["async"]["speedup_vs_baseline"] == pytest.approx(2.0)
    # $ per 1M output tokens = price/h / 3600 / tok/s x 1e6: 3.6 $/h at 2,000 tok/s = 0.5 $
    assert loose["cost"]["usd_per_m_output_tok"] == pytest.approx(0.5) and loose["cost"]["format"] == "int8"
    md = to_markdown(table, list(recs.values()), {"ttft_ms_p99": 1000})
    assert "int8 @ 8 (2,000, 2×)" in md and "w4a16 (1, 2×)" in md


def test_unknown_recovery_is_never_eligible():
    table = perf_table([_rec("bf16", 2.0, {}), _rec("w4a16", 1.0, {})], {("m", "bf16"): 100.0}, {})
    (r,) = recommend(table, "bf16", [97], {})
    assert r["eligible"] == ["bf16"] and r["sync"]["format"] == "bf16" and "cost" not in r
