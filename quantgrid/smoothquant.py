"""Where SmoothQuant is not an equivalent transform: one table, read by the plan and the quantize stage.

SmoothQuant (Xiao et al. 2023) divides a normalisation layer's weight by per-channel scales and
multiplies the Linear layers that read its output by them: the network computes the same function
only if (1) those Linear layers are exactly the norm's readers and (2) the norm's output is
`x_hat * weight`, so dividing `weight` divides the output. llmcompressor 0.14 resolves mappings by
architecture (llmcompressor/modifiers/transform/smoothquant/utils.py MAPPINGS_REGISTRY, then
dynamic_mappings.py get_layer_mappings_from_model) and maps Gemma-2 and Gemma-3 to the Llama
mappings (input_layernorm -> q/k/v, post_attention_layernorm -> gate/up). Both conditions fail there
(transformers 5.17, models/gemma3/modeling_gemma3.py Gemma3DecoderLayer.forward and
Gemma3RMSNorm.forward; Gemma-2 has the same block):

- the MLP reads `pre_feedforward_layernorm`; `post_attention_layernorm` normalises the attention
  OUTPUT before the residual add, so scaling gate/up by it is not compensated anywhere;
- Gemma's RMSNorm computes `x_hat * (1 + weight)`: dividing `weight` by s gives 1 + w/s, not
  (1 + w)/s, for input_layernorm too.

So SmoothQuant there silently changes the model before any quantization (measured on a tiny random
Gemma-3 in tests/quantgrid/test_smoothquant.py). No mapping through those norms is correct, so a
recipe with SmoothQuantModifier on such an architecture is refused in one line; GPTQ or RTN W8A8
without smoothing is the alternative. A new architecture is a row here.
"""

from __future__ import annotations

from typing import Any

_GEMMA = (
    "Gemma's RMSNorm scales by (1 + weight), so dividing the norm's weight by the smoothing scales is "
    "not an equivalent transform"
)
_SANDWICH = (
    "its MLP reads pre_feedforward_layernorm, while post_attention_layernorm (which llmcompressor "
    "0.14's Llama mappings smooth into gate/up) normalises the attention output"
)
NOT_SMOOTHABLE: dict[str, str] = {
    "GemmaForCausalLM": _GEMMA,
    "Gemma2ForCausalLM": f"{_SANDWICH}, and {_GEMMA}",
    "Gemma3ForCausalLM": f"{_SANDWICH}, and {_GEMMA}",
    "Gemma3ForConditionalGeneration": f"{_SANDWICH}, and {_GEMMA}",
    "Gemma3nForCausalLM": f"{_SANDWICH}, and {_GEMMA}",
    "Gemma3nForConditionalGeneration": f"{_SANDWICH}, and {_GEMMA}",
}


def uses_smoothquant(recipe: Any) -> bool:
    from quantgrid.capability import find_keys

    return bool(find_keys(recipe, lambda k, v: k == "SmoothQuantModifier"))


def refusal(architecture: str, recipe: Any, fmt: str, model: str) -> str:
    """'' when the recipe may run on this architecture, else the one-line reason."""
    why = NOT_SMOOTHABLE.get(architecture)
    if not why or not uses_smoothquant(recipe):
        return ""
    return (
        f"format {fmt} of {model}: SmoothQuant is not an equivalent transform on {architecture}: {why} "
        "(llmcompressor 0.14 maps it to the Llama mappings); use a W8A8 recipe without SmoothQuantModifier"
    )
