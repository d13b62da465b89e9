"""Adaptive paired scoring of one quantized cell (`sweep.adaptive`), driver side.

The cell is scored `batch_documents` documents at a time on its engine (which stays loaded: the
scheduler sends the same cell again, stages.py `_evaluate`), in a seeded order of the documents the
baseline scored, the same order for every format of the task. After each batch the pairs seen so
far (this format's score, the baseline's, per document, in scoring order) update the
anytime-valid confidence sequence of orchestrator/report/sequential.py; the cell stops once it
says `above` or `below` the target, or when the documents run out (`undecided`). Each batch is
committed to the ledger with its per-sample records (fenced by the attempt's token, like a
result), so a resumed or retried cell continues from its last batch. The final result is the
merged batches: metrics recomputed from the per-sample records, the verdict in its metrics (hence
MLflow), its provenance (hence the ledger's record and the report) and the cell's `adaptive`
column (status).

Why the baseline is scored whole: every format is read against it, so each of its documents is
used by up to (formats - 1) verdicts, and its scores must exist before the first batch of any
format (plan.py puts the adaptive groups after the baseline's).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from orchestrator.report.sequential import UNDECIDED, Target, verdict
from quantgrid.types import Cell, SampleRecord, TaskResult, stable_hash

# Verdicts as a number, for MLflow metrics: above +1, undecided 0, below -1.
VERDICT_CODE = {"above": 1.0, UNDECIDED: 0.0, "below": -1.0}


def document_order(doc_ids: list[int], seed: int, task: str, cell_seed: int) -> list[int]:
    """The documents in the order every format of (task, seed) scores them: a seeded shuffle of
    the sorted ids, so it depends on which documents there are, never on how a run found them."""
    rng = np.random.default_rng([int(seed), int(cell_seed), int(stable_hash(task, 8), 16)])
    ids = sorted(int(d) for d in doc_ids)
    return [ids[i] for i in rng.permutation(len(ids))]


def per_document(samples: list[SampleRecord], metric: str) -> dict[int, float]:
    """{doc_id: the primary metric's per-document value} under the metric's filter
    (`exact_match,strict-match` -> the strict-match rows)."""
    name, _, filt = metric.partition(",")
    return {s.doc_id: float(s.metrics[name]) for s in samples if s.filter == (filt or "none") and name in s.metrics}


@dataclass
class AdaptiveCell:
    cell: Cell
    order: list[int]  # the documents to score, in order, at most max_documents
    baseline: dict[int, float]  # the baseline's per-document score on them
    batches: list[dict[str, Any]] = field(default_factory=list)  # committed: documents, samples, verdict
    finished: bool = False

    @property
    def settings(self) -> dict[str, Any]:
        return self.cell.task.adaptive or {}

    @property
    def scored(self) -> int:
        return sum(len(b["documents"]) for b in self.batches)

    def next_documents(self) -> list[int]:
        n = self.scored
        return self.order[n : n + int(self.settings["batch_documents"])]

    def samples(self) -> list[SampleRecord]:
        return [SampleRecord(**s) if isinstance(s, dict) else s for b in self.batches for s in b["samples"]]

    def decide(self) -> dict[str, Any]:
        """The verdict on every pair scored so far, in scoring order."""
        x = per_document(self.samples(), self.cell.task.metric)
        docs = [d for b in self.batches for d in b["documents"] if d in x]
        a = self.settings
        target = Target(str(a["target"]), float(a["value"]))
        v = verdict(
            np.array([x[d] for d in docs]), np.array([self.baseline[d] for d in docs]), target, float(a["alpha"])
        )
        exhausted = self.scored >= len(self.order)
        return {
            "verdict": v.verdict,
            # The CS on E[Z]: Z = x - value * y (recovery: above iff low > 0) or x - y (difference:
            # above iff low > -value); sequential.py says why the ratio is decided this way.
            "low": v.low,
            "high": v.high,
            "target": target.kind,
            "value": target.value,
            "alpha": float(a["alpha"]),
            "documents": self.scored,
            "max_documents": len(self.order),
            "saved": len(self.order) - self.scored if v.verdict != UNDECIDED or exhausted else 0,
            "batches": len(self.batches),
            "final": v.verdict != UNDECIDED or exhausted,
            "mean": float(np.mean([x[d] for d in docs])) if docs else math.nan,
            "baseline_mean": float(np.mean([self.baseline[d] for d in docs])) if docs else math.nan,
        }

    def add(self, result: TaskResult, documents: list[int]) -> dict[str, Any]:
        """A batch's result (not yet committed): its row for the ledger, verdict included."""
        rank = {d: i for i, d in enumerate(self.order)}
        samples = sorted(result.samples, key=lambda s: (rank.get(s.doc_id, len(rank)), s.filter))
        row = {"batch": len(self.batches), "documents": documents, "samples": [asdict(s) for s in samples]}
        self.batches.append(row)
        row["verdict"] = self.decide() | {"seconds": result.seconds, "tokens": dict(result.tokens)}
        return row

    def undo(self) -> None:
        """The last batch was not committed (fenced off): forget it."""
        self.batches.pop()

    def merged(self, last: TaskResult) -> TaskResult:
        """The cell's result: every batch's records, metrics recomputed from them (means of the
        per-document values and their standard errors, per metric and filter), the verdict."""
        samples = self.samples()
        v = self.batches[-1]["verdict"]
        metrics: dict[str, float] = {}
        by_key: dict[tuple[str, str], list[float]] = {}
        for s in samples:
            for k, val in s.metrics.items():
                by_key.setdefault((k, s.filter), []).append(float(val))
        for (k, filt), vals in by_key.items():
            arr = np.asarray(vals)
            metrics[f"{k},{filt}"] = float(arr.mean())
            metrics[f"{k}_stderr,{filt}"] = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else math.nan
        metrics |= {
            "adaptive_verdict": VERDICT_CODE[v["verdict"]],
            "adaptive_low": v["low"],
            "adaptive_high": v["high"],
            "adaptive_documents": float(v["documents"]),
            "adaptive_saved": float(v["saved"]),
        }
        tokens: dict[str, int] = {}
        for b in self.batches:  # each batch's own figures ride in its verdict (the ledger's row)
            for k, n in (b["verdict"].get("tokens") or {}).items():
                tokens[k] = tokens.get(k, 0) + int(n)
        seconds = sum(float(b["verdict"].get("seconds", 0.0)) for b in self.batches)
        prov = dict(last.provenance) | {
            "adaptive": {k: v[k] for k in v if k not in ("seconds", "tokens", "final")}
            | {"seed": self.settings["seed"]}
        }
        return TaskResult(
            cell_key=last.cell_key,
            model=last.model,
            format=last.format,
            task=last.task,
            metrics=metrics,
            samples=samples,
            num_samples=len({s.doc_id for s in samples}),
            seconds=seconds,
            provenance=prov,
            higher_is_better=last.higher_is_better,
            primary_metric=last.primary_metric,
            tokens=tokens,
        )
