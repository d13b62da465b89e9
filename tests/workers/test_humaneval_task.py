"""Load humaneval_local through lm-eval's own registry, offline, and score it via the sandbox."""

import pytest


@pytest.fixture(scope="module")
def task(lm_eval_task):
    return lm_eval_task("humaneval_local")


def test_loads_164_docs_and_renders_prompt(task):
    docs = list(task.test_docs())
    assert len(docs) == 164
    assert {"task_id", "prompt", "canonical_solution", "test", "entry_point"} <= set(docs[0])
    assert docs[0]["task_id"] == "HumanEval/0"
    assert task.doc_to_text(docs[0]) == docs[0]["prompt"]
    assert task.config.generation_kwargs["until"][:2] == ["\nclass", "\ndef"]
    assert task.config.generation_kwargs["do_sample"] is False
    assert task.OUTPUT_TYPE == "generate_until"


def test_process_results_scores_right_and_wrong(task):
    doc = next(iter(task.test_docs()))
    assert task.process_results(doc, [doc["canonical_solution"]]) == {"pass@1": 1.0}
    assert task.process_results(doc, ["    return False\n"]) == {"pass@1": 0.0}
    assert task.aggregation()["pass@1"]([1.0, 0.0]) == 0.5
    assert task.higher_is_better()["pass@1"] is True
