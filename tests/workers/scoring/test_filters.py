"""lm-eval filters through the score stage and the run store (arith_local, GSM8K's two filters).

lm-eval logs one sample per (document, filter). A scripted LM (a real lm-eval `LM` whose
generations are chosen per document) makes the two filters disagree on known documents, so a
statistic that mixes filters, a doc id that repeats, or a similarity that reads the extracted
number instead of the generation each fails here. The real engine runs the same task in the
tiny sweep (tests/e2e/test_tiny_pipeline.py).
"""

import pytest

from orchestrator.config import ConfigError
from orchestrator.report.paper import load_samples
from orchestrator.store.results import RunStore, read_generations
from quantgrid.types import TaskResult, TaskSpec
from workers.scoring import lm_eval_scorer as score

N_DOCS = 10


def _answer(doc) -> str:
    return doc["answer"].split("#### ")[-1]


# What the scripted model writes for doc i (pattern i % 5), and which filter then scores it right.
PATTERNS = [
    (lambda a: f" So it is {a}.\n#### {a}", True, True),  # both filters find the answer
    (lambda a: f" It is {a}.", False, True),  # no "####": strict misses it
    (lambda a: f" It is {a} apples.", False, True),
    (lambda a: f" #### {int(a) + 1}", False, False),  # wrong under both
    (lambda a: f" #### {a} (not 7)", True, False),  # flexible takes the last number
]


@pytest.fixture(scope="module")
def scored():
    from lm_eval.api.model import LM

    class ScriptedLM(LM):
        def generate_until(self, requests, disable_tqdm=False):
            return [PATTERNS[r.doc_id % len(PATTERNS)][0](_answer(r.doc)) for r in requests]

        def loglikelihood(self, requests, disable_tqdm=False):
            raise AssertionError("arith_local is a generation task")

        loglikelihood_rolling = loglikelihood

    spec = TaskSpec(name="arith_local", metric="exact_match,strict-match", num_fewshot=0)
    return score.evaluate_task(ScriptedLM(), spec, limit_docs=list(range(N_DOCS)))


def test_one_record_per_document_and_filter(scored):
    recs = scored["samples"]
    assert scored["num_samples"] == N_DOCS  # documents, not (document, filter) rows
    assert sorted((r.doc_id, r.filter) for r in recs) == sorted(
        (d, f) for d in range(N_DOCS) for f in ("strict-match", "flexible-extract")
    )


def test_every_statistic_is_per_filter_and_matches_lm_eval(scored):
    for col, filt in ((1, "strict-match"), (2, "flexible-extract")):
        want = [float(PATTERNS[d % len(PATTERNS)][col]) for d in range(N_DOCS)]
        got = {r.doc_id: r.metrics["exact_match"] for r in scored["samples"] if r.filter == filt}
        assert [got[d] for d in range(N_DOCS)] == want
        assert scored["metrics"][f"exact_match,{filt}"] == pytest.approx(sum(want) / N_DOCS)
    assert scored["metrics"]["exact_match,strict-match"] != scored["metrics"]["exact_match,flexible-extract"]


def test_response_is_the_raw_generation_and_filtered_the_answer(scored):
    for r in scored["samples"]:
        assert r.response.startswith(" ") and r.response == PATTERNS[r.doc_id % len(PATTERNS)][0](_answer_of(r))
        if r.filter == "strict-match":
            assert r.filtered == (r.response.split("#### ")[1].split(" ")[0] if "####" in r.response else "[invalid]")
        else:
            assert r.filtered.rstrip(".") in r.response and r.filtered != r.response


def _answer_of(record) -> str:
    return record.target.split("#### ")[-1]


def test_run_store_keeps_filters_apart_for_the_report_and_similarity(scored, tmp_path):
    result = TaskResult(
        cell_key="k",
        model="m",
        format="f",
        task="arith_local",
        metrics=scored["metrics"],
        samples=scored["samples"],
        num_samples=scored["num_samples"],
        seconds=0.0,
        provenance={},
    )
    RunStore(tmp_path).write_files(result)
    path = tmp_path / "samples" / "model=m" / "format=f" / "task=arith_local" / "k.parquet"
    for filt in ("strict-match", "flexible-extract"):
        s = load_samples(path, f"exact_match,{filt}")
        assert sorted(s.doc_ids) == list(range(N_DOCS))
        assert s.values.mean() == pytest.approx(scored["metrics"][f"exact_match,{filt}"])
    with pytest.raises(ConfigError, match="no rows for filter 'none'.*filters: flexible-extract, strict-match"):
        load_samples(path, "exact_match,none")
    texts = read_generations(path)
    assert sorted(texts) == list(range(N_DOCS))
    assert texts == {r.doc_id: r.response for r in scored["samples"]}
