"""`make bench BENCH=verdicts`: the anytime-valid verdict's figures, seeded, side by side in one run.

- coverage: >= 1,000 simulated paired streams per effect (true recovery below, AT and above the
  target), documents scored in batches; the share of streams whose true paired mean ever leaves
  the betting CS (orchestrator/report/sequential.py), and the share whose verdict is wrong, beside
  a fixed-n normal interval re-checked after every batch.
- savings: synthetic 10,000-document tasks at true recoveries a margin away from the target:
  documents used by the adaptive verdict vs all 10,000, and how often it equals the full-data
  verdict (the side of the target the full-data recovery estimate falls on); and the same replayed
  on real per-sample results (a tiny sweep run here, and `runs/demo` when `make demo` left one).
- paper: the paper grid's device-hours (cost model, `quantgrid plan sweep=paper --json`) with
  quantized cells' evaluation scaled by the documents the adaptive verdict used.

Streams: baseline 0/1 outcomes ~ Bernoulli(p_base); the quantized outcome flips a baseline-correct
document to wrong with probability `loss` and a wrong one to correct with probability `gain`
(gain fixed at 0.03; loss set so the true recovery is the wanted one). Prints one JSON line.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from orchestrator.report.sequential import ABOVE, BELOW, Target, first_crossings, run_adaptive

ROOT = Path(__file__).resolve().parents[1]
ALPHA, BATCH, TARGET = 0.05, 50, 0.95
P_BASE, GAIN = 0.6, 0.03


def streams(rng, n_streams: int, n: int, recovery: float, p_base: float = P_BASE, gain: float = GAIN):
    """(x, y) arrays of shape (n_streams, n) with E[x] / E[y] = recovery exactly."""
    loss = 1 - (recovery * p_base - (1 - p_base) * gain) / p_base  # P(correct -> wrong)
    if not 0 <= loss <= 1:
        raise ValueError(f"recovery {recovery} unreachable with p_base {p_base}, gain {gain}")
    y = (rng.random((n_streams, n)) < p_base).astype(float)
    r = rng.random((n_streams, n))
    x = np.where(y == 1, r >= loss, r < gain).astype(float)
    return x, y


def coverage(n_streams: int = 1000, n: int = 2000) -> dict:
    rng = np.random.default_rng(20261206)
    out = {}
    for rec in (0.90, 0.93, TARGET, 0.97, 1.00):
        x, y = streams(rng, n_streams, n, rec)
        target = Target("recovery", TARGET)
        z, lo, hi, thr = target.paired(x, y)
        mean = P_BASE * (rec - TARGET)  # E[Z] = mu_q - rho mu_b, known
        u_true = (mean - lo) / (hi - lo)
        u = (z - lo) / (hi - lo)
        cs_miss = sum(first_crossings(row, ALPHA, grid=np.array([u_true]))[0] <= n for row in u)
        # fixed-n normal interval, peeked at after every batch
        from scipy.stats import norm

        ends = np.arange(BATCH, n + 1, BATCH)
        cz = np.cumsum(z, axis=1)[:, ends - 1]
        cz2 = np.cumsum(z * z, axis=1)[:, ends - 1]
        m = cz / ends
        sd = np.sqrt(np.maximum(cz2 / ends - m * m, 0) * ends / (ends - 1))
        half = norm.ppf(1 - ALPHA / 2) * sd / np.sqrt(ends)
        naive_miss = int(((mean < m - half) | (mean > m + half)).any(axis=1).sum())
        naive_final = int(((mean < m[:, -1] - half[:, -1]) | (mean > m[:, -1] + half[:, -1])).sum())
        wrong = decided = 0
        used = []
        for xi, yi in zip(x[:200], y[:200]):  # verdicts (full CS grid) on the first 200 streams
            v = run_adaptive(xi, yi, target, ALPHA, BATCH, grid=401)
            if v.verdict != "undecided":
                decided += 1
                wrong += (v.verdict == ABOVE and rec <= TARGET) or (v.verdict == BELOW and rec >= TARGET)
            used.append(v.documents)
        out[f"recovery_{rec:.2f}"] = {
            "streams": n_streams,
            "cs_miss_rate_any_time": round(cs_miss / n_streams, 4),
            "naive_miss_rate_peeking_every_batch": round(naive_miss / n_streams, 4),
            "naive_miss_rate_at_fixed_n": round(naive_final / n_streams, 4),
            "verdicts_on_200": {"decided": decided, "wrong": int(wrong), "mean_documents": round(float(np.mean(used)))},
        }
    return {"alpha": ALPHA, "target": TARGET, "batch": BATCH, "documents": n, **out}


def savings_synthetic(cells: int = 100, n: int = 10_000) -> dict:
    rng = np.random.default_rng(7)
    out = {}
    for margin in (0.01, 0.02, 0.03, 0.05):
        for sign in (+1, -1):
            rec = TARGET + sign * margin
            x, y = streams(rng, cells, n, rec)
            used, agree, decided = [], 0, 0
            for xi, yi in zip(x, y):
                v = run_adaptive(xi, yi, Target("recovery", TARGET), ALPHA, BATCH, grid=401)
                full = ABOVE if xi.mean() / yi.mean() >= TARGET else BELOW
                used.append(v.documents)
                if v.verdict != "undecided":
                    decided += 1
                    agree += v.verdict == full
            out[f"recovery_{rec:.2f}"] = {
                "margin": margin,
                "mean_documents": round(float(np.mean(used))),
                "fewer_documents_x": round(n / float(np.mean(used)), 1),
                "decided": decided,
                "agrees_with_full_data": round(agree / max(decided, 1), 3),
            }
    return {"documents_per_task": n, "cells_per_effect": cells, **out}


def _run_tiny(tmp: Path) -> Path:
    cmd = [str(ROOT / ".venv/bin/quantgrid"), "run", "sweep=tiny", f"run_dir={tmp}"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=1800)
    return tmp / "tiny"


def replay(run_dir: Path, baseline: str = "bf16") -> dict:
    """Every (model, quantized format, task) of a finished run with 0/1-scored documents, replayed
    adaptively in a seeded document order shared with the baseline."""
    from orchestrator.report.power import paired_binary

    from orchestrator.execution.adaptive import document_order

    cells = []
    for model, fmt, task, b, o in paired_binary(run_dir, baseline):
        # the order a `sweep.adaptive` run would score them in (seed 0, shared by the formats)
        rank = {d: i for i, d in enumerate(b.doc_ids.astype(int).tolist())}
        order = np.array([rank[d] for d in document_order(list(rank), 0, task, 1234)])
        v = run_adaptive(o.values[order], b.values[order], Target("recovery", TARGET), ALPHA, min(BATCH, 10))
        full = o.values.mean() / b.values.mean() if b.values.mean() > 0 else float("nan")
        cells.append(
            {
                "cell": f"{model}/{fmt}/{task}",
                "documents": len(b.values),
                "used": v.documents,
                "verdict": v.verdict,
                "full_data_recovery": None if math.isnan(full) else round(float(full), 4),
            }
        )
    return {"run": str(run_dir), "cells": cells}


def adaptive_runs() -> list[dict]:
    """Sweeps under runs/ that ran with sweep.adaptive (e.g. `make demo`'s demo_adaptive): their
    verdicts and documents as the ledger recorded them, not replayed."""
    from orchestrator.report.verdicts import rows, summary

    out = []
    for ledger in sorted((ROOT / "runs").glob("*/ledger.db")):
        from orchestrator.store.ledger import Ledger

        led = Ledger(ledger)
        try:
            v = rows(led.results(ledger.parent.name))
        finally:
            led.close()
        if v:
            out.append(
                {
                    "run": str(ledger.parent),
                    **summary(v),
                    "cells": [
                        {k: r[k] for k in ("format", "task", "verdict", "documents", "max_documents")} for r in v
                    ],
                }
            )
    return out


def paper_hours(fraction_used: dict[str, float]) -> dict:
    """The paper grid's device-hours (cost model, as `quantgrid plan sweep=paper` prints them) with
    the evaluation of the quantized formats' adaptive-eligible cells (sweep.adaptive: per-document
    0/1 metrics; perplexity-like and judged tasks stay whole) scaled by the fraction of documents
    the adaptive verdict used on the synthetic tasks. Engine loads, quantization, the baseline's
    evaluation and serving benchmarks are unchanged."""
    from orchestrator.config import compose, load_sweep
    from orchestrator.planning.cost import CostModel
    from orchestrator.planning.plan import expand
    from quantgrid.settings import Adaptive

    plan = expand(load_sweep(compose(["sweep=paper"])))
    cost = CostModel(plan.sweep.cost)
    total = plan.estimate(cost)["device_hours"]
    saved_scale = 0.0
    eligible = set()
    for st in plan.evaluate_stages:
        devices = st.model.tensor_parallel_size * st.model.pipeline_parallel_size
        for c in st.cells:
            if c.format.name == plan.sweep.baseline or Adaptive.eligible(
                c.task.metric, c.task.higher_is_better, c.task.scorer_kind
            ):
                continue
            eligible.add(c.task.name)
            saved_scale += cost.cell_seconds(c) * devices / 3600
    return {
        "gpu": "h100-80gb (the paper sweep's accelerator)",
        "device_hours_full": round(total, 1),
        "quantized_eligible_evaluation_hours": round(saved_scale, 1),
        "eligible_tasks": sorted(eligible),
        **{f"device_hours_adaptive_{k}": round(total - saved_scale * (1 - f), 1) for k, f in fraction_used.items()},
    }


def main() -> int:
    cov = coverage()
    sav = savings_synthetic()
    replays = []
    with tempfile.TemporaryDirectory(prefix="qg-bench-verdicts-") as tmp:
        replays.append(replay(_run_tiny(Path(tmp))))
        if (ROOT / "runs" / "demo" / "results.jsonl").exists():
            replays.append(replay(ROOT / "runs" / "demo"))
    frac = {
        f"margin_{m}": float(
            np.mean([v["mean_documents"] for v in sav.values() if isinstance(v, dict) and v.get("margin") == m])
        )
        / sav["documents_per_task"]
        for m in (0.02, 0.05)
    }
    live = adaptive_runs()
    print(
        json.dumps(
            {"coverage": cov, "savings": sav, "replay": replays, "adaptive_runs": live, "paper": paper_hours(frac)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
