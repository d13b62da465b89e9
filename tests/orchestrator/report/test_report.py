"""Recovery as the paper defines it, and the N/A rules."""

import pytest

from orchestrator.report.tables import build_rows, recovery


def test_higher_is_better_ratio():
    rec, note = recovery(0.45, 0.50, 0.01, True, 0.25)
    assert rec == pytest.approx(90.0) and note == ""


def test_lower_is_better_inverts_the_ratio():
    rec, _ = recovery(22.0, 20.0, None, False, None)  # perplexity went up 10% -> 90.9% recovery
    assert rec == pytest.approx(100 * 20 / 22)


def test_na_when_baseline_interval_contains_chance():
    assert recovery(0.30, 0.27, 0.02, True, 0.25) == (None, "N/A (baseline at chance)")
    assert recovery(0.30, 0.20, 0.001, True, 0.25) == (None, "N/A (baseline at chance)")  # below chance


def test_na_when_baseline_zero():
    assert recovery(0.1, 0.0, 0.0, True, None) == (None, "N/A (baseline 0)")


def _r(fmt, task, score, stderr=0.01, metric="acc,none"):
    return {
        "model": "m",
        "format": fmt,
        "task": task,
        "metrics": {metric: score, metric.replace(",", "_stderr,"): stderr},
        "num_samples": 10,
        "primary_metric": metric,
    }


def test_rows_against_baseline_latest_result_wins():
    results = [_r("bf16", "t", 0.6), _r("fp8", "t", 0.1), _r("fp8", "t", 0.57)]
    rows = {
        r.format: r
        for r in build_rows(results, "bf16", {"t": {"metric": "acc,none", "higher_is_better": True, "chance": 0.25}})
    }
    assert rows["bf16"].recovery is None and rows["bf16"].recovery_note == "baseline"
    assert rows["fp8"].recovery == pytest.approx(95.0)
    assert rows["fp8"].stderr == 0.01


def test_a_score_after_an_oom_fallback_is_flagged_and_a_score_changing_one_loudly():
    from orchestrator.report.tables import to_markdown

    short = _r("fp8", "t", 0.57) | {
        "provenance": {
            "oom_fallback": {"steps": ["halve_batch_size", "halve_max_model_len"], "may_change_scores": True}
        }
    }
    batch = _r("int8", "t", 0.58) | {
        "provenance": {"oom_fallback": {"steps": ["halve_batch_size"], "may_change_scores": False}}
    }
    rows = build_rows(
        [_r("bf16", "t", 0.6), short, batch],
        "bf16",
        {"t": {"metric": "acc,none", "higher_is_better": True, "chance": 0.25}},
    )
    md = to_markdown(rows, ["bf16", "fp8", "int8"])
    assert "| 0.57 (!halve_batch_size+halve_max_model_len) |" in md
    assert "| 0.58 (halve_batch_size) |" in md and "| 0.6 |" in md
