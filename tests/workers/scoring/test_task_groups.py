"""lm-eval groups through the score stage (the paper's leaderboard_bbh, mmlu_llama, ... are
groups): every subtask's documents, ids unique and stable across formats, the group's aggregate.
lm-eval's own DummyLM stands in for the engine: this is about the plumbing, not the scores."""

import pytest

from quantgrid.runtime import TASKS_DIR
from quantgrid.types import TaskSpec
from workers.scoring import lm_eval_scorer as score


@pytest.fixture
def group_tasks(tmp_path, monkeypatch):
    (tmp_path / "qg_mmlu_b.yaml").write_text(
        f"include: {TASKS_DIR / 'mmlu_local' / 'mmlu_local.yaml'}\ntask: qg_mmlu_b\n"
    )
    (tmp_path / "qg_group.yaml").write_text(
        "group: qg_group\ntask: [mmlu_local, qg_mmlu_b]\n"
        "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\nmetadata:\n  version: 1.0\n"
    )
    (tmp_path / "qg_group_noagg.yaml").write_text("group: qg_group_noagg\ntask: [mmlu_local, qg_mmlu_b]\n")
    from lm_eval.tasks import TaskManager

    monkeypatch.setitem(
        score._TASK_MANAGERS, False, TaskManager(include_path=[str(TASKS_DIR), str(tmp_path)], include_defaults=False)
    )


@pytest.mark.parametrize("name", ["qg_group", "qg_group_noagg"])
def test_group_scored_with_every_subtask_and_unique_doc_ids(group_tasks, name):
    from lm_eval.models.dummy import DummyLM

    spec = TaskSpec(name=name, metric="acc,none", subset={"size": 5, "seed": 0})
    out = score.evaluate_task(DummyLM(), spec)
    recs = out["samples"]
    assert out["num_samples"] == len(recs) == 10
    assert {r.extra["subtask"] for r in recs} == {"mmlu_local", "qg_mmlu_b"}
    ids = [r.doc_id for r in recs]
    assert len(set(ids)) == 10  # the same question in both subtasks gets two ids
    b = sorted(r.doc_id - score.GROUP_DOC_STRIDE for r in recs if r.extra["subtask"] == "qg_mmlu_b")
    a = sorted(r.doc_id for r in recs if r.extra["subtask"] == "mmlu_local")
    assert a == b  # same subset in each subtask, offset by the stride (sorted subtask order)
    mean = sum(r.metrics["acc"] for r in recs) / len(recs)
    assert out["metrics"]["acc,none"] == pytest.approx(mean)  # lm-eval's aggregate, or ours when it has none


def test_a_batch_of_group_doc_ids_scores_only_those_documents(group_tasks):
    """An adaptive cell's batch (orchestrator/execution/adaptive.py) names documents by the ids this
    function returns: each goes to its own subtask, a subtask with none in the batch is not scored
    (lm-eval would score all of it), and the ids come back unchanged."""
    from lm_eval.models.dummy import DummyLM

    spec = TaskSpec(name="qg_group", metric="acc,none", subset={"size": 5, "seed": 0})
    full = sorted(r.doc_id for r in score.evaluate_task(DummyLM(), spec)["samples"])
    b_only = [d for d in full if d >= score.GROUP_DOC_STRIDE][:2]
    for batch in (full[:1] + b_only, b_only):
        out = score.evaluate_task(DummyLM(), spec, batch)
        assert sorted(r.doc_id for r in out["samples"]) == sorted(batch)
        assert {r.extra["subtask"] for r in out["samples"]} == (
            {"mmlu_local", "qg_mmlu_b"} if full[0] in batch else {"qg_mmlu_b"}
        )
