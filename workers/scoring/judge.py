"""Arena-Hard-Auto as an external scorer: answers from the engine, verdicts from an LLM judge.

lm-eval has no Arena-Hard task, so this scorer implements the benchmark's v0.1 protocol itself:
1. the model under test answers every question through the engine's lm-eval LM object (its chat
   template, greedy, `generation.max_gen_toks`);
2. a judge model behind an OpenAI-compatible endpoint (config: `judge.base_url`, `judge.model`,
   the key read from the variable `judge.api_key_env`) compares that answer with a fixed
   baseline's answer in two games, baseline first and then swapped (position bias cancels);
3. each game's verdict label `[[A>>B]]`...`[[B>>A]]` is a weighted battle: a strong preference
   counts `strong_weight` (3) times, a tie half a win. The score is the model's weighted win rate
   against the baseline, which is what Arena-Hard's Bradley-Terry fit reduces to for one model
   against its baseline. A judgment without exactly one label is asked to finish once more
   (`attempts`), then left out, as Arena-Hard does; how many were left out is a metric.

Per question the record keeps the weighted wins and weight (`ratio`), so paired statistics
re-aggregate the pooled rate per bootstrap resample instead of averaging per-question shares.
The judge prompts come from `judge.prompt_file` (Arena-Hard's own judge_config.yaml, pinned by
commit, fetched where the worker runs) or inline `judge.system_prompt` / `judge.prompt_template`.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from quantgrid.failures import FailureClass
from quantgrid.runtime import cache_dir
from quantgrid.types import SampleRecord, TaskSpec

VERDICT = re.compile(r"\[\[([AB<>=]+)\]\]")
# Label -> (model's share won, strong?) for game 1, where the baseline is assistant A.
GAME1 = {"A>>B": (0.0, True), "A>B": (0.0, False), "A=B": (0.5, False), "B>A": (1.0, False), "B>>A": (1.0, True)}
# Game 2 swaps the answers: the model is assistant A.
GAME2 = {"A>>B": (1.0, True), "A>B": (1.0, False), "A=B": (0.5, False), "B>A": (0.0, False), "B>>A": (0.0, True)}
CONTINUE = "continue your judgment and finish by outputting a final verdict label"


class JudgeFailed(RuntimeError):
    """The judge could not score the cell (unreachable, rejected the key, no verdict at all)."""

    failure_class = FailureClass.JUDGE_FAILED.value


# -- data ------------------------------------------------------------------------------------
def _fetch(spec: dict[str, Any], what: str) -> Path:
    """A local `path`, or `file` from the Hub dataset `hub` (@`revision`), staged in the cache."""
    if spec.get("path"):
        p = Path(str(spec["path"])).expanduser()
        if not p.is_file():
            raise JudgeFailed(f"{what}: no file {p}")
        return p
    from workers.hub import download

    repo, rev, file = str(spec["hub"]), str(spec.get("revision") or "main"), str(spec["file"])
    root = cache_dir() / "datasets" / f"{repo.replace('/', '--')}-{rev}"
    if not (root / file).is_file():
        download(repo, rev, root, "dataset", str(spec.get("token_env") or "HF_TOKEN"), allow=[file])
    return root / file


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _text(content: Any) -> str:
    """Arena-Hard's answer files hold either plain strings or {"answer": ...} message contents."""
    return str(content.get("answer", "")) if isinstance(content, dict) else str(content)


def load_questions(path: Path) -> list[dict[str, Any]]:
    """[{id, prompt, cluster, category, ...}] in file order: v0.1's `question_id` + `turns`, or the
    newer `uid` + `prompt`. The other fields stay, so a subset can be stratified by `cluster`."""
    out = []
    for q in _jsonl(path):
        qid = q.get("uid") or q.get("question_id")
        prompt = q.get("prompt") if "prompt" in q else (q.get("turns") or [{}])[0].get("content")
        if qid is None or not prompt:
            raise JudgeFailed(f"{path}: a question without an id or a prompt (keys: {sorted(q)})")
        out.append(
            {**{k: v for k, v in q.items() if isinstance(v, (str, int, float))}, "id": str(qid), "prompt": str(prompt)}
        )
    return out


def load_answers(path: Path) -> dict[str, str]:
    """{question id: answer}: `choices[0].turns[0].content` (v0.1) or the last message's content."""
    out = {}
    for a in _jsonl(path):
        qid = str(a.get("uid") or a.get("question_id"))
        if "messages" in a:
            out[qid] = _text(a["messages"][-1]["content"])
        else:
            out[qid] = _text(a["choices"][0]["turns"][0]["content"])
    return out


def load_prompts(judge: dict[str, Any]) -> tuple[str, str]:
    """(system prompt, user template) from Arena-Hard's judge_config.yaml or inline config."""
    if judge.get("prompt_file"):
        src = str(judge["prompt_file"])
        try:
            if src.startswith(("http://", "https://")):
                with urllib.request.urlopen(src, timeout=30) as r:
                    text = r.read().decode()
            else:
                text = Path(src).expanduser().read_text()
            cfg = yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as exc:
            raise JudgeFailed(
                f"judge.prompt_file {src}: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
            ) from None
    else:
        cfg = {}
    system = judge.get("system_prompt") or cfg.get("system_prompt")
    template = judge.get("prompt_template") or cfg.get("prompt_template")
    if isinstance(template, list):  # v0.1 keeps one template per turn
        template = template[0]
    if not system or not template:
        raise JudgeFailed("the judge needs a system prompt and a prompt template (judge.prompt_file or inline)")
    return str(system), str(template)


def render(template: str, question: str, answer_a: str, answer_b: str) -> str:
    # Both placeholder spellings Arena-Hard has used (v0.1 and later configs).
    return template.format(
        question_1=question,
        answer_1=answer_a,
        answer_2=answer_b,
        QUESTION=question,
        ANSWER_A=answer_a,
        ANSWER_B=answer_b,
    )


def parse_verdict(judgment: str) -> tuple[str | None, bool]:
    """(label, ask again?): exactly one distinct label counts; none -> ask the judge to finish;
    several different ones -> invalid, not asked again (Arena-Hard's rule)."""
    labels = {m for m in VERDICT.findall(judgment) if m}
    if len(labels) == 1:
        return labels.pop(), False
    return None, not labels


# -- judge -----------------------------------------------------------------------------------
class Judge:
    """One OpenAI-compatible chat endpoint; the openai client retries 429/5xx with backoff."""

    def __init__(self, cfg: dict[str, Any]):
        from openai import OpenAI

        var = cfg.get("api_key_env")
        key = os.environ.get(str(var)) if var else None
        if var and not key:
            raise JudgeFailed(f"the judge's API key variable {var} is not set where the worker runs")
        self.model = str(cfg["model"])
        self.temperature = float(cfg.get("temperature", 0.0))
        self.max_tokens = int(cfg.get("max_tokens", 4096))
        self.attempts = int(cfg.get("attempts", 2))
        self.client = OpenAI(
            base_url=str(cfg["base_url"]),
            api_key=key or "EMPTY",
            timeout=float(cfg.get("timeout_s", 600)),
            max_retries=int(cfg.get("retries", 5)),
        )
        # Passed through as is: e.g. vLLM's {structured_outputs: {regex: ...}} so a small local
        # judge always ends with a verdict label (OpenAI's API takes no such field).
        self.extra_body = dict(cfg.get("extra_body") or {}) or None
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0}

    def judge(self, system: str, user: str) -> tuple[str | None, str]:
        """(verdict label or None, the judge's full text)."""
        import openai

        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        text = ""
        for _ in range(self.attempts):
            try:
                r = self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                    extra_body=self.extra_body,
                )
            except openai.APIError as exc:  # after the client's own retries
                raise JudgeFailed(
                    f"judge {self.model} at {self.client.base_url}: {type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:200]}"
                ) from None
            self.usage["requests"] += 1
            if r.usage:
                self.usage["prompt_tokens"] += r.usage.prompt_tokens or 0
                self.usage["completion_tokens"] += r.usage.completion_tokens or 0
            reply = r.choices[0].message.content or ""
            text += reply
            label, again = parse_verdict(reply)
            if label or not again:
                return label, text
            messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": CONTINUE}]
        return None, text


def _bootstrap_stderr(wins: list[float], weights: list[float], iters: int = 1000, seed: int = 0) -> float:
    import numpy as np

    w, n = np.asarray(wins), np.asarray(weights)
    if len(w) < 2:
        return float("nan")
    idx = np.random.default_rng(seed).integers(0, len(w), (iters, len(w)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanstd(w[idx].sum(1) / n[idx].sum(1), ddof=1))


# -- the scorer ------------------------------------------------------------------------------
def evaluate_judged(lm, task: TaskSpec, limit_docs: list[int] | None = None) -> dict[str, Any]:
    """Score `task` (scorer kind `arena_hard`) on a ready lm-eval LM object; same return shape
    as workers.scoring.lm_eval_scorer.evaluate_task."""
    from lm_eval.api.instance import Instance

    from workers.scoring.lm_eval_scorer import select_subset

    cfg = dict(task.scorer or {})
    t0 = time.perf_counter()
    questions = load_questions(_fetch(cfg["questions"], "questions"))
    baseline = load_answers(_fetch(cfg["baseline"], f"baseline {cfg['baseline'].get('name', '')} answers"))
    missing = [q["id"] for q in questions if q["id"] not in baseline]
    if missing:
        raise JudgeFailed(f"the baseline answers miss {len(missing)} question(s), e.g. {missing[:3]}")
    system, template = load_prompts(cfg["judge"])
    judge = Judge(cfg["judge"])  # fails on a missing key before any generation
    ids = limit_docs if limit_docs is not None else select_subset(questions, task.subset)
    ids = list(range(len(questions))) if ids is None else ids

    gen = dict(cfg.get("generation") or {})
    gen_kwargs = {
        "until": [],
        "max_gen_toks": int(gen.get("max_gen_toks", 4096)),
        "temperature": float(gen.get("temperature", 0.0)),
        "do_sample": bool(gen.get("temperature", 0.0)),
    }
    requests = [
        Instance(
            request_type="generate_until",
            doc=questions[i],
            idx=0,
            arguments=(lm.apply_chat_template([{"role": "user", "content": questions[i]["prompt"]}]), dict(gen_kwargs)),
        )
        for i in ids
    ]
    t_gen = time.perf_counter()
    answers = lm.generate_until(requests)
    t_gen = time.perf_counter() - t_gen

    strong = float(cfg.get("strong_weight", 3))

    def games(i: int, answer: str) -> list[tuple[str | None, str]]:
        q, base = questions[i]["prompt"], baseline[questions[i]["id"]]
        return [
            judge.judge(system, render(template, q, base, answer)),  # game 1: baseline is A
            judge.judge(system, render(template, q, answer, base)),
        ]  # game 2: swapped

    with ThreadPoolExecutor(max_workers=int(cfg["judge"].get("concurrency", 8))) as pool:
        judged = list(pool.map(games, ids, answers))

    records: list[SampleRecord] = []
    wins, weights, invalid = [], [], 0
    for i, answer, verdicts in zip(ids, answers, judged):
        won = weight = 0.0
        labels = []
        for table, (label, _) in zip((GAME1, GAME2), verdicts):
            labels.append(label)
            if label not in table:
                invalid += 1
                continue
            share, is_strong = table[label]
            w = strong if is_strong and share != 0.5 else 1.0
            won, weight = won + share * w, weight + w
        if weight:
            wins.append(won)
            weights.append(weight)
        records.append(
            SampleRecord(
                doc_id=i,
                target=baseline[questions[i]["id"]],
                response=answer,
                metrics={"score": won / weight} if weight else {},
                extra={
                    "ratio": {"score": [won, weight]},
                    "question_id": questions[i]["id"],
                    "verdicts": labels,
                    "judgments": [text for _, text in verdicts],
                },
            )
        )
    if not weights:
        raise JudgeFailed(
            f"judge {judge.model} gave no valid verdict in {2 * len(ids)} games ({judge.usage['requests']} "
            f"requests, {judge.usage['completion_tokens']} tokens of replies without a single [[A>B]]-style "
            "label): check judge.model and its prompts, or constrain it (judge.extra_body)"
        )
    metrics = {
        "score,none": sum(wins) / sum(weights),
        "score_stderr,none": _bootstrap_stderr(wins, weights),
        "invalid_games,none": float(invalid),
        "judge_prompt_tokens,none": float(judge.usage["prompt_tokens"]),
        "judge_completion_tokens,none": float(judge.usage["completion_tokens"]),
        "generation_seconds,none": t_gen,
    }
    return {
        "metrics": metrics,
        "samples": records,
        "num_samples": len(records),
        "seconds": time.perf_counter() - t0,
        "lm_eval_version": None,
        "n_shot": 0,
    }
