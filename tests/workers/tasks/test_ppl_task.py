"""ppl_local: held-out Lee news docs, disjoint from the calibration corpus."""

from importlib.util import find_spec
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def task(lm_eval_task):
    return lm_eval_task("ppl_local")


def _background():
    # read independently of the task's utils so the overlap check is not circular
    pkg = Path(next(iter(find_spec("gensim").submodule_search_locations)))
    text = (pkg / "test/test_data/lee_background.cor").read_text(encoding="latin-1")
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def test_docs_are_held_out(task):
    docs = task.test_docs()
    assert len(docs) == 50  # none of lee.cor overlaps lee_background.cor
    assert docs["doc_index"] == list(range(50))
    background = "\n".join(_background())
    assert len(_background()) == 300
    assert not any(" ".join(t.split()) in background for t in docs["text"])
    assert all(t and t == t.strip() for t in docs["text"])


def test_rolling_requests(task):
    doc = task.test_docs()[0]
    inst = task.construct_requests(doc=doc, ctx="", metadata=("ppl_local", 0, 1))
    inst = inst[0] if isinstance(inst, list) else inst
    assert inst.request_type == "loglikelihood_rolling"
    assert inst.args == (doc["text"],)
    assert doc["text"].startswith("The national executive of the strife-torn Democrats")

    task.build_all_requests(limit=2)
    assert [i.args for i in task.instances] == [(d["text"],) for d in task.test_docs().select(range(2))]
    words = len(doc["text"].split())
    res = task.process_results(doc, [-10.0])
    assert res["word_perplexity"] == (-10.0, words)
    assert res["bits_per_byte"] == (-10.0, len(doc["text"].encode("utf-8")))
    assert task.aggregation()["word_perplexity"].__name__ == "weighted_perplexity"
