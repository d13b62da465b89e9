"""Next-token distributions on fixed text (scorer kind `token_dist`): what KL divergence and
top-1 agreement against the baseline are computed from (orchestrator/report/fidelity.py).

Each document is tokenized once and sent to the engine's own vLLM as a prompt with
`SamplingParams(max_tokens=1, prompt_logprobs=top_k)`: vLLM returns, at every prompt position,
the top-k next-token log-probabilities (and the actual next token's), from the same forward pass
lm-eval's perplexity uses. The per-sample record keeps the top-k ids and log-probabilities per
position; its metric is the mean negative log-likelihood per token of the text itself.

Read from vLLM 0.32: vllm/sampling_params.py (prompt_logprobs), vllm/outputs.py
(RequestOutput.prompt_logprobs: one dict token id -> Logprob per position, None for the first).
"""

from __future__ import annotations

import math
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from quantgrid.types import SampleRecord, TaskSpec


def load_texts(source: dict[str, Any]) -> list[str]:
    """{package, file}: one document per non-empty line of a data file inside an installed
    package (read, never imported), or {path}."""
    if source.get("path"):
        path = Path(source["path"]).expanduser()
    else:
        spec = find_spec(source["package"])
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {source['package']!r} is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / source["file"]
    text = path.read_text(encoding=source.get("encoding", "utf-8"))
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def _positions(prompt_logprobs, ids: list[int], top_k: int) -> tuple[list[list[int]], list[list[float]], list[float]]:
    """(top-k ids, their log-probabilities, log-probability of the actual token) per predicted
    position (every token but the first)."""
    top_ids, top_lp, actual = [], [], []
    for pos in range(1, len(ids)):
        entry = prompt_logprobs[pos]
        ranked = sorted(entry.items(), key=lambda kv: -kv[1].logprob)
        head = [(t, lp.logprob) for t, lp in ranked if lp.rank is None or lp.rank <= top_k][:top_k]
        top_ids.append([int(t) for t, _ in head])
        top_lp.append([float(v) for _, v in head])
        actual.append(float(entry[ids[pos]].logprob))
    return top_ids, top_lp, actual


def evaluate_token_dist(lm, task: TaskSpec, limit_docs: list[int] | None = None) -> dict[str, Any]:
    """Score `task` on a ready lm-eval VLLM object (its `.model` is the vllm.LLM, its
    `.tokenizer` the model's); same return shape as lm_eval_scorer.evaluate_task."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from workers.scoring.lm_eval_scorer import select_subset

    cfg = dict(task.scorer or {})
    t0 = time.perf_counter()
    texts = load_texts(cfg["text"])
    ids_of_docs = limit_docs if limit_docs is not None else select_subset([{} for _ in texts], task.subset)
    ids_of_docs = list(range(len(texts))) if ids_of_docs is None else ids_of_docs
    top_k, max_tokens = int(cfg.get("top_k", 20)), int(cfg.get("max_tokens", 256))
    token_ids = [lm.tokenizer(texts[i], add_special_tokens=True)["input_ids"][:max_tokens] for i in ids_of_docs]
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top_k)
    outs = lm.model.generate([TokensPrompt(prompt_token_ids=ids) for ids in token_ids], params, use_tqdm=False)
    samples, total_nll, total_tokens = [], 0.0, 0
    for doc, ids, out in zip(ids_of_docs, token_ids, outs):
        top_ids, top_lp, actual = _positions(out.prompt_logprobs, ids, top_k)
        nll = -sum(actual)
        total_nll, total_tokens = total_nll + nll, total_tokens + len(actual)
        samples.append(
            SampleRecord(
                doc_id=int(doc),
                target="",
                response="",
                metrics={"token_nll": nll / max(len(actual), 1)},
                extra={"top_ids": top_ids, "top_logprobs": top_lp, "actual_logprob": actual},
            )
        )
    mean = total_nll / max(total_tokens, 1)
    return {
        "metrics": {"token_nll,none": mean, "token_perplexity,none": math.exp(mean)},
        "samples": samples,
        "num_samples": len(samples),
        "seconds": time.perf_counter() - t0,
        "lm_eval_version": "",
        "n_shot": 0,
    }
