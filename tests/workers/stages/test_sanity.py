"""The post-quantize sanity gate (workers/stages/sanity.py): its figures against hand-computed
ones, its one-line failure, and on the real stack (SmolLM2-135M, llmcompressor) a destroyed
recipe failing `quantization_broken` while FP8 passes, built or reused from the cache."""

import json
import math
from pathlib import Path

import pytest
import torch

from quantgrid.failures import FailureClass, Recovery, StageFailure
from quantgrid.settings import Sanity
from quantgrid.types import FormatSpec, ModelSpec
from workers.stages import sanity as sn

# Data-free round-to-nearest: 3-bit weights, one scale per output channel. On SmolLM2-135M the
# probe measures mean KL 6.6 nats/token and perplexity x762 (16.4 -> 12,500): destroyed.
W3_CHANNEL = {
    "quant_stage": {
        "quant_modifiers": {
            "QuantizationModifier": {
                "ignore": ["lm_head"],
                "config_groups": {
                    "group_0": {
                        "targets": ["Linear"],
                        "weights": {"num_bits": 3, "type": "int", "symmetric": True, "strategy": "channel"},
                    }
                },
            }
        }
    }
}


def _logp(rows):
    return torch.log(torch.tensor(rows, dtype=torch.float32))


def test_divergence_is_the_hand_computed_kl_and_perplexity():
    # one document: prefix + tokens [1, 0]; vocabulary of 2
    ids = [[0, 1, 0]]
    base = [_logp([[0.5, 0.5], [0.9, 0.1]])]
    quant = [_logp([[0.25, 0.75], [0.9, 0.1]])]
    out = sn.divergence(base, quant, ids)
    # KL at position 0: 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3); position 1: 0
    assert out["kl_mean"] == pytest.approx(0.5 * math.log(4 / 3) / 2, rel=1e-6)
    assert out["tokens"] == 2
    # perplexities over the targets 1 then 0
    assert out["ppl_base"] == pytest.approx(math.exp(-(math.log(0.5) + math.log(0.9)) / 2), rel=1e-6)
    assert out["ppl_quant"] == pytest.approx(math.exp(-(math.log(0.75) + math.log(0.9)) / 2), rel=1e-6)
    assert out["ppl_ratio"] == pytest.approx(math.sqrt(0.5 / 0.75), rel=1e-6)
    # identical distributions: nothing moved
    same = sn.divergence(base, base, ids)
    assert same["kl_mean"] == 0 and same["ppl_ratio"] == 1


def test_divergence_matches_torch_kl_div_over_documents_of_unequal_length():
    g = torch.Generator().manual_seed(0)
    ids = [[0, *torch.randint(0, 50, (n,), generator=g).tolist()] for n in (7, 3)]
    base = [torch.log_softmax(torch.randn(len(d) - 1, 50, generator=g) * 3, -1) for d in ids]
    quant = [torch.log_softmax(b + torch.randn(b.shape, generator=g), -1) for b in base]
    out = sn.divergence(base, quant, ids)
    ref = sum(torch.nn.functional.kl_div(q, b, log_target=True, reduction="sum") for b, q in zip(base, quant)) / 10
    assert out["tokens"] == 10 and out["kl_mean"] == pytest.approx(float(ref), rel=1e-5)


def test_zero_probabilities_neither_nan_nor_hidden():
    ids = [[0, 0]]
    half, certain0, certain1 = _logp([[0.5, 0.5]]), _logp([[1.0, 0.0]]), _logp([[0.0, 1.0]])
    # the base rules token 1 out: 0 log 0 = 0, so KL = 1 * ln(1 / 0.5)
    assert sn.divergence([certain0], [half], ids)["kl_mean"] == pytest.approx(math.log(2))
    # the quantized model rules out the token the base predicts: infinite, hence past any limit
    out = sn.divergence([half], [certain1], ids)
    assert out["kl_mean"] == math.inf and out["ppl_ratio"] == math.inf


def _model_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    return tmp_path


def _figures(kl, ratio):
    return {
        "kl_mean": kl,
        "ppl_ratio": ratio,
        "ppl_base": 16.4,
        "ppl_quant": 16.4 * ratio,
        "documents": 4,
        "tokens": 1024,
    }


@pytest.mark.parametrize(
    "kl,ratio,needles",
    [
        (1.5, 1.2, ["mean KL 1.5 nats/token > 1"]),
        (0.3, 2.5, ["perplexity x2.5 (16.4 -> 41) > x2"]),
        (float("nan"), float("nan"), ["mean KL nan", "perplexity xnan"]),  # NaN logits are broken
    ],
)
def test_the_gate_fails_in_one_line_naming_architecture_and_recipe(tmp_path, kl, ratio, needles):
    fmt = FormatSpec(name="w3", label="W3-RTN", recipe=W3_CHANNEL)
    with pytest.raises(StageFailure) as e:
        sn.gate(_figures(kl, ratio), Sanity(), _model_dir(tmp_path), ModelSpec(name="m", source={}), fmt)
    msg = str(e.value)
    assert e.value.failure_class == "quantization_broken" and "\n" not in msg
    assert FailureClass(e.value.failure_class).recovery is Recovery.FAIL  # never retried
    assert msg.startswith("m/w3: quantization broken: LlamaForCausalLM quantized with W3-RTN ")
    assert "[QuantizationModifier(W3 int channel, ignore lm_head)]" in msg
    assert all(n in msg for n in needles), msg


def test_the_driver_takes_the_class_as_raised_and_never_retries_it(tmp_path):
    from orchestrator.execution.failures import classify, recovery_of

    fmt = FormatSpec(name="w3", label="W3-RTN", recipe=W3_CHANNEL)
    with pytest.raises(StageFailure) as e:
        sn.gate(_figures(7.0, 700.0), Sanity(), _model_dir(tmp_path), ModelSpec(name="m", source={}), fmt)
    cls, msg = classify(e.value)
    assert (cls, msg) == ("quantization_broken", str(e.value)) and recovery_of(cls) is Recovery.FAIL


def test_the_gate_passes_within_the_limits(tmp_path):
    fmt = FormatSpec(name="w3", label="W3-RTN", recipe=W3_CHANNEL)
    sn.gate(_figures(0.99, 1.99), Sanity(), _model_dir(tmp_path), ModelSpec(name="m", source={}), fmt)


def test_recipe_summaries_of_the_shipped_formats():
    from orchestrator.config import compose, load_sweep

    fmts = load_sweep(compose(["sweep=demo", "sweep.budget=null"])).formats["smollm2-135m"]
    assert sn.recipe_summary(fmts["fp8"].recipe) == "QuantizationModifier(FP8_DYNAMIC, ignore lm_head)"
    assert (
        sn.recipe_summary(fmts["int8"].recipe)
        == "SmoothQuantModifier(strength 0.8) + GPTQModifier(W8A8, ignore lm_head)"
    )
    assert sn.recipe_summary(fmts["w4a16"].recipe) == "GPTQModifier(W4 int group/64, ignore lm_head)"


def test_enough_held_out_documents_of_the_default_length(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama.path)
    ids = sn.held_out_ids(tok, Sanity.MAX_DOCUMENTS, Sanity().max_tokens)
    assert len(ids) == Sanity.MAX_DOCUMENTS <= len(sn.DOCUMENTS)
    assert all(len(d) == 1 + Sanity().max_tokens and d[0] == tok.bos_token_id for d in ids)


# -- the real stack ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    from orchestrator.config import load_model
    from workers.stages.assets import build_model

    spec = load_model("smollm2-135m")
    return spec, build_model(spec)


def test_a_destroyed_recipe_fails_before_evaluation_and_fp8_passes(smollm2, tmp_path):
    from orchestrator.config import compose, load_sweep
    from workers.stages.quantize import quantize

    spec, base = smollm2
    fp8 = load_sweep(compose(["sweep=demo", "sweep.formats=[fp8]", "sweep.budget=null"])).formats[spec.name]["fp8"]
    art = quantize(base, spec, fp8, None, root=tmp_path)
    s = art.sanity
    print(f"fp8: {s}")
    assert s["kl_mean"] < 0.1 and s["ppl_ratio"] < 1.1 and s["tokens"] == 4 * 256
    assert not s.get("loaded") and (Path(art.path) / sn.SANITY_FILE).is_file()  # in the checkpoint

    broken = FormatSpec(name="w3_rtn", label="W3 per-channel RTN", recipe=W3_CHANNEL)
    with pytest.raises(StageFailure) as e:
        quantize(base, spec, broken, None, root=tmp_path)
    print(e.value)
    assert e.value.failure_class == "quantization_broken"
    assert "smollm2-135m/w3_rtn: quantization broken: LlamaForCausalLM quantized with W3 per-channel RTN" in str(
        e.value
    )
    # The broken checkpoint stays published: a rerun reuses it and fails on its stored figures.
    (ckpt,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith("smollm2-135m-w3_rtn-")]
    stored = json.loads((ckpt / sn.SANITY_FILE).read_text())
    assert stored["kl_mean"] > 3 and stored["ppl_ratio"] > 10
    with pytest.raises(StageFailure, match="quantization broken"):
        quantize(base, spec, broken, None, root=tmp_path)
    # With the gate off the same checkpoint is a data point again (what the issue saw).
    assert quantize(base, spec, broken, None, root=tmp_path, sanity=Sanity.of(False)).sanity is None


def test_an_older_cache_entry_is_probed_from_disk(smollm2, tmp_path):
    """Built without the probe (as before the gate): reused, it is probed by loading both
    checkpoints, with the figures the in-memory probe gives, kept beside it."""
    from orchestrator.config import compose, load_sweep
    from workers.stages.quantize import quantize

    spec, base = smollm2
    probe = Sanity(documents=2, max_tokens=64)  # a shorter probe: FP8 runs emulated on a CPU, slowly
    fp8 = load_sweep(compose(["sweep=demo", "sweep.formats=[fp8]", "sweep.budget=null"])).formats[spec.name]["fp8"]
    old = quantize(base, spec, fp8, None, root=tmp_path / "a", sanity=Sanity(enabled=False))
    assert old.sanity is None and not (Path(old.path) / sn.SANITY_FILE).exists()
    art = quantize(base, spec, fp8, None, root=tmp_path / "a", sanity=probe)
    assert art.reused and art.sanity["loaded"] and art.sanity["tokens"] == 2 * 64
    assert sn.stored_result(art.path, Sanity(), art.content_hash) is None  # other settings: probed again
    assert sn.stored_result(art.path, probe, art.content_hash)["kl_mean"] == art.sanity["kl_mean"]
    fresh = quantize(base, spec, fp8, None, root=tmp_path / "b", sanity=probe).sanity  # in memory, right after oneshot
    assert art.sanity["kl_mean"] == pytest.approx(fresh["kl_mean"], rel=1e-3)
    assert art.sanity["ppl_ratio"] == pytest.approx(fresh["ppl_ratio"], rel=1e-4)
