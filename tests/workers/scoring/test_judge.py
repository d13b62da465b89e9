"""Arena-Hard as an external scorer: generation through an LM object, pairwise verdicts from an
OpenAI-compatible judge (a real local HTTP server here), Arena-Hard's weighting and rules."""

import pytest
from tests.support.judge_server import SYSTEM, TEMPLATE, FakeJudge, write_arena

from quantgrid.types import TaskSpec
from workers.scoring.judge import JudgeFailed, evaluate_judged, parse_verdict


class EchoLM:
    """The two methods the scorer uses of lm-eval's VLLM object; answers are looked up by prompt."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.contexts: list[str] = []

    def apply_chat_template(self, chat, add_generation_prompt=True):
        assert add_generation_prompt and chat[0]["role"] == "user"
        return "<|user|>" + chat[0]["content"] + "<|assistant|>"

    def generate_until(self, requests):
        out = []
        for r in requests:
            ctx, gen = r.args
            assert gen["max_gen_toks"] == 64 and gen["temperature"] == 0.0
            self.contexts.append(ctx)
            out.append(self.answers[ctx[len("<|user|>") : -len("<|assistant|>")]])
        return out


QUESTIONS = {
    "q1": "Write a haiku.",
    "q2": "Sort a list.",
    "q3": "Explain TCP.",
    "q4": "Name a prime.",
    "q5": "Define entropy.",
    "q6": "Say hi.",
}
BASELINE = {"q1": "plain", "q2": "GOOD answer", "q3": "plain", "q4": "GOOD", "q5": "plain", "q6": "plain"}
MODEL = {
    "Write a haiku.": "GOOD haiku",
    "Sort a list.": "sorted()",
    "Explain TCP.": "GOOD tcp",
    "Name a prime.": "GOOD 7",
    "Define entropy.": "NOVERDICT",
    "Say hi.": "CONFUSED",
}


@pytest.fixture
def judge(monkeypatch):
    j = FakeJudge()
    monkeypatch.setenv("JUDGE_TEST_KEY", "test-key")
    yield j
    j.close()


def _task(tmp_path, judge_url, **judge_cfg):
    q, b = write_arena(tmp_path, QUESTIONS, BASELINE)
    cfg = {
        "base_url": judge_url,
        "model": "judge-x",
        "api_key_env": "JUDGE_TEST_KEY",
        "system_prompt": SYSTEM,
        "prompt_template": TEMPLATE,
        "concurrency": 4,
        "retries": 0,
        **judge_cfg,
    }
    return TaskSpec(
        name="arena_hard",
        metric="score,none",
        apply_chat_template=True,
        scorer={
            "kind": "arena_hard",
            "questions": {"path": str(q)},
            "baseline": {"name": "base", "path": str(b)},
            "judge": cfg,
            "generation": {"max_gen_toks": 64, "temperature": 0},
            "strong_weight": 3,
        },
    )


def test_weighted_win_rate_two_games_per_question(tmp_path, judge):
    lm = EchoLM(MODEL)
    out = evaluate_judged(lm, _task(tmp_path, judge.url))
    # q1, q3: model GOOD vs plain -> strong win in both games (3+3 of 6); q2: strong loss (0 of 6);
    # q4: both GOOD -> tie twice (1 of 2); q5: no label, asked to finish -> tie twice (1 of 2);
    # q6: two different labels -> both games invalid, left out.
    assert out["metrics"]["score,none"] == pytest.approx((6 + 0 + 6 + 1 + 1) / (6 + 6 + 6 + 2 + 2))
    assert out["metrics"]["invalid_games,none"] == 2
    assert out["num_samples"] == 6 and len(lm.contexts) == 6
    recs = {r.extra["question_id"]: r for r in out["samples"]}
    assert recs["q1"].extra["verdicts"] == ["B>>A", "A>>B"]  # game 1: baseline is A; game 2 swapped
    assert recs["q2"].metrics == {"score": 0.0} and recs["q1"].extra["ratio"]["score"] == [6.0, 6.0]
    assert recs["q6"].metrics == {} and recs["q6"].extra["ratio"]["score"] == [0.0, 0.0]
    assert recs["q2"].target == "GOOD answer" and recs["q2"].response == "sorted()"
    # 2 games x 6 questions, plus one follow-up per game of q5
    assert len(judge.requests) == 14 and out["metrics"]["judge_prompt_tokens,none"] == 1400
    follow = [r for r in judge.requests if len(r["messages"]) == 4]
    assert len(follow) == 2 and "final verdict label" in follow[0]["messages"][3]["content"]
    assert all(r["model"] == "judge-x" and r["temperature"] == 0 for r in judge.requests)
    assert set(judge.auth) == {"Bearer test-key"}
    assert "test-key" not in repr(out)  # the key reaches the endpoint only


def test_subset_scores_the_chosen_questions_and_extra_body_reaches_the_judge(tmp_path, judge):
    task = _task(tmp_path, judge.url, extra_body={"structured_outputs": {"regex": r".*\[\[(A>B|B>A)\]\]"}})
    out = evaluate_judged(EchoLM(MODEL), task, limit_docs=[0, 1])
    assert [r.doc_id for r in out["samples"]] == [0, 1]
    assert out["metrics"]["score,none"] == pytest.approx(0.5)
    assert all(r["structured_outputs"]["regex"].endswith("(A>B|B>A)\\]\\]") for r in judge.requests)


def test_rejected_key_fails_the_cell_in_one_line(tmp_path, judge, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "wrong")
    with pytest.raises(JudgeFailed, match=r"judge judge-x at .*AuthenticationError") as e:
        evaluate_judged(EchoLM(MODEL), _task(tmp_path, judge.url))
    assert "\n" not in str(e.value) and e.value.failure_class == "judge_failed"


def test_missing_key_variable_fails_before_generation(tmp_path, judge, monkeypatch):
    monkeypatch.delenv("JUDGE_TEST_KEY")
    lm = EchoLM(MODEL)
    with pytest.raises(JudgeFailed, match="API key variable JUDGE_TEST_KEY is not set"):
        evaluate_judged(lm, _task(tmp_path, judge.url))
    assert lm.contexts == []


def test_unreachable_judge(tmp_path, judge):
    url = judge.url
    judge.close()
    with pytest.raises(JudgeFailed, match="APIConnectionError"):
        evaluate_judged(EchoLM(MODEL), _task(tmp_path, url, timeout_s=5))


def test_baseline_missing_answers(tmp_path, judge):
    task = _task(tmp_path, judge.url)
    b = tmp_path / "baseline.jsonl"
    b.write_text("\n".join(b.read_text().splitlines()[:2]) + "\n")
    with pytest.raises(JudgeFailed, match="baseline answers miss 4 question"):
        evaluate_judged(EchoLM(MODEL), task)


def test_parse_verdict_follows_arena_hard():
    assert parse_verdict("so [[A>B]]") == ("A>B", False)
    assert parse_verdict("[[A>B]] ... [[A>B]]") == ("A>B", False)  # repeated, same label
    assert parse_verdict("[[A>B]] then [[B>A]]") == (None, False)  # contradictory: not asked again
    assert parse_verdict("no label") == (None, True)  # asked to finish


def test_preflight_checks_judge_key_and_endpoint(tmp_path, judge, monkeypatch):
    """Before a run: the key variable set, the endpoint answering and accepting it, each one line."""
    from types import SimpleNamespace

    from orchestrator.config import ConfigError
    from orchestrator.execution.preflight import check_judges

    plan = lambda task: SimpleNamespace(sweep=SimpleNamespace(tasks=[task]))
    check_judges(plan(_task(tmp_path, judge.url)))  # set, up, accepted
    monkeypatch.setenv("JUDGE_TEST_KEY", "wrong")
    with pytest.raises(ConfigError, match=r"rejected the key in JUDGE_TEST_KEY \(HTTP 401\)"):
        check_judges(plan(_task(tmp_path, judge.url)))
    monkeypatch.delenv("JUDGE_TEST_KEY")
    with pytest.raises(ConfigError, match=r"scored by an LLM judge \(judge-x\): set JUDGE_TEST_KEY"):
        check_judges(plan(_task(tmp_path, judge.url)))
    with pytest.raises(ConfigError, match=r"judge endpoint http://127.0.0.1:9/v1 unreachable"):
        check_judges(plan(_task(tmp_path, "http://127.0.0.1:9/v1", api_key_env=None)))


@pytest.mark.parametrize(
    "change, error",
    [
        ({"api_key": "sk-123"}, "never put a key in config"),
        ({"base_url": "api.openai.com"}, "base_url must be an http"),
        ({"model": ""}, "judge.model must name"),
        ({"api_key_env": "not a var"}, "api_key_env must be an environment variable name"),
        ({"concurrency": 0}, "judge.concurrency must be a number >= 1"),
        ({"extra_body": "x"}, "extra_body must be a mapping"),
        ({"system_prompt": None}, "needs prompt_file"),
    ],
)
def test_scorer_config_errors_are_one_line(tmp_path, change, error):
    from orchestrator.config import ConfigError
    from orchestrator.config.tasks import check_scorer

    scorer = _task(tmp_path, "http://127.0.0.1:1/v1").scorer
    scorer["judge"] = {**scorer["judge"], **change}
    with pytest.raises(ConfigError, match=error) as e:
        check_scorer("conf/task/x.yaml", scorer)
    assert "\n" not in str(e.value) and "sk-123" not in str(e.value)


def test_stratified_subset_by_arena_cluster(tmp_path, judge):
    """`subset: {per_group, group_field: cluster}` picks questions per Arena-Hard topic cluster."""
    import dataclasses

    task = dataclasses.replace(_task(tmp_path, judge.url), subset={"per_group": 1, "group_field": "cluster", "seed": 0})
    out = evaluate_judged(EchoLM(MODEL), task)
    assert out["num_samples"] == 1  # write_arena puts every question in cluster "c"
