"""The anytime-valid verdict (orchestrator/report/sequential.py) against known values and its
defining property: the confidence sequence covers the true mean at every time at once."""

import math

import numpy as np
import pytest

from orchestrator.report.sequential import (
    ABOVE,
    BELOW,
    UNDECIDED,
    Target,
    _bets,
    betting_cs,
    first_crossings,
    naive_interval,
    run_adaptive,
    verdict,
)


def test_the_first_bets_are_wsr_predictable_plug_in_values():
    """lambda_t = sqrt(2 log(2/alpha) / (sigma^2_{t-1} t log(1+t))), sigma^2_0 = 1/4 and
    sigma^2_1 = (1/4 + (u_1 - (1/2 + u_1)/2)^2) / 2 (Waudby-Smith & Ramdas 2024, Eq. 26)."""
    lam = _bets(np.array([1.0, 0.0, 1.0]), alpha=0.05)
    c = 2 * math.log(40)
    assert lam[0] == pytest.approx(math.sqrt(c / (0.25 * 1 * math.log(2))))  # 6.52498...
    var1 = (0.25 + (1 - 0.75) ** 2) / 2
    assert lam[1] == pytest.approx(math.sqrt(c / (var1 * 2 * math.log(3))))
    assert lam[0] == pytest.approx(6.524984, rel=1e-6)


def test_capital_by_hand_on_three_documents():
    """K_3(m) = 1/2 prod(1 + l+_i (u_i - m)) + 1/2 prod(1 - l-_i (u_i - m)), bets truncated at
    1/2 / m and 1/2 / (1 - m): compared with the crossing the module reports."""
    u = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    lam = _bets(u, 0.05)
    m = 0.05
    kp = np.cumprod(1 + np.minimum(lam, 0.5 / m) * (u - m))
    km = np.cumprod(1 - np.minimum(lam, 0.5 / (1 - m)) * (u - m))
    k = 0.5 * kp + 0.5 * km
    first = int(np.argmax(k >= 20)) + 1 if (k >= 20).any() else len(u) + 1
    assert first_crossings(u, 0.05, grid=np.array([m]))[0] == first
    assert first <= len(u)  # six straight 1s rule out a mean of 0.05


def test_a_constant_stream_is_covered_and_the_interval_shrinks():
    z = np.full(2000, 0.5)
    lo, hi = betting_cs(z, 0.0, 1.0, 0.05)
    assert lo <= 0.5 <= hi and hi - lo < 0.05
    lo1, hi1 = betting_cs(z[:100], 0.0, 1.0, 0.05)
    assert hi1 - lo1 > hi - lo


def test_coverage_at_every_time_and_what_peeking_at_a_fixed_n_interval_costs():
    """2,000 Bernoulli(0.3) streams of 400 documents: the true mean leaves the CS at some time in
    at most alpha of them (Ville); the fixed-n normal interval checked after every 20 documents
    excludes it far more often."""
    rng = np.random.default_rng(7)
    alpha, p, n, streams = 0.05, 0.3, 400, 2000
    data = (rng.random((streams, n)) < p).astype(float)
    missed = sum(first_crossings(row, alpha, grid=np.array([p]))[0] <= n for row in data)
    naive = sum(
        any(
            not lo <= p <= hi for lo, hi in (naive_interval(row[:end], 0.0, 1.0, alpha) for end in range(20, n + 1, 20))
        )
        for row in data[:500]
    )
    assert missed / streams <= alpha
    assert naive / 500 > 2 * alpha  # measured ~0.3 at 20 peeks


def test_recovery_is_linear_in_the_pairs():
    """R >= rho iff E[x - rho y] >= 0: a lossless format (x == y) is above 0.95, one that loses
    every document is below, and a coin flip of 40 documents is undecided."""
    rng = np.random.default_rng(1)
    y = (rng.random(4000) < 0.6).astype(float)
    t = Target("recovery", 0.95)
    assert verdict(y, y, t).verdict == ABOVE
    assert verdict(np.zeros_like(y), y, t).verdict == BELOW
    assert verdict(rng.random(40) < 0.6, y[:40], t).verdict == UNDECIDED
    z, lo, hi, thr = t.paired(np.array([1.0, 0.0]), np.array([1.0, 1.0]))
    assert list(z) == [pytest.approx(0.05), -0.95] and (lo, hi, thr) == (-0.95, 1.0, 0.0)
    z, lo, hi, thr = Target("difference", 0.02).paired(np.array([1.0]), np.array([0.0]))
    assert list(z) == [1.0] and thr == -0.02


def test_adaptive_stops_early_when_the_effect_is_clear_and_agrees_with_the_full_data():
    rng = np.random.default_rng(3)
    n = 10_000
    y = (rng.random(n) < 0.6).astype(float)
    x = np.where(rng.random(n) < 0.04, 1 - y, y)  # 4% flips both ways: recovery ~ 0.99
    v = run_adaptive(x, y, Target("recovery", 0.95), alpha=0.05, batch=100)
    assert v.verdict == ABOVE and x.mean() / y.mean() > 0.95
    assert v.documents <= n / 5 and v.documents % 100 == 0
    capped = run_adaptive(x, y, Target("recovery", x.mean() / y.mean()), alpha=0.05, batch=100, max_documents=500)
    assert capped.verdict == UNDECIDED and capped.documents == 500  # at the target itself: undecided at the cap


def test_the_adaptive_interval_at_its_stop_is_the_interval_of_the_documents_it_used():
    """Doubling prefixes are only a speed-up: at the stopping point the CS equals the one
    computed from scratch on those documents."""
    rng = np.random.default_rng(5)
    y = (rng.random(3000) < 0.5).astype(float)
    x = np.where(rng.random(3000) < 0.1, 1 - y, y) * (rng.random(3000) > 0.1)  # loses ~10%
    t = Target("recovery", 0.99)
    v = run_adaptive(x, y, t, alpha=0.05, batch=50)
    assert v.verdict == BELOW and v.documents < 3000
    again = verdict(x[: v.documents], y[: v.documents], t)
    assert (again.low, again.high) == pytest.approx((v.low, v.high))
