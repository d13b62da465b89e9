"""mmlu_local loads through lm-eval's registry, offline, with same-subject dev shots."""

import pytest

# 14,044 lines - 2 stray header rows - 5 test rows equal to a dev (few-shot) question
N_TEST = 14_037


@pytest.fixture(scope="module")
def task(lm_eval_task):
    return lm_eval_task("mmlu_local")


def _by_subject(docs):
    out = {}
    for d in docs:
        out.setdefault(d["subject"], []).append(d)
    return out


def test_splits(task):
    test, dev = task.test_docs(), list(task.fewshot_docs())
    assert len(test) == N_TEST
    subjects = set(test["subject"])
    assert len(subjects) == 57 and subjects == set(_by_subject(dev))
    assert "abstract_algebra" in subjects and "moral_scenarios" in subjects
    assert len(dev) == 281  # 5 per subject, minus 4 missing/unparseable upstream
    test_q = {" ".join(q.split()) for q in test["question"]}
    assert not any(" ".join(d["question"].split()) in test_q for d in dev)
    assert task.doc_to_choice(test[0]) == ["A", "B", "C", "D"]
    assert all(len(d["choices"]) == 4 and 0 <= d["answer"] < 4 for d in dev)


def _expected_context(task, doc, shots):
    subject = doc["subject"].replace("_", " ")
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    body = "".join(f"{task.doc_to_text(d)} {'ABCD'[d['answer']]}\n\n" for d in shots)
    return head + body + task.doc_to_text(doc)


@pytest.mark.parametrize("subject", ["moral_scenarios", "college_medicine", "abstract_algebra"])
def test_two_shot_context_is_same_subject_dev(task, subject):
    dev = _by_subject(task.fewshot_docs())
    doc = next(d for d in task.test_docs() if d["subject"] == subject)
    ctx = task.fewshot_context(doc, num_fewshot=2)
    assert ctx == _expected_context(task, doc, dev[subject][:2])
    examples = ctx[: -len(task.doc_to_text(doc))]
    assert doc["question"].strip() not in examples
    others = [d for s, ds in dev.items() if s != subject for d in ds]
    assert not any(d["question"] in examples for d in others if d not in dev[subject])


def test_sampler_excludes_eval_doc_and_build_all_requests(task):
    dev = _by_subject(task.fewshot_docs())["anatomy"]
    # an eval doc equal to a dev example never serves as its own shot
    assert task.sampler.sample(2, eval_doc=dev[0]) == dev[1:3]

    task.set_config(key="num_fewshot", value=2)
    try:
        task.build_all_requests(limit=3)
    finally:
        task.set_config(key="num_fewshot", value=None)
    docs = list(task.test_docs().select(range(3)))
    assert len(task.instances) == 3 * 4
    for inst in task.instances:
        doc = docs[inst.doc_id]
        shots = _by_subject(task.fewshot_docs())[doc["subject"]][:2]
        assert inst.args[0] == _expected_context(task, doc, shots)
        assert inst.args[1] in {" A", " B", " C", " D"}
