"""Budgeted mixed precision (sweep.mixed): per layer group, one candidate format, so that the
predicted KL is least within an average-bits budget.

The integer program (scipy.optimize.milp, HiGHS): x[g, c] = 1 when group g takes candidate c,

    minimise   sum_g sum_c kl[g, c] x[g, c]                      (kl of the baseline = 0)
    subject to sum_c x[g, c] = 1                                 for every group g
               sum_g sum_c params[g] bits[c] x[g, c] <= budget * sum_g params[g]

kl[g, c] is the sensitivity stage's figure (workers/stages/sensitivity.py): the KL of the model
with only group g quantized to c. Summing them assumes the groups' errors add up, the same
first-order assumption as HAWQ-V3's integer program (Yao et al., ICML 2021) and ModelOpt's
`auto_quantize`; the frontier in the report measures the chosen mixes for real.

Bits are average stored weight bits over the quantizable Linears: the integer width plus the
scales and zero points a group carries (16-bit scales per group of `group_size`, FP8/E8M0 scales
8-bit), so W4A16 in groups of 64 is 4.25 bits and BF16 16. Per-channel and per-tensor scales are
amortised over a whole row (< 0.03 bits on the smallest model here) and counted as 0.
"""

from __future__ import annotations

from typing import Any

from quantgrid.capability import find_keys, modifiers
from quantgrid.errors import ConfigError

# compressed-tensors presets (compressed_tensors/quantization/quant_scheme.py PRESET_SCHEMES):
# (weight bits, group size or 0 for per-channel/tensor/block, scale bits, zero-point bits).
PRESET_WEIGHTS: dict[str, tuple[int, int, int, int]] = {
    "W8A8": (8, 0, 16, 0),
    "INT8": (8, 0, 16, 0),
    "W8A16": (8, 128, 16, 0),
    "W4A16": (4, 128, 16, 0),
    "W4A16_ASYM": (4, 128, 16, 4),
    "W4A8": (4, 128, 16, 0),
    "W4AFP8": (4, 128, 16, 0),
    "FP8": (8, 0, 16, 0),
    "FP8_DYNAMIC": (8, 0, 16, 0),
    "FP8_BLOCK": (8, 128 * 128, 16, 0),
    "NVFP4A16": (4, 16, 8, 0),  # FP8 E4M3 scale per 16 (the per-tensor global scale is amortised)
    "NVFP4": (4, 16, 8, 0),
    "MXFP4": (4, 32, 8, 0),  # E8M0 scale per 32
}
BASELINE_BITS = 16.0  # bf16 / fp16 weights


def weight_bits(name: str, recipe: dict | None) -> float:
    """Average stored bits per weight of a format's quantized Linears (BASELINE_BITS for none)."""
    if recipe is None:
        return BASELINE_BITS
    found: list[float] = []
    for _, v in find_keys(recipe, lambda k, v: k == "scheme" and isinstance(v, str)):
        if v.upper() not in PRESET_WEIGHTS:
            raise ConfigError(
                f"format {name}: cannot tell the weight bits of scheme {v} (known: {', '.join(PRESET_WEIGHTS)})"
            )
        bits, group, scale, zp = PRESET_WEIGHTS[v.upper()]
        found.append(bits + ((scale + zp) / group if group else 0.0))
    for _, groups in find_keys(recipe, lambda k, v: k == "config_groups" and isinstance(v, dict)):
        for g in groups.values():
            w = (g or {}).get("weights") or {}
            if not w:
                continue
            bits = int(w.get("num_bits", 8))
            group = int(w.get("group_size") or 0) if str(w.get("strategy", "")) in ("group", "tensor_group") else 0
            scale = 8 if str(w.get("type", "int")) == "float" and bits == 4 else 16
            zp = 0 if w.get("symmetric", True) else bits
            found.append(bits + ((scale + zp) / group if group else 0.0))
    if len(set(found)) != 1:
        raise ConfigError(f"format {name}: a mixed-precision candidate needs one weight scheme, found {len(found)}")
    return found[0]


def candidate_recipe(name: str, recipe: dict | None) -> dict | None:
    """Refuse, in one line, a candidate whose recipe a per-group mix cannot reproduce: one
    weight-quantizing modifier (GPTQ or round-to-nearest) and nothing that transforms the whole
    model first (SmoothQuant, AWQ, rotations: they would apply to the unquantized groups too)."""
    if recipe is None:
        return None
    mods = modifiers(recipe)
    names = [k for k, _ in mods]
    if names not in (["GPTQModifier"], ["QuantizationModifier"]):
        raise ConfigError(
            f"sweep.mixed.candidates: {name} runs {' + '.join(names) or 'no modifier'}; a mixed format takes "
            "candidates with one GPTQModifier or QuantizationModifier (a model-wide transform such as "
            "SmoothQuant or AWQ cannot apply to only the groups that take it)"
        )
    args = mods[0][1] or {}
    if args.get("kv_cache_scheme"):
        raise ConfigError(f"sweep.mixed.candidates: {name} quantizes the KV cache; a candidate is a weight scheme")
    return recipe


GB = 1e9  # bytes


def _linear_and_rest(groups: list[dict[str, Any]]) -> tuple[float, float]:
    """Parameters of the quantizable Linears, and of the rest of the model (embeddings, norms, an
    untied lm_head: `model_params` minus the Linears')."""
    linear = float(sum(g["params"] for g in groups))
    rest = max(float(groups[0].get("model_params") or 0) - linear, 0.0) if groups else 0.0
    return linear, rest


def bits_for_gb(groups: list[dict[str, Any]], gb: float) -> float:
    """The average weight bits of the Linears that a checkpoint of `gb` gigabytes allows, the
    rest of the model stored at BASELINE_BITS."""
    linear, rest = _linear_and_rest(groups)
    return (gb * GB * 8 - rest * BASELINE_BITS) / linear if linear else 0.0


def size_gb(groups: list[dict[str, Any]], bits: float) -> float:
    """The checkpoint's gigabytes at `bits` average weight bits (the inverse of bits_for_gb)."""
    linear, rest = _linear_and_rest(groups)
    return (linear * bits + rest * BASELINE_BITS) / 8 / GB


def solve(
    groups: list[dict[str, Any]], kl: dict[str, dict[str, float]], bits: dict[str, float], budget: float
) -> dict[str, Any]:
    """The assignment minimising the summed KL within `budget` average bits.

    groups: [{name, params, modules}], kl: {candidate: {group name: KL}} (the baseline's is 0),
    bits: {candidate: average weight bits}. Returns {assignment: {group: candidate}, predicted_kl,
    bits (achieved), status}."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp

    cands = list(bits)
    n, k = len(groups), len(cands)
    params = np.array([float(g["params"]) for g in groups])
    cost = np.array([[kl.get(c, {}).get(g["name"], 0.0) for c in cands] for g in groups]).ravel()
    weight = np.array([[p * bits[c] for c in cands] for p in params]).ravel()
    one = np.zeros((n, n * k))
    for i in range(n):
        one[i, i * k : (i + 1) * k] = 1.0
    total = float(params.sum())
    cheapest = min(bits.values())
    if budget < cheapest - 1e-9:
        raise ConfigError(f"mixed budget {budget:g} bits is below the cheapest candidate's {cheapest:.3g} bits")
    res = milp(
        cost,
        constraints=[LinearConstraint(one, 1.0, 1.0), LinearConstraint(weight[None, :], -np.inf, budget * total)],
        integrality=np.ones(n * k),
        bounds=Bounds(0, 1),
    )
    if res.x is None:
        raise RuntimeError(f"mixed budget {budget:g} bits: scipy.optimize.milp found no assignment ({res.message})")
    x = np.round(res.x).reshape(n, k)
    choice = {g["name"]: cands[int(x[i].argmax())] for i, g in enumerate(groups)}
    achieved = float(sum(params[i] * bits[choice[g["name"]]] for i, g in enumerate(groups)) / total)
    return {
        "assignment": choice,
        "predicted_kl": float(sum(kl.get(choice[g["name"]], {}).get(g["name"], 0.0) for g in groups)),
        "bits": achieved,
        "status": str(res.message),
        "groups": {c: sum(1 for v in choice.values() if v == c) for c in cands},
    }


def modules_by_candidate(groups: list[dict[str, Any]], choice: dict[str, str], baseline: str) -> dict[str, list[str]]:
    """{quantized candidate: [checkpoint Linear names]}: what each config group targets."""
    out: dict[str, list[str]] = {}
    for g in groups:
        c = choice[g["name"]]
        if c != baseline:
            out.setdefault(c, []).extend(g["modules"])
    return out
