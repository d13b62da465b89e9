"""The similarity stage's measures on known pairs: ROUGE-1/L from rouge-score, MiniLM cosine."""

import math

import pytest

from quantgrid.runtime import encoder_path
from quantgrid.types import SampleRecord
from workers.stages.similarity import OutputSimilarity, aggregate


@pytest.fixture(scope="module")
def sim():
    return OutputSimilarity("all-minilm-l6-v2")


def test_known_rouge_values_and_identical_outputs(sim):
    metrics, recs = sim.compare(
        [
            (3, "the cat sat on the mat", "the cat sat on the mat"),
            (1, "the cat sat on the mat", "the cat sat"),  # unigram P=1, R=1/2 -> F1=2/3; LCS the same
            (2, "", ""),  # both empty: identical, not "0 overlap"
        ]
    )
    by_doc = {r.doc_id: r.metrics for r in recs}
    assert by_doc[3] == {"rouge1": 1.0, "rougeL": 1.0, "semantic": 1.0, "identical": 1.0}
    assert by_doc[1]["rouge1"] == pytest.approx(2 / 3) and by_doc[1]["rougeL"] == pytest.approx(2 / 3)
    assert by_doc[1]["identical"] == 0.0 and 0.5 < by_doc[1]["semantic"] < 1.0
    assert by_doc[2]["identical"] == 1.0
    assert metrics["rouge1,none"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert metrics["identical,none"] == pytest.approx(2 / 3)
    assert recs[1].target == "the cat sat on the mat" and recs[1].response == "the cat sat"


def test_semantic_similarity_ranks_paraphrase_above_unrelated(sim):
    _, recs = sim.compare(
        [
            (0, "The capital of France is Paris.", "Paris is the capital city of France."),
            (1, "The capital of France is Paris.", "def add(a, b):\n    return a + b"),
        ]
    )
    para, unrelated = recs[0].metrics, recs[1].metrics
    assert para["semantic"] > 0.8 > 0.3 > unrelated["semantic"]
    assert para["rouge1"] > unrelated["rouge1"] == 0.0


def test_aggregate_mean_stderr_median():
    recs = [
        SampleRecord(i, "", "", {"rouge1": v, "rougeL": v, "semantic": v, "identical": 0.0})
        for i, v in enumerate([0.2, 0.4, 0.9])
    ]
    m = aggregate(recs)
    assert m["rouge1,none"] == pytest.approx(0.5) and m["rouge1_median,none"] == pytest.approx(0.4)
    assert m["rouge1_stderr,none"] == pytest.approx(math.sqrt(((0.3**2 + 0.1**2 + 0.4**2) / 2) / 3))


def test_no_pairs_and_unknown_encoder_are_errors(sim):
    with pytest.raises(ValueError, match="no generated outputs"):
        sim.compare([])
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        encoder_path("/nonexistent/encoder")
    assert (encoder_path("all-minilm-l6-v2") / "modules.json").is_file()
