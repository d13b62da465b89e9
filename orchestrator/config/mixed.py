"""sweep.sensitivity and sweep.mixed -> the sensitivity targets and one mixed-precision FormatSpec
per (model, budget). Consumed in one place: `load_mixed` (called by config/sweep.py load_sweep).

A mixed format is planned before its assignment exists: the assignment is solved from the
sensitivity stage's results when its quantize stage starts (orchestrator/execution/driver.py
`quantize_args`, orchestrator/planning/mixed.py `solve`). Its key holds what decides that
assignment (the candidates' recipes, their bits, the budget, the sensitivity settings), so the
same sweep on the same model plans the same cells, and a changed candidate is a new format.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from orchestrator.config.loader import ConfigError
from orchestrator.planning.mixed import candidate_recipe, weight_bits
from quantgrid.capability import modifiers
from quantgrid.settings import Mixed, Sensitivity
from quantgrid.types import FormatSpec


def load_mixed(
    sens_node: Any, mixed_node: Any, formats: dict[str, dict[str, FormatSpec]], format_names: list[str], baseline: str
) -> tuple[Sensitivity, Mixed, list[str]]:
    """The sensitivity settings (mixed candidates added to its targets), the mixed settings, and
    the format names with the mixed formats appended; `formats` gains them per model."""
    sens, mixed = Sensitivity.of(sens_node), Mixed.of(mixed_node)
    targets = list(sens.formats)
    for c in mixed.candidates:
        if c not in format_names:
            raise ConfigError(f"sweep.mixed.candidates: {c} is not a format of this sweep (add it to sweep.formats)")
    for m, fmts in formats.items():
        quantized = [c for c in mixed.candidates if not fmts[c].is_baseline]
        dense = [c for c in mixed.candidates if fmts[c].is_baseline]
        if mixed.enabled and not quantized:
            raise ConfigError("sweep.mixed.candidates: at least one candidate must be a quantized format")
        if dense and dense != [baseline]:
            raise ConfigError(
                f"sweep.mixed.candidates: {dense[0]} is unquantized; only the baseline ({baseline}) keeps a group dense"
            )
        targets += [c for c in quantized if c not in targets]
    for t in targets:
        if t not in format_names:
            raise ConfigError(f"sweep.sensitivity.formats: {t} is not a format of this sweep")
        for m, fmts in formats.items():
            if fmts[t].is_baseline:
                raise ConfigError(f"sweep.sensitivity.formats: {t} is not a quantized format (of {m})")
            if fmts[t].published:
                raise ConfigError(
                    f"sweep.sensitivity.formats: {t} is a published checkpoint, not a recipe to apply per group"
                )
    sens = replace(sens, formats=tuple(targets))
    if not mixed.enabled:
        return sens, mixed, format_names
    names = [n for n, _ in mixed.formats()]
    for n in names:
        if n in format_names:
            raise ConfigError(f"sweep.formats lists {n}: that name is a mixed format's (sweep.mixed)")
    for m, fmts in formats.items():
        cands = {c: fmts[c] for c in mixed.candidates}
        recipes = {c: candidate_recipe(c, f.recipe) for c, f in cands.items()}
        kinds = {k for r in recipes.values() if r for k, _ in modifiers(r)}
        if len(kinds) > 1:
            raise ConfigError(
                f"sweep.mixed.candidates: {' and '.join(sorted(kinds))} in one mix; the candidates' recipes "
                "must use the same modifier (one oneshot pass quantizes every group)"
            )
        bits = {c: weight_bits(c, r) for c, r in recipes.items()}
        template = next(cands[c] for c in mixed.candidates if recipes[c] is not None)
        for name, budget in mixed.formats():
            b = budget.get("budget_bits")
            size = f"{b:g}-bit" if b is not None else f"{budget.get('budget_gb', 0):g} GB"
            if b is None:  # gigabytes: converted once the sensitivity stage counted the parameters
                pass
            elif b < min(bits.values()) - 1e-9:
                cheapest = min(bits, key=bits.get)
                raise ConfigError(
                    f"sweep.mixed.budgets: {b:g} bits is below the cheapest candidate "
                    f"({cheapest}, {bits[cheapest]:.4g} bits)"
                )
            elif b >= max(bits.values()):
                raise ConfigError(
                    f"sweep.mixed.budgets: {b:g} bits is at or above the most precise candidate's "
                    f"{max(bits.values()):.4g} bits: that mix is the candidate itself"
                )
            fmts[name] = FormatSpec(
                name=name,
                label=f"Mixed {size} ({'/'.join(f.label for f in cands.values())})",
                recipe=template.recipe,
                calibration=template.calibration,
                dtype=template.dtype,
                mixed={
                    **budget,
                    "baseline": baseline,
                    "candidates": {c: recipes[c] for c in mixed.candidates},
                    "bits": bits,
                    "sensitivity": sens.cell_settings(),
                },
            )
    return sens, mixed, [*format_names, *names]
