"""KL and top-1 agreement from top-k next-token distributions (orchestrator/report/fidelity.py),
against values computed by hand and against the full KL of distributions we build."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.report.fidelity import compare, document, position_kl, to_markdown


def test_identical_distributions_have_zero_kl_and_agree():
    ids, lp = [5, 7, 9], list(np.log([0.5, 0.3, 0.1]))
    kl, rest, top1 = position_kl(ids, lp, ids, lp)
    assert kl == pytest.approx(0.0, abs=1e-12) and rest == pytest.approx(0.1) and top1


def test_kl_is_exact_when_both_top_k_sets_hold_every_token():
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.5, 0.3, 0.2])
    kl, rest, top1 = position_kl([1, 2, 3], list(np.log(p)), [1, 2, 3], list(np.log(q)))
    assert kl == pytest.approx(float(np.sum(p * np.log(p / q)))) and rest == pytest.approx(0.0, abs=1e-12) and top1


def test_with_unseen_tokens_it_is_a_lower_bound_on_the_full_kl():
    """Full distributions over 50 tokens, each side's top 5 kept: the coarsened KL never exceeds
    the true one (log-sum inequality), and the outside mass is what the baseline put elsewhere."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.dirichlet(np.full(50, 0.3))
        q = rng.dirichlet(np.full(50, 0.3))
        full = float(np.sum(p * np.log(p / q)))
        ip, iq = np.argsort(-p)[:5], np.argsort(-q)[:5]
        kl, rest, top1 = position_kl(list(ip), list(np.log(p[ip])), list(iq), list(np.log(q[iq])))
        shared = set(ip) & set(iq)
        assert 0 <= kl <= full + 1e-9
        assert rest == pytest.approx(1 - sum(p[i] for i in shared))
        assert top1 == (ip[0] == iq[0])


def test_top1_disagreement_and_per_document_means():
    a = {"top_ids": [[1, 2], [3, 4]], "top_logprobs": [list(np.log([0.6, 0.4])), list(np.log([0.9, 0.1]))]}
    b = {"top_ids": [[2, 1], [3, 4]], "top_logprobs": [list(np.log([0.6, 0.4])), list(np.log([0.9, 0.1]))]}
    kl, top1, rest = document(a, b)
    k0 = 0.6 * math.log(0.6 / 0.4) + 0.4 * math.log(0.4 / 0.6)
    assert kl == pytest.approx(k0 / 2) and top1 == 0.5 and rest == pytest.approx(0.0, abs=1e-12)


def _samples(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"doc_id": list(docs), "extra": [json.dumps(e) for e in docs.values()]}).to_parquet(path)


def test_compare_pairs_documents_and_gives_bootstrap_intervals(tmp_path):
    same = {"top_ids": [[1, 2]] * 3, "top_logprobs": [list(np.log([0.8, 0.2]))] * 3}
    off = {"top_ids": [[2, 1]] * 3, "top_logprobs": [list(np.log([0.8, 0.2]))] * 3}
    _samples(tmp_path / "base.parquet", {i: same for i in range(10)})
    _samples(tmp_path / "fmt.parquet", {i: (off if i < 5 else same) for i in range(12)})  # 2 unpaired
    r = compare(tmp_path / "base.parquet", tmp_path / "fmt.parquet", resamples=500)
    assert r["n"] == 10 and r["top1"] == pytest.approx(0.5)
    assert r["top1_ci"][0] < 0.5 < r["top1_ci"][1] and r["kl_ci"][0] <= r["kl"] <= r["kl_ci"][1]
    md = to_markdown([{"model": "m", "format": "fp8", "task": "t", **r}], "bf16", "bf16_rerun")
    assert "| m | t | fp8 | 10 |" in md and "50.0%" in md and "bf16_rerun is the baseline rerun" in md
