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


def test_humaneval_plus_reads_evalplus_from_the_hub_and_scores_in_the_sandbox(lm_eval_task, monkeypatch):
    """humaneval_plus_local loads evalplus/humanevalplus (the Hub: not reachable here, so the
    loader is handed HumanEval's rows, which have the same fields) and scores like HumanEval."""
    import datasets

    base = {d["task_id"]: d for d in lm_eval_task("humaneval_local").test_docs()}
    rows = [{k: v for k, v in d.items() if k != "canonical_solution"} for d in list(base.values())[:3]]
    asked = []
    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda name, split=None, **kw: asked.append((name, split)) or datasets.Dataset.from_list(rows),
    )
    task = lm_eval_task("humaneval_plus_local")
    docs = list(task.test_docs())
    assert asked[0] == ("evalplus/humanevalplus", "test") and len(docs) == 3
    assert docs[0]["canonical_solution"] == ""  # absent upstream: filled for display only
    doc = docs[0]
    assert task.process_results(doc, [base[doc["task_id"]]["canonical_solution"]]) == {"pass@1": 1.0}
    assert task.process_results(doc, ["    return None\n"]) == {"pass@1": 0.0}


def test_humaneval_plus_without_hub_access_says_so(monkeypatch):
    import datasets

    from workers.tasks.humaneval_local import utils

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'evalplus/humanevalplus' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        RuntimeError, match=r"HumanEval\+ needs the evalplus/humanevalplus dataset .*hub_offline: false"
    ):
        utils.load_humanevalplus()


def test_sampled_variant_scores_unbiased_pass_at_1_over_all_samples(lm_eval_task):
    """humaneval_sampled: 50 samples at T=0.2 per problem (EvalPlus's setting), all kept by the
    filter, pass@1 = c/n with every sample run in the sandbox."""
    task = lm_eval_task("humaneval_sampled")
    gk = task.config.generation_kwargs
    assert task.config.repeats == 50 and gk["do_sample"] is True and gk["temperature"] == 0.2 and gk["top_p"] == 0.95
    doc = next(iter(task.test_docs()))
    right, wrong = doc["canonical_solution"], "    return None\n"
    # what lm-eval hands process_results after the take_first_k filter: one list of n samples
    assert task.process_results(doc, [[right, wrong, right, right]]) == {"pass@1": 0.75}
    resps = [[right, wrong] * 25]
    (filtered,) = [f for f in task._filters]
    from lm_eval.api.instance import Instance

    inst = Instance(request_type="generate_until", doc=doc, arguments=("", {}), idx=0, repeats=50)
    inst.resps = resps[0]
    filtered.apply([inst])
    assert len(inst.filtered_resps["none"]) == 50  # every sample reaches the metric, not only the first
