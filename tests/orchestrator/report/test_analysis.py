"""Paired statistics against known values: McNemar's exact test, ratio of suite averages,
corpus perplexity re-aggregation, paired bootstrap intervals."""

import math

import numpy as np
import pytest

from orchestrator.report.analysis import Samples, align, mcnemar_exact, paired_task, suite_recovery


def test_mcnemar_exact_matches_the_binomial_on_discordant_pairs():
    base = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 5, float)
    other = np.array([0] * 8 + [1] * 2 + [1] * 5 + [0] * 5, float)
    p, disc = mcnemar_exact(base, other)
    assert disc == (8, 2)
    assert p == pytest.approx(0.109375)  # 2 * sum_{k<=2} C(10,k) / 2^10
    assert mcnemar_exact(base, base)[0] == 1.0


def test_suite_recovery_is_the_ratio_of_averages_not_the_mean_of_ratios():
    draws = np.ones(10)
    rec, (lo, hi) = suite_recovery([(0.5, 0.45, draws * 0.5, draws * 0.45), (0.8, 0.8, draws * 0.8, draws * 0.8)])
    assert rec == pytest.approx(100 * 0.625 / 0.65)  # 96.15, where the mean of ratios is 95.0
    assert lo == pytest.approx(rec) and hi == pytest.approx(rec)


def test_corpus_perplexity_is_reaggregated_from_loglikelihoods():
    s = Samples(np.arange(3), np.array([-10.0, -20.0, -30.0]), np.array([5.0, 10.0, 5.0]))
    assert s.statistic(np.arange(3)[None, :])[0] == pytest.approx(math.exp(60 / 20))
    worse = Samples(np.arange(3), np.array([-12.0, -22.0, -33.0]), np.array([5.0, 10.0, 5.0]))
    p, _, _ = paired_task("ppl", s, worse, higher_is_better=False, resamples=500)
    assert p.recovery == pytest.approx(100 * math.exp(3) / math.exp(67 / 20))  # baseline / quantized
    assert p.mcnemar_p is None and p.recovery_ci[0] <= p.recovery <= p.recovery_ci[1]


def test_paired_bootstrap_interval_is_seeded_and_covers_a_known_shift():
    rng = np.random.default_rng(1)
    base = (rng.random(2000) < 0.7).astype(float)
    flip = rng.random(2000) < 0.1  # the quantized format loses 10% of the right answers
    other = np.where(flip & (base == 1), 0.0, base)
    a, b = Samples(np.arange(2000), base), Samples(np.arange(2000), other)
    p1, _, _ = paired_task("acc", a, b, True, resamples=1000, seed=7)
    p2, _, _ = paired_task("acc", a, b, True, resamples=1000, seed=7)
    assert p1 == p2
    true_diff = other.mean() - base.mean()
    assert p1.diff == pytest.approx(true_diff) and p1.diff_ci[0] < true_diff < p1.diff_ci[1]
    assert p1.diff_ci[1] < 0 and p1.mcnemar_p < 1e-10  # a real drop, not noise
    same, _, _ = paired_task("acc", a, a, True, resamples=200)
    assert same.diff_ci == (0.0, 0.0) and same.recovery == 100.0


def test_pairs_only_documents_both_formats_scored():
    a = Samples(np.array([3, 1, 2]), np.array([1.0, 0.0, 1.0]))
    b = Samples(np.array([2, 3, 9]), np.array([0.0, 1.0, 1.0]))
    x, y = align(a, b)
    assert list(x.doc_ids) == [2, 3] and list(x.values) == [1.0, 1.0] and list(y.values) == [0.0, 1.0]


def test_one_not_applicable_rule_for_both_tables():
    from orchestrator.report.analysis import not_applicable
    from orchestrator.report.tables import recovery

    assert not_applicable(0.0, 0.0, None) == "N/A (baseline 0)"
    assert not_applicable(0.30, 0.24, 0.25) == "N/A (baseline at chance)"  # interval reaches 1/4
    assert not_applicable(0.30, 0.26, 0.25) == "" and not_applicable(0.30, 0.1, None) == ""
    # the console table applies the same rule with lm-eval's stderr: 0.30 - 1.96 x 0.03 = 0.241 <= 0.25
    assert recovery(0.29, 0.30, 0.03, True, 0.25) == (None, not_applicable(0.30, 0.30 - 1.96 * 0.03, 0.25))


def test_ratio_metric_is_pooled_per_resample_not_averaged():
    """A judge's weighted win rate: sum(wins) / sum(weights), as Arena-Hard pools its battles."""
    import numpy as np

    from orchestrator.report.analysis import Samples, align

    s = Samples(np.array([0, 1, 2]), np.array([6.0, 0.0, 1.0]), np.array([6.0, 2.0, 2.0]), ratio=True)
    assert s.statistic(np.array([[0, 1, 2]]))[0] == 7 / 10  # pooled; the mean of the shares would be 0.5
    assert s.statistic(np.array([[0, 0, 2]]))[0] == 13 / 14
    b, o = align(s, Samples(np.array([2, 1]), np.array([1.0, 3.0]), np.array([2.0, 6.0]), ratio=True))
    assert b.ratio and o.ratio and list(o.values) == [3.0, 1.0]
