"""Anytime-valid paired verdicts: does a format recover at least `target` of the baseline's score?

The question is a ratio, R = mu_q / mu_b >= rho (the paper's recovery, higher-is-better scores in
[0, 1]). It is linear in the per-document pair (x_i quantized, y_i baseline) once written as

    R >= rho   <=>   E[Z] >= 0,   Z_i = x_i - rho * y_i  in [-rho, 1]      (mu_b > 0)

so the verdict is a test on the mean of one bounded paired variable: no delta method and no
division by a noisy baseline mean (Fieller's trick, applied to a sequential test). The difference
in score is the same with Z_i = x_i - y_i against -margin.

The confidence sequence on E[Z] is the hedged betting CS with predictable plug-in bets of
Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting", JRSS-B 86(1)
2024, Sec. 4.2 (hedged capital process K = max(theta K+, (1 - theta) K-), Eq. (26) for the bets,
truncation c = 1/2). By Ville's inequality each K(m) crosses 1/alpha with probability <= alpha
when m is the true mean, at ANY data-dependent time: peeking after every batch costs nothing,
which is why the verdict may stop as soon as the CS leaves the target. The CS is the running
intersection over time of {m : K_t(m) < 1/alpha} on a grid of means.

A fixed-n interval re-checked after every batch has no such guarantee; `naive_interval` is that
interval, kept for the coverage bench (bench/verdicts.py) to show the difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ABOVE, BELOW, UNDECIDED = "above", "below", "undecided"
GRID = 2001  # candidate means on [0, 1] (of the rescaled variable): resolution 5e-4
TRUNCATION = 0.5  # c in WSR's lambda truncation (their recommended 1/2 or 3/4)


def _bets(u: np.ndarray, alpha: float) -> np.ndarray:
    """Predictable plug-in bets (WSR Eq. 26): lambda_t uses the data before t only."""
    t = np.arange(1, len(u) + 1, dtype=float)
    mu_i = (0.5 + np.cumsum(u)) / (t + 1)  # mu_hat_i, prior 1/2
    dev = np.concatenate([[0.0], np.cumsum((u - mu_i) ** 2)[:-1]])
    var = (0.25 + dev) / t  # sigma_hat^2_{t-1}, prior 1/4
    return np.sqrt(2 * math.log(2 / alpha) / (var * t * np.log1p(t)))


def first_crossings(
    u: np.ndarray, alpha: float, grid: np.ndarray | None = None, theta: float = 0.5, chunk: int = 128
) -> np.ndarray:
    """For each candidate mean (GRID points on [0, 1] unless given): the number of documents after
    which its hedged capital first reached 1/alpha (len(u) + 1 if never). u in [0, 1].

    The capital is the mixture theta K+ + (1 - theta) K- (WSR Sec. 4.2 take the max of the two;
    the mixture is itself a test martingale when m is the true mean, so Ville's inequality applies
    to it directly, and it is never below the max)."""
    n = len(u)
    grid = np.linspace(0.0, 1.0, GRID) if grid is None else np.asarray(grid, dtype=float)
    lam = _bets(u, alpha)[:, None]
    out = np.full(len(grid), n + 1, dtype=np.int64)
    bar = math.log(1 / alpha)
    for s in range(0, len(grid), chunk):  # a chunk of the grid at a time: n x chunk floats, not n x GRID
        m = grid[None, s : s + chunk]
        lp = np.minimum(lam, TRUNCATION / np.maximum(m, 1e-12))
        lm = np.minimum(lam, TRUNCATION / np.maximum(1 - m, 1e-12))
        d = u[:, None] - m
        logk = np.logaddexp(
            math.log(theta) + np.cumsum(np.log1p(lp * d), axis=0),
            math.log(1 - theta) + np.cumsum(np.log1p(-lm * d), axis=0),
        )
        hit = logk >= bar
        any_hit = hit.any(axis=0)
        out[s : s + chunk][any_hit] = hit.argmax(axis=0)[any_hit] + 1
    return out


def _bounds(cross: np.ndarray, seen: int, u_mean: float) -> tuple[float, float]:
    """The running-intersection CS on the [0, 1] scale after `seen` documents."""
    grid = np.linspace(0.0, 1.0, GRID)
    kept = grid[cross > seen]
    if not len(kept):  # only on degenerate data (all excluded at grid resolution): the nearest point
        kept = grid[[np.argmin(np.abs(grid - u_mean))]]
    return float(kept[0]), float(kept[-1])


def betting_cs(z: np.ndarray, lo: float, hi: float, alpha: float) -> tuple[float, float]:
    """The CS for E[z] after all of z (values in [lo, hi]), as (low, high): every candidate
    mean whose capital never reached 1/alpha."""
    z = np.asarray(z, dtype=float)
    if len(z) == 0:
        return lo, hi
    u = (np.clip(z, lo, hi) - lo) / (hi - lo)
    a, b = _bounds(first_crossings(u, alpha), len(u), float(u.mean()))
    return lo + a * (hi - lo), lo + b * (hi - lo)


def naive_interval(z: np.ndarray, lo: float, hi: float, alpha: float) -> tuple[float, float]:
    """The fixed-n normal interval mean +- z_{1-alpha/2} * sd / sqrt(n): valid once, at a sample
    size fixed in advance; NOT at a time chosen by looking at the data."""
    from scipy.stats import norm

    z = np.asarray(z, dtype=float)
    n = len(z)
    if n < 2:
        return lo, hi
    half = norm.ppf(1 - alpha / 2) * z.std(ddof=1) / math.sqrt(n)
    return max(lo, z.mean() - half), min(hi, z.mean() + half)


@dataclass(frozen=True)
class Target:
    """What is decided: `recovery` >= value (a ratio, e.g. 0.99) or `difference` >= -value (a
    margin in score points, e.g. 0.01)."""

    kind: str = "recovery"
    value: float = 0.99

    def paired(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """(Z, lower bound, upper bound, threshold): verdict "above" iff E[Z] > threshold."""
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        if self.kind == "recovery":
            return x - self.value * y, -self.value, 1.0, 0.0
        if self.kind == "difference":
            return x - y, -1.0, 1.0, -self.value
        raise ValueError(f"unknown target kind {self.kind!r} (recovery, difference)")


@dataclass(frozen=True)
class Verdict:
    verdict: str  # above | below | undecided
    low: float  # the CS on E[Z] (recovery: of mu_q - target * mu_b)
    high: float
    documents: int

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "low": self.low, "high": self.high, "documents": self.documents}


def verdict(x: np.ndarray, y: np.ndarray, target: Target, alpha: float = 0.05) -> Verdict:
    """The verdict on the pairs seen so far (in the order they were scored)."""
    z, lo, hi, thr = target.paired(x, y)
    low, high = betting_cs(z, lo, hi, alpha)
    v = ABOVE if low > thr else BELOW if high < thr else UNDECIDED
    return Verdict(v, low, high, len(z))


def run_adaptive(
    x: np.ndarray,
    y: np.ndarray,
    target: Target,
    alpha: float,
    batch: int,
    max_documents: int | None = None,
    grid: int = GRID,
) -> Verdict:
    """Replay a cell adaptively: score `batch` more documents, update, stop once decided (or at
    max_documents with "undecided"). x, y are already in the cell's seeded document order. The
    bets are predictable, so the capital on a prefix is final: it is computed on doubling
    prefixes (8 batches, 16, ...) and a clear cell costs about twice its stopping point."""
    n = min(len(x), max_documents or len(x))
    z, lo, hi, thr = target.paired(x[:n], y[:n])
    u = (np.clip(z, lo, hi) - lo) / (hi - lo)
    points = np.linspace(0.0, 1.0, grid)
    t_thr = (thr - lo) / (hi - lo)
    csum = np.cumsum(u)
    ends = [*range(batch, n, batch), n]
    done = 0
    horizon = min(n, 8 * batch)
    while True:
        cross = first_crossings(u[:horizon], alpha, grid=points)
        cross[cross == horizon + 1] = n + 1  # not crossed within the prefix: not crossed yet
        for end in (e for e in ends[done:] if e <= horizon):
            done += 1
            kept = points[cross > end]
            if not len(kept):
                kept = points[[np.argmin(np.abs(points - csum[end - 1] / end))]]
            a, b = float(kept[0]), float(kept[-1])
            v = ABOVE if a > t_thr else BELOW if b < t_thr else UNDECIDED
            if v != UNDECIDED or end == n:
                return Verdict(v, lo + a * (hi - lo), lo + b * (hi - lo), end)
        horizon = min(n, 2 * horizon)
