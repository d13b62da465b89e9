"""Distribution fidelity: per-token KL divergence of a format's next-token distribution from the
baseline's on the same text, and top-1 agreement, per document, with paired bootstrap CIs.

Input: the per-sample files of a `token_dist` task (workers/scoring/token_dist.py): for every
position, each side's top-k token ids and log-probabilities (vLLM prompt logprobs). Only the top k
of each distribution is known, so KL(p_base || q_format) is computed on the partition {each token
both top-k sets hold} + {everything else}:

    KL_lb = sum_{i in shared} p_i log(p_i / q_i) + p_rest log(p_rest / q_rest)

exact on the shared tokens, and by the log-sum inequality (coarsening never increases KL) a lower
bound on the full KL; the rest's share of the baseline's mass (`outside_mass`, per position) says
how much is not seen token by token. Both are reported. Top-1 agreement: the two argmax tokens
are the same.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from orchestrator.report.analysis import resample_indices

FLOOR = 1e-12


def position_kl(p_ids, p_lp, q_ids, q_lp) -> tuple[float, float, bool]:
    """(KL lower bound, baseline mass outside the shared top-k tokens, top-1 agrees) at one position."""
    q = dict(zip(q_ids, q_lp))
    shared = [(lp, q[t]) for t, lp in zip(p_ids, p_lp) if t in q]
    p_s = np.exp([a for a, _ in shared]) if shared else np.zeros(0)
    q_s = np.exp([b for _, b in shared]) if shared else np.zeros(0)
    kl = float(np.sum(p_s * (np.log(np.maximum(p_s, FLOOR)) - np.log(np.maximum(q_s, FLOOR)))))
    p_rest = max(1.0 - float(p_s.sum()), 0.0)
    q_rest = max(1.0 - float(q_s.sum()), FLOOR)
    if p_rest > FLOOR:
        kl += p_rest * math.log(p_rest / q_rest)
    return max(kl, 0.0), p_rest, bool(p_ids and q_ids and p_ids[0] == q_ids[0])


def document(base: dict, other: dict) -> tuple[float, float, float]:
    """Per document: mean KL lower bound, top-1 agreement rate, mean outside mass."""
    n = min(len(base["top_ids"]), len(other["top_ids"]))
    if n == 0:
        return math.nan, math.nan, math.nan
    vals = [
        position_kl(base["top_ids"][j], base["top_logprobs"][j], other["top_ids"][j], other["top_logprobs"][j])
        for j in range(n)
    ]
    kl, rest, top1 = zip(*vals)
    return float(np.mean(kl)), float(np.mean(top1)), float(np.mean(rest))


def _extras(path: Path) -> dict[int, dict]:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["doc_id", "extra"]).to_pydict()
    return {int(d): json.loads(e) for d, e in zip(t["doc_id"], t["extra"])}


def compare(base_path: Path, other_path: Path, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean KL (lower bound), top-1 agreement and outside mass over the documents both scored,
    each with a paired bootstrap 95% CI over documents."""
    base, other = _extras(base_path), _extras(other_path)
    docs = sorted(set(base) & set(other))
    per = np.array([document(base[d], other[d]) for d in docs], dtype=float).reshape(-1, 3)
    per = per[~np.isnan(per).any(axis=1)]
    out = {"n": len(per)}
    if not len(per):
        return out | {"kl": None, "kl_ci": None, "top1": None, "top1_ci": None, "outside_mass": None}
    idx = resample_indices(len(per), resamples, np.random.default_rng(seed))
    for col, name in ((0, "kl"), (1, "top1")):
        draws = per[idx, col].mean(axis=1)
        out[name] = float(per[:, col].mean())
        out[f"{name}_ci"] = [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))]
    out["outside_mass"] = float(per[:, 2].mean())
    return out


def table(results: list[dict], run_dir: Path, baseline: str, tasks: list[str], resamples: int = 2000) -> list[dict]:
    """One row per (model, format, token_dist task) against the baseline's cell."""
    from orchestrator.store.results import samples_file

    latest = {(r["model"], r["format"], r["task"]): r for r in results}
    rows = []
    for (model, fmt, task), rec in sorted(latest.items()):
        base = latest.get((model, baseline, task))
        if task not in tasks or fmt == baseline or base is None:
            continue
        stats = compare(
            samples_file(run_dir, model, baseline, task, base["cell_key"]),
            samples_file(run_dir, model, fmt, task, rec["cell_key"]),
            resamples,
        )
        rows.append({"model": model, "format": fmt, "task": task, **stats})
    return rows


def to_markdown(rows: list[dict], baseline: str, noise_floor: str = "") -> str:
    if not rows:
        return ""
    out = [
        f"### Distribution fidelity vs {baseline}",
        "",
        "Per-token KL(baseline ‖ format) of the next-token distributions on the same text (a lower bound: "
        "exact on the tokens both top-k sets hold, the rest as one bin), top-1 agreement, paired bootstrap "
        "95% CIs over documents; outside mass = the baseline's probability not on shared top-k tokens."
        + (f" {noise_floor} is the baseline rerun in other batches: the engine's own floor." if noise_floor else ""),
        "",
        "| model | task | format | documents | mean KL [95% CI] | top-1 agreement [95% CI] | outside mass |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["kl"] is None:
            out.append(f"| {r['model']} | {r['task']} | {r['format']} | 0 | — | — | — |")
            continue
        out.append(
            f"| {r['model']} | {r['task']} | {r['format']} | {r['n']} | {r['kl']:.4g} "
            f"[{r['kl_ci'][0]:.4g}, {r['kl_ci'][1]:.4g}] | {100 * r['top1']:.1f}% "
            f"[{100 * r['top1_ci'][0]:.1f}, {100 * r['top1_ci'][1]:.1f}] | {r['outside_mass']:.3g} |"
        )
    return "\n".join(out + [""])
