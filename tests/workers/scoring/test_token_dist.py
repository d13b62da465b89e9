"""The token_dist scorer on a scripted engine: what it asks vLLM for (prompt logprobs, top k, one
generated token) and what each per-sample record holds."""

import math
from types import SimpleNamespace

import pytest

from quantgrid.types import TaskSpec
from workers.scoring.token_dist import _positions, evaluate_token_dist, load_texts


class _Engine:
    """lm-eval's VLLM as the scorer sees it: `.tokenizer` and `.model` (the vllm.LLM)."""

    def __init__(self):
        self.calls = []
        self.tokenizer = lambda text, add_special_tokens: {"input_ids": [0] + [len(w) for w in text.split()]}
        self.model = SimpleNamespace(generate=self.generate)

    def generate(self, prompts, params, use_tqdm):
        from vllm.logprobs import Logprob

        self.calls.append(params)
        outs = []
        for p in prompts:
            ids = p["prompt_token_ids"]
            plp = [None]
            for pos in range(1, len(ids)):
                # top-2 are tokens 1 and 2; the actual token is added at its own rank when outside
                entry = {1: Logprob(math.log(0.6), 1, "a"), 2: Logprob(math.log(0.3), 2, "b")}
                entry.setdefault(ids[pos], Logprob(math.log(0.01), 50, "x"))
                plp.append(entry)
            outs.append(SimpleNamespace(prompt_logprobs=plp))
        return outs


def test_records_hold_the_top_k_per_position_and_the_texts_nll(tmp_path):
    text = tmp_path / "docs.txt"
    text.write_text("a bb ccc\n\nbb a\n")
    task = TaskSpec(
        name="nexttoken",
        metric="token_nll,none",
        higher_is_better=False,
        scorer={"kind": "token_dist", "text": {"path": str(text)}, "top_k": 2, "max_tokens": 3},
    )
    engine = _Engine()
    out = evaluate_token_dist(engine, task)
    (params,) = engine.calls
    assert params.prompt_logprobs == 2 and params.max_tokens == 1
    assert [s.doc_id for s in out["samples"]] == [0, 1] and out["num_samples"] == 2
    first = out["samples"][0]
    # "a bb ccc" -> [0, 1, 2, 3] cut to max_tokens 3 -> [0, 1, 2]: positions predict 1, then 2
    assert first.extra["top_ids"] == [[1, 2], [1, 2]]
    assert first.extra["actual_logprob"] == pytest.approx([math.log(0.6), math.log(0.3)])
    assert first.metrics["token_nll"] == pytest.approx(-(math.log(0.6) + math.log(0.3)) / 2)
    second = out["samples"][1]  # "bb a" -> [0, 2, 1]
    assert second.extra["actual_logprob"] == pytest.approx([math.log(0.3), math.log(0.6)])
    nll = -(2 * math.log(0.6) + 2 * math.log(0.3)) / 4
    assert out["metrics"]["token_nll,none"] == pytest.approx(nll)
    assert out["metrics"]["token_perplexity,none"] == pytest.approx(math.exp(nll))


def test_a_token_outside_the_top_k_is_not_kept_among_them():
    from vllm.logprobs import Logprob

    entry = {1: Logprob(-0.5, 1, "a"), 2: Logprob(-1.0, 2, "b"), 9: Logprob(-6.0, 40, "z")}
    top_ids, top_lp, actual = _positions([None, entry], [0, 9], 2)
    assert top_ids == [[1, 2]] and top_lp == [[-0.5, -1.0]] and actual == [-6.0]


def test_texts_come_from_a_package_file_without_importing_it():
    docs = load_texts({"package": "gensim", "file": "test/test_data/lee.cor", "encoding": "latin-1"})
    assert len(docs) == 50 and all(d and "\n" not in d for d in docs)
