"""Paired statistics against the baseline format, on the same samples.

Recovery as the paper defines it: quantized / baseline x 100 (baseline / quantized for
lower-is-better metrics); for a suite, the ratio of the suite averages, not the mean of ratios.
Confidence intervals come from a paired bootstrap: each resample draws the same documents for
the baseline and the quantized format (seeded, `resamples` configurable), and every statistic
(difference, recovery, suite recovery) is computed on those same draws. Corpus metrics
(perplexity) are re-aggregated per resample from per-document loglikelihoods and word counts,
never averaged; ratio metrics (a judge's weighted win rate) likewise as pooled wins / weight.
McNemar's exact test (scipy's binomial test on the discordant pairs) for 0/1 outcomes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass
class Samples:
    """One (model, format, task)'s per-document outcomes, aligned on doc_id by `align`."""

    doc_ids: np.ndarray
    values: np.ndarray  # per-document metric (0/1 accuracy, pass@1, ...) or loglikelihood
    units: np.ndarray | None = None  # corpus metrics: words (or bytes) per document; ratios: weights
    ratio: bool = False  # values / units pooled (a judge's weighted win rate), not a perplexity

    def statistic(self, idx: np.ndarray) -> np.ndarray:
        """The task score on each resample (rows of `idx`): a mean, a pooled ratio or a corpus perplexity."""
        if self.units is None:
            return self.values[idx].mean(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled = self.values[idx].sum(axis=-1) / self.units[idx].sum(axis=-1)
        return pooled if self.ratio else np.exp(-pooled)


def align(base: Samples, other: Samples) -> tuple[Samples, Samples]:
    """Keep the documents both formats scored, in the same order (paired)."""
    common, bi, oi = np.intersect1d(base.doc_ids, other.doc_ids, return_indices=True)
    pick = lambda s, i: Samples(common, s.values[i], None if s.units is None else s.units[i], s.ratio)
    return pick(base, bi), pick(other, oi)


@dataclass
class Paired:
    task: str
    n: int
    base: float
    score: float
    diff: float
    diff_ci: tuple[float, float]
    recovery: float | None
    recovery_ci: tuple[float, float] | None
    mcnemar_p: float | None  # exact, 0/1 outcomes only
    discordant: tuple[int, int] | None  # (baseline right / quantized wrong, the reverse)


def _ratio(score: np.ndarray, base: np.ndarray, higher_is_better: bool) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * (score / base if higher_is_better else base / score)


def _ci(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if not len(x):
        return (math.nan, math.nan)
    lo, hi = np.quantile(x, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(lo), float(hi)


def mcnemar_exact(base: np.ndarray, other: np.ndarray) -> tuple[float, tuple[int, int]]:
    from scipy.stats import binomtest

    b = int(np.sum((base == 1) & (other == 0)))
    c = int(np.sum((base == 0) & (other == 1)))
    return (1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)), (b, c)


def resample_indices(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(resamples, n))


def paired_task(
    task: str, base: Samples, other: Samples, higher_is_better: bool, resamples: int = 2000, seed: int = 0
) -> tuple[Paired, np.ndarray, np.ndarray]:
    """Statistics for one task, plus the per-resample scores (for suite aggregation)."""
    base, other = align(base, other)
    n = len(base.doc_ids)
    if n == 0:
        raise ValueError(f"task {task}: the baseline and this format share no scored documents")
    rng = np.random.default_rng(seed)
    idx = resample_indices(n, resamples, rng)
    full = np.arange(n)[None, :]
    b0, s0 = float(base.statistic(full)[0]), float(other.statistic(full)[0])
    bs, ss = base.statistic(idx), other.statistic(idx)
    binary = (
        base.units is None and set(np.unique(base.values)) <= {0.0, 1.0} and set(np.unique(other.values)) <= {0.0, 1.0}
    )
    p, disc = mcnemar_exact(base.values, other.values) if binary else (None, None)
    rec = (
        None
        if b0 == 0 or (s0 == 0 and not higher_is_better)
        else float(_ratio(np.array(s0), np.array(b0), higher_is_better))
    )
    return (
        Paired(
            task,
            n,
            b0,
            s0,
            s0 - b0,
            _ci(ss - bs),
            rec,
            _ci(_ratio(ss, bs, higher_is_better)) if rec is not None else None,
            p,
            disc,
        ),
        bs,
        ss,
    )


def suite_recovery(per_task: list[tuple[float, float, np.ndarray, np.ndarray]]) -> tuple[float, tuple[float, float]]:
    """Ratio of suite averages (x100) and its CI; per_task: (base score, score, base draws, draws).
    Suites hold higher-is-better tasks of one scale (accuracies), as the paper's do."""
    base = np.mean([t[0] for t in per_task])
    score = np.mean([t[1] for t in per_task])
    bs = np.mean([t[2] for t in per_task], axis=0)
    ss = np.mean([t[3] for t in per_task], axis=0)
    return float(100.0 * score / base) if base else math.nan, _ci(_ratio(ss, bs, True))


def not_applicable(base: float, ci_low: float, chance: float | None) -> str:
    """The paper's rule, one for every table: no recovery ratio where the baseline scored 0 or its
    95% interval reaches chance level (1/k for k choices). '' = a ratio is meaningful."""
    if base == 0:
        return "N/A (baseline 0)"
    if chance is not None and ci_low <= chance:
        return "N/A (baseline at chance)"
    return ""


def baseline_ci(base: Samples, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The baseline score's own bootstrap interval (the N/A-at-chance rule)."""
    idx = resample_indices(len(base.doc_ids), resamples, np.random.default_rng(seed))
    return _ci(base.statistic(idx))
