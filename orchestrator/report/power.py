"""Power planning: how many documents a task needs to detect a given recovery drop.

For 0/1-scored documents the paired test of a format against the baseline is McNemar's: only
discordant documents carry information. With baseline accuracy p, a recovery drop r (the
format's accuracy p(1 - r), a drop delta = r p) and a discordant-pair rate d, the documents
needed at level alpha (two-sided) and power 1 - beta are (Connor, "Sample size for testing
differences in proportions for the paired-sample design", Biometrics 43(1), 1987, Eq. 3):

    n = (z_{1-alpha/2} sqrt(d) + z_{1-beta} sqrt(d - delta^2))^2 / delta^2

p and d come from a previous sweep's per-sample results (a pilot): for each task, the baseline's
accuracy and the largest discordance any of its formats showed (the conservative choice: more
disagreement needs more documents to see the same drop).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def documents_needed(p_base: float, discordance: float, drop: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Documents to detect a recovery drop `drop` (0.01 = one point of recovery) at `power`."""
    from scipy.stats import norm

    delta = drop * p_base
    if delta <= 0:
        raise ValueError("the baseline's accuracy and the drop must be > 0")
    d = max(discordance, delta)  # a drop of delta needs at least delta discordant pairs
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return math.ceil((za * math.sqrt(d) + zb * math.sqrt(max(d - delta * delta, 0.0))) ** 2 / delta**2)


def paired_binary(run_dir: Path, baseline: str = "bf16"):
    """(model, format, task, baseline Samples, format Samples), aligned on doc_id, for every
    0/1-scored (model, quantized format, task) of a finished run that has the baseline's cell too
    (corpus metrics such as perplexity have no discordant pairs and are left out)."""
    from orchestrator.config.loader import SearchPath, load_yaml
    from orchestrator.report.analysis import align
    from orchestrator.report.paper import load_samples
    from orchestrator.store.results import samples_file

    records = [json.loads(ln) for ln in (run_dir / "results.jsonl").read_text().splitlines() if ln.strip()]
    latest = {(r["model"], r["format"], r["task"]): r for r in records if r.get("kind", "evaluate") == "evaluate"}
    for (model, fmt, task), rec in sorted(latest.items()):
        base_rec = latest.get((model, baseline, task))
        if fmt == baseline or base_rec is None:
            continue
        try:
            metric = str(load_yaml("task", task, SearchPath()).get("metric"))
            b = load_samples(samples_file(run_dir, model, baseline, task, base_rec["cell_key"]), metric)
            o = load_samples(samples_file(run_dir, model, fmt, task, rec["cell_key"]), metric)
        except Exception:  # noqa: BLE001 - a task this conf tree does not know, or a corpus metric
            continue
        if b.units is not None or not (np.isin(b.values, (0.0, 1.0)).all() and np.isin(o.values, (0.0, 1.0)).all()):
            continue
        b, o = align(b, o)
        if len(b.values):
            yield model, fmt, task, b, o


def pilot_rates(run_dir: Path, baseline: str = "bf16") -> dict[str, dict]:
    """{task: {p_base, discordance, documents, formats}} from a finished run's per-sample files."""
    out: dict[str, dict] = {}
    for _, fmt, task, b, o in paired_binary(run_dir, baseline):
        disc = float(np.mean(b.values != o.values))
        row = out.setdefault(
            task, {"p_base": float(b.values.mean()), "discordance": 0.0, "documents": 0, "formats": {}}
        )
        row["formats"][fmt] = round(disc, 4)
        row["discordance"] = max(row["discordance"], disc)
        row["documents"] = max(row["documents"], len(b.values))
    return out


def plan_power(run_dir: Path, drops: list[float], alpha: float, power: float, baseline: str = "bf16") -> dict:
    rates = pilot_rates(run_dir, baseline)
    tasks = {}
    for task, r in rates.items():
        need = {}
        for drop in drops:
            try:
                need[f"{drop:g}"] = documents_needed(r["p_base"], r["discordance"], drop, alpha, power)
            except ValueError:
                need[f"{drop:g}"] = None  # baseline at 0: no drop to detect
        tasks[task] = {**r, "documents_needed": need}
    return {"pilot": str(run_dir), "alpha": alpha, "power": power, "recovery_drops": drops, "tasks": tasks}
