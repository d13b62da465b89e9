"""Per-layer-group sensitivity (sweep.sensitivity): quantize one group at a time, measure how far
the model's next-token distribution moves from the base model's.

A group is what vLLM serves as one Linear: q/k/v and gate/up are fused there (their shards must
share a scheme: vllm/model_executor/layers/quantization/compressed_tensors/utils.py
`_match_fused_layer`), o and down are their own; so per decoder layer: qkv_proj, o_proj,
gate_up_proj, down_proj. A mixed-precision assignment (orchestrator/planning/mixed.py) can only
split the model there, so that is the grain measured.

How a group is quantized here: its weights are rounded to the format's scheme with
compressed-tensors' own `fake_quantize` and llm-compressor's min-max observer (round-to-nearest:
no calibration, no GPTQ), and its inputs, where the scheme quantizes activations dynamically,
fake-quantized per call with compressed-tensors' `compute_dynamic_scales_and_zp`; everything else
stays in float32. The figure per group is the exact KL(base || group quantized) over the full
vocabulary at every position of the held-out text (workers/stages/sanity.py `divergence`, the
same measurement the post-quantize gate makes) and the perplexity ratio. Round-to-nearest ranks
groups as ModelOpt's `auto_quantize` and HAWQ-style searches do (a per-layer proxy, summed: the
integer program assumes the groups' KLs add up; the frontier measures whether they do).

Cost: one forward pass per group over `documents` x `max_tokens` tokens (SmolLM2-135M: 120
groups). torch / transformers / compressed-tensors are imported inside: the driver never imports
this module.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from quantgrid.capability import modifiers
from quantgrid.failures import FailureClass, StageFailure
from quantgrid.types import FormatSpec, SampleRecord

# vLLM's packed_modules_mapping for Llama-family models (vllm/model_executor/models/llama.py
# LlamaForCausalLM.packed_modules_mapping): the shards one fused Linear is built from.
FUSED = {
    "q_proj": "qkv_proj",
    "k_proj": "qkv_proj",
    "v_proj": "qkv_proj",
    "gate_proj": "gate_up_proj",
    "up_proj": "gate_up_proj",
}
LAYER = re.compile(r"\.layers\.(\d+)\.")


@dataclass
class Group:
    name: str  # the fused module's path, e.g. model.layers.3.self_attn.qkv_proj
    layer: int
    module: str  # qkv_proj, o_proj, gate_up_proj, down_proj
    modules: list[str] = field(default_factory=list)  # the checkpoint's Linear names
    params: int = 0


def layer_groups(model: Any, ignore: list[str]) -> list[Group]:
    """The model's quantizable Linears (not matched by the recipe's `ignore`) grouped as vLLM
    fuses them, in model order."""
    import torch
    from compressed_tensors.utils import match_name

    groups: dict[str, Group] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or any(match_name(name, t) for t in ignore):
            continue
        parent, _, leaf = name.rpartition(".")
        fused = FUSED.get(leaf, leaf)
        m = LAYER.search(f".{name}")
        g = groups.setdefault(f"{parent}.{fused}", Group(f"{parent}.{fused}", int(m.group(1)) if m else -1, fused))
        g.modules.append(name)
        g.params += mod.weight.numel()
    return list(groups.values())


def target_scheme(fmt: FormatSpec) -> tuple[Any, list[str], list[str]]:
    """The format's one quantization scheme (compressed-tensors QuantizationScheme), its
    modifier's ignore list and the modifiers left out. One group of one scheme: a recipe whose config_groups differ per
    module is already a mix, not a target to measure against. Modifiers without a scheme
    (SmoothQuant, AWQ's smoothing) transform the whole model and are not applied per group: the
    figures are the scheme's alone (the third value, `skipped_modifiers` in the result)."""
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import is_preset_scheme, preset_name_to_scheme

    has_scheme = lambda v: isinstance(v, dict) and bool(v.get("scheme") or v.get("config_groups"))  # noqa: E731
    mods = [(k, v) for k, v in modifiers(fmt.recipe) if has_scheme(v)]
    skipped = [k for k, v in modifiers(fmt.recipe) if not has_scheme(v)]
    if len(mods) != 1:
        raise StageFailure(
            FailureClass.BAD_INPUT.value,
            f"sensitivity: format {fmt.name} has {len(mods)} quantization modifiers with a scheme; one is needed",
        )
    args = mods[0][1]
    if args.get("scheme"):
        if not isinstance(args["scheme"], str) or not is_preset_scheme(args["scheme"]):
            raise StageFailure(
                FailureClass.BAD_INPUT.value,
                f"sensitivity: format {fmt.name}: scheme {args['scheme']!r} is not one preset",
            )
        scheme = preset_name_to_scheme(args["scheme"], ["Linear"])
    else:
        groups = list(args["config_groups"].values())
        if len(groups) != 1:
            raise StageFailure(
                FailureClass.BAD_INPUT.value,
                f"sensitivity: format {fmt.name} has {len(groups)} config_groups; a target format has one scheme",
            )
        scheme = QuantizationScheme.model_validate(groups[0])
    act = scheme.input_activations
    if act is not None and not act.dynamic:
        raise StageFailure(
            FailureClass.BAD_INPUT.value,
            f"sensitivity: format {fmt.name} quantizes activations with static (calibrated) scales; "
            "a group quantized alone has no calibration: measure a dynamic or weight-only format",
        )
    return scheme, [str(i) for i in args.get("ignore") or []], skipped


@contextmanager
def quantized(model: Any, modules: list[str], scheme: Any) -> Iterator[None]:
    """The named Linears compute with the scheme's quantized weights (and dynamically quantized
    inputs) inside the block; their float weights are restored after it."""
    import torch
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils import compute_dynamic_scales_and_zp
    from llmcompressor.observers import Observer

    named = dict(model.named_modules())
    saved, hooks = {}, []
    try:
        for name in modules:
            mod = named[name]
            saved[name] = mod.weight.data
            if scheme.weights is not None:
                obs = Observer.load_from_registry("memoryless_minmax", base_name="weight", args=scheme.weights)
                qp = obs(mod.weight.data).get_qparams()
                mod.weight.data = fake_quantize(
                    mod.weight.data, qp["scale"], qp["zero_point"], scheme.weights, global_scale=qp.get("global_scale")
                ).to(mod.weight.dtype)
            act = scheme.input_activations
            if act is not None:

                def pre(module: torch.nn.Module, inputs: tuple, act=act) -> tuple:
                    x = inputs[0]
                    scale, zp = compute_dynamic_scales_and_zp(value=x, args=act, module=module)
                    return (fake_quantize(x, scale, zp, act).to(x.dtype), *inputs[1:])

                hooks.append(mod.register_forward_pre_hook(pre))
        yield
    finally:
        for h in hooks:
            h.remove()
        for name, w in saved.items():
            named[name].weight.data = w


class SensitivityProbe:
    """The base model in float32 and its log-probs on the held-out text, loaded once per actor;
    `measure` then walks the groups for one format."""

    def __init__(self, base_path: str, settings: dict[str, Any]):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from workers.stages.sanity import held_out_ids, next_token_logprobs

        t0 = time.perf_counter()
        self.path = str(base_path)
        self.settings = dict(settings)
        tokenizer = AutoTokenizer.from_pretrained(base_path)
        # float32: the groups' differences are small; bf16 rounding of the rest would swamp them
        self.model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
        self.ids = held_out_ids(tokenizer, int(settings["documents"]), int(settings["max_tokens"]))
        self.base = next_token_logprobs(self.model, self.ids)
        self.load_seconds = time.perf_counter() - t0

    def measure(self, fmt: FormatSpec, progress=None) -> tuple[dict[str, float], list[SampleRecord]]:
        from workers.stages.sanity import divergence, documents_hash, next_token_logprobs

        scheme, ignore, self.skipped_modifiers = target_scheme(fmt)
        groups = layer_groups(self.model, ignore)
        if not groups:
            raise StageFailure(
                FailureClass.BAD_INPUT.value, f"sensitivity: format {fmt.name} quantizes no Linear of this model"
            )
        # the whole model's parameters (embeddings, norms, lm_head too): what a GB budget counts
        model_params = sum(p.numel() for p in self.model.parameters())
        records = []
        for i, g in enumerate(groups):
            t0 = time.perf_counter()
            try:
                with quantized(self.model, g.modules, scheme):
                    d = divergence(self.base, next_token_logprobs(self.model, self.ids), self.ids)
            except (StageFailure, MemoryError):  # memory is the scheduler's to classify (oom), not bad input
                raise
            except Exception as exc:  # noqa: BLE001 - a scheme this path cannot fake-quantize: one line
                raise StageFailure(
                    FailureClass.BAD_INPUT.value,
                    f"sensitivity: cannot quantize {g.name} to {fmt.name} here: {type(exc).__name__}: "
                    + (str(exc).splitlines() or [""])[0],
                ) from None
            records.append(
                SampleRecord(
                    doc_id=i,
                    target=g.name,
                    response="",
                    metrics={"kl": d["kl_mean"], "ppl_ratio": d["ppl_ratio"], "params": float(g.params)},
                    extra={
                        "layer": g.layer,
                        "module": g.module,
                        "modules": g.modules,
                        "model_params": model_params,
                        "seconds": time.perf_counter() - t0,
                    },
                )
            )
            if progress:
                progress(i + 1, len(groups))
        kls = [r.metrics["kl"] for r in records]
        metrics = {
            "kl_sum,none": float(sum(kls)),
            "kl_max,none": float(max(kls)),
            "groups,none": float(len(records)),
            "params,none": float(sum(g.params for g in groups)),
            "model_params,none": float(model_params),
            "tokens,none": float(sum(len(d) - 1 for d in self.ids)),
        }
        self.text_sha256 = documents_hash(int(self.settings["documents"]))
        return metrics, records
