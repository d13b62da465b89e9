"""A mixed-precision format's llmcompressor recipe, from the assignment the driver solved
(orchestrator/planning/mixed.py): one config group per quantized candidate, whose `targets` are
the checkpoint's Linear names that candidate was given (exact names: compressed-tensors matches a
target by name, and vLLM finds a fused layer's shards by name too, vllm/model_executor/layers/
quantization/compressed_tensors/utils.py `_match_fused_layer`). Groups kept in the baseline's
precision are in no config group; compressed-tensors writes them to the checkpoint's `ignore`
list, which vLLM reads (`should_ignore_layer`).

The candidates share one modifier (checked at plan time, orchestrator/config/mixed.py): its
other arguments (dampening_frac, ignore) come from the first quantized candidate. A preset
`scheme:` (W8A8) is expanded with compressed-tensors' `preset_name_to_scheme`, so each group is
a full scheme and the recipe says exactly what it quantizes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from quantgrid.capability import modifiers
from quantgrid.types import FormatSpec

SCHEME_KEYS = ("scheme", "config_groups", "targets")


def _modifier(recipe: dict) -> tuple[str, dict[str, Any]]:
    name, args = modifiers(recipe)[0]
    return name, dict(args or {})


def group_scheme(recipe: dict, targets: list[str]) -> dict[str, Any]:
    """The candidate's one scheme as a config group over `targets`."""
    from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme

    _, args = _modifier(recipe)
    if args.get("scheme"):
        scheme = preset_name_to_scheme(str(args["scheme"]), targets).model_dump(mode="json", exclude_none=True)
    else:
        scheme = dict(next(iter(args["config_groups"].values())))
    return {**scheme, "targets": list(targets)}


def materialize(fmt: FormatSpec) -> FormatSpec:
    """The format with its concrete recipe (`fmt.mixed["assignment"]`: {candidate: [Linear names]})."""
    m = fmt.mixed or {}
    if "assignment" not in m:
        raise ValueError(f"mixed format {fmt.name} reached the quantize stage without its assignment")
    template = next(r for r in m["candidates"].values() if r is not None)
    name, args = _modifier(template)
    groups = {
        f"group_{i}": group_scheme(m["candidates"][cand], modules)
        for i, (cand, modules) in enumerate(sorted(m["assignment"].items()))
        if modules
    }
    if not groups:  # plan time refuses a budget at or above the dense candidate's bits
        raise ValueError(f"mixed format {fmt.name}: its assignment quantizes no module")
    mod = {k: v for k, v in args.items() if k not in SCHEME_KEYS} | {"config_groups": groups}
    return replace(fmt, recipe={"quant_stage": {"quant_modifiers": {name: mod}}})
