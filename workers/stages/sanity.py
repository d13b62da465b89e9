"""The post-quantize sanity probe: a checkpoint compared with its base model before any
evaluation is spent on it (`sweep.sanity`, quantgrid/settings.py Sanity).

On `documents` held-out documents (workers/stages/sanity_text.py: in no calibration set, in no
task), each truncated to `max_tokens` tokens after a BOS prefix, both models' next-token
distributions are compared at every position:

- kl_mean: mean over positions of KL(base || quantized), in nats, EXACT over the full vocabulary
  (log-softmax of the full logits; a few hundred positions x the vocabulary is affordable here,
  unlike the top-k approximation nexttoken_local has to make through vLLM's logprobs);
- ppl_ratio: perplexity of the quantized model over the base model's on the same tokens.

Cost (SmolLM2-135M, 4 x 256 tokens, one thread of an AVX-512 EPYC shared with a running sweep):
a pass of the base model 0.5-1.3 s, of the quantized one 3-5 s (compressed-tensors' fake
quantization runs in eager torch: FP8 slowest); the base log-probs held meanwhile are
documents x max_tokens x vocabulary floats (200 MB here, 525 MB at Llama 3's 128k vocabulary).
The probe runs where the model is: before `oneshot` the model is loaded on the CPU, so on a GPU
quantize host the base pass is a CPU pass (minutes for a 70B model, short of GPTQ's hours); the
quantized pass runs wherever `oneshot` leaves the model (not yet measured on a GPU host).
The quantize stage (workers/stages/quantize.py) runs it in its own actor: the base model's
log-probs before `oneshot`, the quantized model's right after, on the same in-memory model
(which then computes with its quantized weights and activations: measured identical to the
saved checkpoint loaded back through compressed-tensors, KL 0.0 between the two for FP8,
W8A8-INT8 and W4A16). The figures are stored in the checkpoint (SANITY_FILE), so a checkpoint reused from
the cache is gated on them again; one without them (an older cache entry, other probe settings)
is probed by loading both checkpoints (`probe_checkpoints`), its figures kept beside it.

torch / transformers are imported inside the functions: the driver never imports this module.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

from quantgrid.failures import FailureClass, StageFailure
from quantgrid.settings import Sanity
from quantgrid.types import FormatSpec, ModelSpec
from workers.stages.sanity_text import DOCUMENTS

SANITY_FILE = "quantgrid_sanity.json"


def documents_hash(documents: int) -> str:
    """Identifies the probe's text: figures measured on other documents are not re-read."""
    return hashlib.sha256("\x00".join(DOCUMENTS[:documents]).encode()).hexdigest()[:16]


def held_out_ids(tokenizer: Any, documents: int, max_tokens: int) -> list[list[int]]:
    """Token ids of the first `documents` held-out documents: a BOS prefix (EOS where the
    tokenizer has none, as lm-eval's rolling loglikelihood does) then at most `max_tokens` tokens,
    so every document token is predicted."""
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    out = []
    for text in DOCUMENTS[:documents]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        out.append(([prefix] if prefix is not None else []) + list(ids))
    return out


def next_token_logprobs(model: Any, ids: list[list[int]]) -> list[Any]:
    """Per document, the float32 log-softmax over the full vocabulary at every position that
    predicts a document token ([len - 1, vocab], on the CPU). One document per forward pass:
    no padding, so no attention mask to get wrong."""
    import torch

    device = model.get_input_embeddings().weight.device
    if device.type == "meta":  # offloaded (llmcompressor's sequential onloading): inputs start on the CPU
        device = torch.device("cpu")
    out = []
    with torch.inference_mode():
        for doc in ids:
            logits = model(torch.tensor([doc], device=device)).logits[0, :-1]
            out.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    return out


def divergence(base: list[Any], quant: list[Any], ids: list[list[int]]) -> dict[str, Any]:
    """kl_mean (nats per predicted token, KL(base || quant)), ppl_base, ppl_quant, ppl_ratio
    and tokens, from both models' log-probs at the same positions."""
    import torch

    kl = nll_b = nll_q = 0.0
    tokens = 0
    for lb, lq, doc in zip(base, quant, ids, strict=True):
        target = torch.tensor(doc[1:])[:, None]
        p = lb.exp()
        # 0 * log 0 = 0: a token the base model rules out contributes nothing
        kl += float(torch.where(p > 0, p * (lb - lq), torch.zeros_like(p)).sum())
        nll_b -= float(lb.gather(1, target).sum())
        nll_q -= float(lq.gather(1, target).sum())
        tokens += len(doc) - 1
    if tokens == 0:
        raise ValueError("sanity probe: no token to predict")

    def exp(x: float) -> float:
        try:
            return math.exp(x)
        except OverflowError:
            return math.inf

    return {
        "kl_mean": kl / tokens,
        "ppl_base": exp(nll_b / tokens),
        "ppl_quant": exp(nll_q / tokens),
        "ppl_ratio": exp((nll_q - nll_b) / tokens),
        "tokens": tokens,
    }


class Probe:
    """The base model's log-probs, kept to compare the same model after quantization with."""

    def __init__(self, tokenizer: Any, sanity: Sanity):
        self.sanity = sanity
        self.ids = held_out_ids(tokenizer, sanity.documents, sanity.max_tokens)
        self.base: list[Any] | None = None
        self.seconds = 0.0

    def baseline(self, model: Any) -> None:
        t0 = time.perf_counter()
        self.base = next_token_logprobs(model, self.ids)
        self.seconds += time.perf_counter() - t0

    def compare(self, model: Any, dtype: str) -> dict[str, Any]:
        assert self.base is not None, "Probe.baseline first"
        t0 = time.perf_counter()
        quant = next_token_logprobs(model, self.ids)
        out = divergence(self.base, quant, self.ids)
        self.base = None  # vocab x tokens floats: freed before the checkpoint is saved
        self.seconds += time.perf_counter() - t0
        return {
            **out,
            "documents": len(self.ids),
            "max_tokens": self.sanity.max_tokens,
            "text_sha256": documents_hash(len(self.ids)),
            "dtype": dtype,
            "seconds": round(self.seconds, 2),
        }


def probe_checkpoints(base_dir: Path, quant_dir: Path, sanity: Sanity, dtype: str) -> dict[str, Any]:
    """The probe from the two checkpoints on disk (compressed-tensors decompresses the quantized
    one on load), one model in memory at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def load(path: Path) -> Any:
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        probe.seconds += time.perf_counter() - t0
        return model

    probe = Probe(AutoTokenizer.from_pretrained(base_dir), sanity)
    probe.baseline(load(base_dir))
    return {**probe.compare(load(quant_dir), dtype), "loaded": True}


def sidecar(checkpoint: Path) -> Path:
    """Where the figures of a checkpoint probed after it was published are kept: beside it (a
    published checkpoint is content-addressed and verified against its manifest: never
    written into), a hidden file cache_gc does not take for a checkpoint."""
    return Path(checkpoint).parent / f".{Path(checkpoint).name}.{SANITY_FILE}"


def write_result(path: Path, result: dict[str, Any]) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)  # atomic: a concurrent reader sees all of it or none


def stored_result(checkpoint: Path, sanity: Sanity, content_hash: str) -> dict[str, Any] | None:
    """The figures stored in the checkpoint at build time (or beside it, for an older one probed
    later: of this very content), if measured as `sanity` would measure them."""
    for path, of in ((Path(checkpoint) / SANITY_FILE, None), (sidecar(checkpoint), content_hash)):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (
            result.get("content_hash") == of
            and result.get("documents") == sanity.documents
            and result.get("max_tokens") == sanity.max_tokens
            and result.get("text_sha256") == documents_hash(sanity.documents)
        ):
            return result
    return None


def architecture(path: Path) -> str:
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return "unknown architecture"
    return ",".join(cfg.get("architectures") or []) or str(cfg.get("model_type") or "unknown architecture")


def recipe_summary(recipe: Any) -> str:
    """The recipe's modifiers in one compact phrase: `SmoothQuantModifier(strength 0.8) +
    GPTQModifier(W8A8, ignore lm_head)`, `GPTQModifier(W4 int group/64, ignore lm_head)`."""
    from quantgrid.capability import modifiers

    mods = modifiers(recipe)
    return " + ".join(_modifier(k, v if isinstance(v, dict) else {}) for k, v in mods) or "no modifiers"


def _modifier(name: str, args: dict[str, Any]) -> str:
    bits = [str(args["scheme"])] if args.get("scheme") else []
    for group in (args.get("config_groups") or {}).values():
        for role, short in (("weights", "W"), ("input_activations", "A")):
            q = (group or {}).get(role) if isinstance(group, dict) else None
            if isinstance(q, dict):
                bits.append(
                    f"{short}{q.get('num_bits', '?')} {q.get('type', 'int')} {q.get('strategy', 'tensor')}"
                    + (f"/{q['group_size']}" if q.get("group_size") else "")
                    + ("" if q.get("symmetric", True) else " asym")
                    + (" dynamic" if q.get("dynamic") else "")
                )
    if "smoothing_strength" in args:
        bits.append(f"strength {args['smoothing_strength']}")
    if args.get("ignore"):
        bits.append("ignore " + ",".join(map(str, args["ignore"])))
    return f"{name}({', '.join(bits)})"


def gate(result: dict[str, Any], sanity: Sanity, checkpoint: Path, model: ModelSpec, fmt: FormatSpec) -> None:
    """Raise `quantization_broken` (one line: the model's architecture, the recipe, the figures
    vs the limits) for a checkpoint past either limit. A non-finite figure (NaN logits) is past."""
    kl, ratio = float(result["kl_mean"]), float(result["ppl_ratio"])
    past = []
    if not kl <= sanity.max_kl:  # NaN too
        past.append(f"mean KL {kl:.3g} nats/token > {sanity.max_kl:g}")
    if not ratio <= sanity.max_ppl_ratio:
        ppl = f"{result['ppl_base']:.4g} -> {result['ppl_quant']:.4g}"
        past.append(f"perplexity x{ratio:.3g} ({ppl}) > x{sanity.max_ppl_ratio:g}")
    if not past:
        return
    what = f"{architecture(checkpoint)} quantized with {fmt.label or fmt.name} [{recipe_summary(fmt.recipe)}]"
    on = f"{result['documents']} held-out documents ({result['tokens']} tokens)"
    raise StageFailure(
        FailureClass.QUANTIZATION_BROKEN.value,
        f"{model.name}/{fmt.name}: quantization broken: {what}: {'; '.join(past)} on {on} vs the base model "
        "(limits: sweep.sanity)",
    )
