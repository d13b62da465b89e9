"""Who scores a task: one table, read by both sides (lm-eval's registry style, lazy "module:obj").

The driver validates `scorer.kind` against its keys without importing a scorer (it stays
torch-free); a worker resolves the entry when it scores. A new external scorer is a row here
and a module under workers/, not another branch.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

# kind -> "module:function". lm_eval: simple_evaluate on the engine's LM object (the default);
# arena_hard: Arena-Hard-Auto v0.1 with an LLM judge (lm-eval has no such task).
SCORERS: dict[str, str] = {
    "lm_eval": "workers.scoring.lm_eval_scorer:evaluate_task",
    "arena_hard": "workers.scoring.judge:evaluate_judged",
    # token_dist: next-token top-k distributions on fixed text (vLLM prompt logprobs), from which
    # the report computes KL divergence and top-1 agreement against the baseline.
    "token_dist": "workers.scoring.token_dist:evaluate_token_dist",
}
# What an external scorer's records hold, as lm-eval's output_type names it (output similarity
# compares generated text only).
SCORER_OUTPUT: dict[str, str] = {"arena_hard": "generate_until", "token_dist": "token_distribution"}


class Scorer(Protocol):
    """Scores one task on a ready lm-eval LM object (the engine's): returns {metrics, samples,
    num_samples, seconds, lm_eval_version, n_shot}."""

    def __call__(self, lm: Any, task: Any, limit_docs: list[int] | None = None) -> dict[str, Any]: ...


def scorer_for(kind: str) -> Scorer:
    module, _, name = SCORERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)
