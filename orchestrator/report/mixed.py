"""The report's mixed-precision sections: the sensitivity heatmap (layer x module, per model and
target format) and the frontier (average weight bits vs KL and perplexity recovery, per format,
uniform and mixed), with paired CIs against the reference: the cheapest uniform candidate of the
mix (uniform W4A16 in the demo).

KL here is the distribution-fidelity task's (orchestrator/report/fidelity.py: per document, from
vLLM's top-k prompt logprobs, a lower bound on the full KL) of the served checkpoint; perplexity
recovery is the paper report's (orchestrator/report/paper.py rows: baseline / format x 100, word
perplexity re-aggregated per resample). The paired CIs against the reference resample the same
documents for both formats (orchestrator/report/analysis.py `paired_task`): a mix "beats" the
reference when the whole CI of (mix - reference) KL lies below 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.report.analysis import Samples, paired_task
from orchestrator.store.results import read_sensitivity, samples_file


def sensitivity(records: list[dict[str, Any]], run_dir: Path) -> list[dict[str, Any]]:
    """One entry per (model, target format): its groups (layer, module, KL, params)."""
    out = []
    for r in sorted(records, key=lambda r: (r["model"], r["format"])):
        groups = read_sensitivity(samples_file(run_dir, r["model"], r["format"], r["task"], r["cell_key"]))
        out.append({"model": r["model"], "format": r["format"], "seconds": r.get("seconds"), "groups": groups})
    return out


def _kl_samples(run_dir: Path, model: str, baseline: str, fmt: str, task: str, latest: dict) -> Samples | None:
    from orchestrator.report.fidelity import _extras, document

    base, rec = latest.get((model, baseline, task)), latest.get((model, fmt, task))
    if base is None or rec is None:
        return None
    b = _extras(samples_file(run_dir, model, baseline, task, base["cell_key"]))
    o = _extras(samples_file(run_dir, model, fmt, task, rec["cell_key"]))
    docs = sorted(set(b) & set(o))
    kl = [document(b[d], o[d])[0] for d in docs]
    keep = [i for i, v in enumerate(kl) if np.isfinite(v)]
    return Samples(np.array([docs[i] for i in keep]), np.array([kl[i] for i in keep], dtype=float))


def frontier(
    results: list[dict[str, Any]],
    run_dir: Path,
    sweep,
    rows: list[dict],
    fidelity_rows: list[dict],
    resamples: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (model, format) with known weight bits: bits, KL [CI], perplexity recovery
    [CI], and for each mix (and each other uniform format) the paired difference from the
    reference in KL and perplexity."""
    from orchestrator.planning.mixed import BASELINE_BITS, weight_bits
    from orchestrator.report.paper import load_samples

    if not sweep.mixed.enabled:
        return []
    latest = {(r["model"], r["format"], r["task"]): r for r in results}
    kl_task = next((t.name for t in sweep.tasks if t.scorer_kind == "token_dist"), None)
    ppl_task = next((t for t in sweep.tasks if "perplexity" in t.metric), None)
    fid = {(r["model"], r["format"]): r for r in fidelity_rows if r["task"] == kl_task}
    ppl_rows = {r["model"]: r for r in rows if r["kind"] == "task" and ppl_task and r["name"] == ppl_task.name}
    out = []
    for model in sweep.models:
        fmts = sweep.formats[model.name]
        some_mix = next(f for f in fmts.values() if f.mixed)
        bits_of = some_mix.mixed["bits"]
        reference = min((c for c in bits_of if c != sweep.baseline), key=bits_of.get)
        ref_kl = _kl_samples(run_dir, model.name, sweep.baseline, reference, kl_task, latest) if kl_task else None
        ref_ppl = latest.get((model.name, reference, ppl_task.name)) if ppl_task else None
        for name in sweep.format_names:
            f = fmts.get(name)
            if f is None or name == sweep.noise_floor.format_name(sweep.baseline):
                continue
            try:
                bits = BASELINE_BITS if f.is_baseline else weight_bits(name, f.recipe)
            except ValueError:  # a format whose weight bits are not known (a published checkpoint)
                continue
            row: dict[str, Any] = {"model": model.name, "format": name, "kind": "mixed" if f.mixed else "uniform"}
            row["bits"] = bits
            if f.mixed:
                row |= {k: f.mixed[k] for k in ("budget_bits", "budget_gb") if k in f.mixed}
                solved = run_dir / "mixed" / model.name / f"{name}.json"
                if solved.is_file():
                    s = json.loads(solved.read_text())
                    row |= {k: s[k] for k in ("bits", "predicted_kl", "groups", "size_gb") if k in s}
            fr = fid.get((model.name, name))
            if fr and fr.get("kl") is not None:
                row |= {"kl": fr["kl"], "kl_ci": fr["kl_ci"], "top1": fr["top1"]}
            elif name == sweep.baseline:
                row |= {"kl": 0.0, "kl_ci": [0.0, 0.0]}
            pr = (ppl_rows.get(model.name) or {}).get("formats", {}).get(name)
            if pr:
                row |= {"ppl": pr["score"], "ppl_recovery": pr["recovery"], "ppl_recovery_ci": pr["recovery_ci"]}
            elif name == sweep.baseline and model.name in ppl_rows:
                row |= {"ppl": ppl_rows[model.name]["baseline"], "ppl_recovery": 100.0}
            if name not in (reference, sweep.baseline):
                row["reference"] = reference
                mine = _kl_samples(run_dir, model.name, sweep.baseline, name, kl_task, latest) if kl_task else None
                if ref_kl is not None and mine is not None and len(mine.doc_ids):
                    p, _, _ = paired_task(kl_task, ref_kl, mine, False, resamples, seed)
                    row |= {"kl_vs_ref": p.diff, "kl_vs_ref_ci": list(p.diff_ci)}
                rec = latest.get((model.name, name, ppl_task.name)) if ppl_task else None
                if ref_ppl and rec:
                    load = lambda r: load_samples(
                        samples_file(run_dir, r["model"], r["format"], r["task"], r["cell_key"]), ppl_task.metric
                    )
                    p, _, _ = paired_task(ppl_task.name, load(ref_ppl), load(rec), False, resamples, seed)
                    row |= {"ppl_vs_ref": p.diff, "ppl_vs_ref_ci": list(p.diff_ci)}
            out.append(row)
    return sorted(out, key=lambda r: (r["model"], r["bits"]))


def _num(v: Any, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def _ci(r: dict, k: str, digits: int = 4) -> str:
    if r.get(k) is None:
        return "—"
    ci = r.get(f"{k}_ci")
    return f"{_num(r[k], digits)}" + (f" [{_num(ci[0], digits)}, {_num(ci[1], digits)}]" if ci else "")


def to_markdown(sens: list[dict], table: list[dict], baseline: str) -> str:
    parts = []
    if sens:
        parts += [
            "### Layer-group sensitivity",
            "",
            f"Each group quantized alone (round-to-nearest), exact KL({baseline} ‖ group quantized) in nats per "
            "token over the full vocabulary on held-out text; the heatmap is sensitivity_heatmap.png.",
            "",
            "| model | format | groups | summed KL | most sensitive groups (KL) |",
            "|---|---|---|---|---|",
        ]
        for s in sens:
            top = sorted(s["groups"], key=lambda g: -g["kl"])[:4]
            parts.append(
                f"| {s['model']} | {s['format']} | {len(s['groups'])} | {sum(g['kl'] for g in s['groups']):.4g} | "
                + ", ".join(f"{g['name']} ({g['kl']:.3g})" for g in top)
                + " |"
            )
        parts.append("")
    if table:
        parts += [
            "### Mixed-precision frontier",
            "",
            "Average weight bits (scales included) vs KL from the baseline (distribution-fidelity task, "
            "95% CI over documents) and perplexity recovery; Δ vs reference: paired (mix − reference) on the "
            "same documents, a KL Δ whose CI lies below 0 beats the reference. Plot: frontier.png.",
            "",
            "| model | format | kind | bits | predicted KL | KL [95% CI] | Δ KL vs reference [95% CI] | "
            "perplexity recovery % [95% CI] | Δ perplexity vs reference [95% CI] |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in table:
            ref = f" ({r['reference']})" if r.get("reference") else ""
            parts.append(
                f"| {r['model']} | {r['format']} | {r['kind']} | {r['bits']:.3f} | {_num(r.get('predicted_kl'))} | "
                f"{_ci(r, 'kl')} | {_ci(r, 'kl_vs_ref')}{ref if r.get('kl_vs_ref') is not None else ''} | "
                f"{_ci(r, 'ppl_recovery')} | {_ci(r, 'ppl_vs_ref')} |"
            )
        parts.append("")
    return "\n".join(parts)


def metrics(table: list[dict], sens: list[dict]) -> dict[str, float]:
    """MLflow metric keys: frontier/MODEL/FORMAT/{bits,kl,ppl_recovery,kl_vs_ref,...},
    sensitivity/MODEL/FORMAT/{kl_sum,kl_max}."""
    out = {}
    for r in table:
        for k in ("bits", "predicted_kl", "kl", "ppl_recovery", "kl_vs_ref", "ppl_vs_ref"):
            if r.get(k) is not None:
                out[f"frontier/{r['model']}/{r['format']}/{k}"] = float(r[k])
    for s in sens:
        kls = [g["kl"] for g in s["groups"]]
        if kls:
            out[f"sensitivity/{s['model']}/{s['format']}/kl_sum"] = float(sum(kls))
            out[f"sensitivity/{s['model']}/{s['format']}/kl_max"] = float(max(kls))
    return out
