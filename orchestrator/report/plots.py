"""The report's PNG plots (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def recovery_heatmap(rows: list[dict], formats: list[str], path: Path) -> Path | None:
    """Recovery % per (model / suite) x format; suites if there are any, else tasks."""
    suites = [r for r in rows if r["kind"] == "suite"] or [r for r in rows if r["kind"] == "task"]
    if not suites or not formats:
        return None
    labels = [f"{r['model']} / {r['name']}" for r in suites]
    data = [[(r["formats"].get(f) or {}).get("recovery") for f in formats] for r in suites]
    grid = [[math.nan if v is None else v for v in row] for row in data]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(formats), 1.0 + 0.45 * len(labels)))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=90, vmax=102, aspect="auto")
    ax.set_xticks(range(len(formats)), formats)
    ax.set_yticks(range(len(labels)), labels)
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            ax.text(j, i, "N/A" if v is None else f"{v:.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="recovery % vs baseline")
    ax.set_title("Recovery (quantized / baseline x 100)")
    return _save(fig, path)


def task_differences(rows: list[dict], formats: list[str], path: Path) -> Path | None:
    """Score difference vs baseline per task, with its paired-bootstrap 95% CI."""
    tasks = [r for r in rows if r["kind"] == "task"]
    if not tasks or not formats:
        return None
    fig, axes = plt.subplots(
        1, len(formats), figsize=(3.2 * len(formats), 0.6 + 0.4 * len(tasks)), sharey=True, squeeze=False
    )
    labels = [f"{r['model']} / {r['name']}" for r in tasks]
    for ax, fmt in zip(axes[0], formats):
        for i, r in enumerate(tasks):
            f = r["formats"].get(fmt) or {}
            if f.get("diff") is None:
                continue
            lo, hi = f["diff_ci"]
            ax.errorbar(f["diff"], i, xerr=[[f["diff"] - lo], [hi - f["diff"]]], fmt="o", color="tab:blue", capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(fmt)
        ax.set_xlabel("score - baseline")
    axes[0][0].set_yticks(range(len(labels)), labels)
    return _save(fig, path)


def similarity_distributions(
    dists: dict[tuple[str, str], dict[str, dict[str, list[float]]]], measures: list[str], path: Path
) -> Path | None:
    """Per-document similarity to the baseline's outputs: one row per (model, task), one column
    per measure, a box per format (median, quartiles, every document as a dot)."""
    if not dists:
        return None
    keys = sorted(dists)
    fig, axes = plt.subplots(
        len(keys), len(measures), figsize=(3.4 * len(measures), 0.8 + 2.4 * len(keys)), squeeze=False
    )
    for i, key in enumerate(keys):
        formats = list(dists[key])
        for j, m in enumerate(measures):
            ax = axes[i][j]
            data = [dists[key][f][m] for f in formats]
            ax.boxplot(data, showfliers=False)
            for k, d in enumerate(data, start=1):  # a few hundred dots at most per box: show them all
                ax.scatter([k + 0.08 * ((n % 5) - 2) for n in range(len(d))], d, s=6, alpha=0.5, color="tab:blue")
            ax.set_xticks(range(1, len(formats) + 1), formats)
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{key[0]} / {key[1]}: {m}", fontsize=9)
    fig.suptitle("Output similarity to the baseline format, per document")
    return _save(fig, path)


def perf_frontier(table: list[dict], path: Path) -> Path | None:
    """Accuracy-performance frontier per (model, scenario, hardware): recovery % against sync
    request latency (lower is better) and against the best async output tokens/s (higher is
    better); the Pareto-optimal formats are joined by a line."""
    groups: dict[tuple, list[dict]] = {}
    for r in table:
        groups.setdefault((r["model"], r["scenario"], r["accelerator"]), []).append(r)
    if not groups:
        return None
    keys = sorted(groups)
    fig, axes = plt.subplots(len(keys), 2, figsize=(9, 0.6 + 3.0 * len(keys)), squeeze=False)
    for i, key in enumerate(keys):
        rows = [r for r in groups[key] if r["recovery"] is not None]
        for j, (title, value, better_low) in enumerate(
            (
                ("sync: request latency p50 (s)", lambda r: r["levels"].get(1, {}).get("request_latency_s_p50"), True),
                (
                    "async: best output tok/s",
                    lambda r: max((m.get("output_tok_per_s") or 0.0 for m in r["levels"].values()), default=None),
                    False,
                ),
            )
        ):
            ax = axes[i][j]
            pts = [(value(r), r["recovery"], r["format"]) for r in rows if value(r) is not None]
            for x, y, name in pts:
                ax.scatter(x, y, s=30)
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
            # Pareto front: no other point is both faster and more accurate.
            front = sorted(
                (
                    p
                    for p in pts
                    if not any((q[0] < p[0] if better_low else q[0] > p[0]) and q[1] >= p[1] and q != p for q in pts)
                ),
                key=lambda p: p[0],
            )
            if len(front) > 1:
                ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", lw=1)
            ax.set_xlabel(title)
            ax.set_ylabel("accuracy recovery %")
            ax.set_title(f"{key[0]} / {key[1]} ({key[2]})", fontsize=9)
    fig.suptitle("Accuracy-performance frontier")
    return _save(fig, path)


# A decoder layer's groups in data-flow order (workers/stages/sensitivity.py FUSED)
MODULE_ORDER = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def sensitivity_heatmap(sens: list[dict], path: Path) -> Path | None:
    """Per (model, target format): decoder layer x module group, the KL of quantizing that group
    alone (log colour scale: a few groups dominate)."""
    from matplotlib.colors import LogNorm

    sens = [s for s in sens if s["groups"]]
    if not sens:
        return None
    fig, axes = plt.subplots(1, len(sens), figsize=(3.2 * len(sens) + 1.2, 6.0), squeeze=False)
    for ax, s in zip(axes[0], sens):
        layers = sorted({g["layer"] for g in s["groups"]})
        modules = [m for m in MODULE_ORDER if any(g["module"] == m for g in s["groups"])]
        modules += sorted({g["module"] for g in s["groups"]} - set(modules))
        grid = [[math.nan] * len(modules) for _ in layers]
        for g in s["groups"]:
            grid[layers.index(g["layer"])][modules.index(g["module"])] = max(g["kl"], 1e-6)
        im = ax.imshow(grid, cmap="magma_r", norm=LogNorm(), aspect="auto")
        ax.set_xticks(range(len(modules)), [m.removesuffix("_proj") for m in modules], rotation=30)
        ax.set_yticks(range(len(layers)), [str(n) for n in layers], fontsize=6)
        ax.set_ylabel("decoder layer")
        ax.set_title(f"{s['model']} / {s['format']}", fontsize=9)
        fig.colorbar(im, ax=ax, label="KL nats/token (group alone)")
    fig.suptitle("Layer-group sensitivity")
    return _save(fig, path)


def bits_frontier(table: list[dict], path: Path) -> Path | None:
    """Average weight bits vs KL and vs perplexity recovery per model: uniform formats as points,
    mixed formats joined by a line, 95% CIs as error bars."""
    models = sorted({r["model"] for r in table})
    if not models:
        return None
    fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.6 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        rows = [r for r in table if r["model"] == model]
        for j, (key, label) in enumerate(
            (("kl", "KL from the baseline (nats/token)"), ("ppl_recovery", "perplexity recovery %"))
        ):
            ax = axes[i][j]
            for kind, style in (("uniform", "o"), ("mixed", "s-")):
                pts = sorted(
                    (r["bits"], r[key], r.get(f"{key}_ci"), r["format"])
                    for r in rows
                    if r["kind"] == kind and r.get(key) is not None
                )
                if not pts:
                    continue
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                err = [
                    [y - (p[2][0] if p[2] else y) for y, p in zip(ys, pts)],
                    [(p[2][1] if p[2] else y) - y for y, p in zip(ys, pts)],
                ]
                ax.errorbar(xs, ys, yerr=err, fmt=style, capsize=3, label=kind)
                for x, y, _, name in pts:
                    ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set_xlabel("average weight bits")
            ax.set_ylabel(label)
            ax.set_title(model, fontsize=9)
            ax.legend(fontsize=7)
    fig.suptitle("Mixed-precision frontier")
    return _save(fig, path)
