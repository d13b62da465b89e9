"""The report's PNG plots (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def task_differences(rows: list[dict], formats: list[str], path: Path) -> Path | None:
    """Score difference vs baseline per task, with its paired-bootstrap 95% CI."""
    tasks = [r for r in rows if r["kind"] == "task"]
    if not tasks or not formats:
        return None
    fig, axes = plt.subplots(1, len(formats), figsize=(3.2 * len(formats), 0.6 + 0.4 * len(tasks)), sharey=True, squeeze=False)
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
