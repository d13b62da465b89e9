"""`make bench BENCH=mixed`: the mixed-precision figures on the embedded SmolLM2-135M.

Runs `quantgrid run sweep=demo_mixed` into a fresh run folder (so the sensitivity stage is measured,
not read back from a ledger; checkpoints already in the cache are reused) and prints one JSON line:
the sensitivity stage's wall (its base-model load and its cell), the groups that dominate it,
and per format of the frontier its average weight bits, the predicted KL (summed sensitivities),
the measured KL with its 95% CI, the paired KL difference from uniform W4A16 with its CI, the
perplexity recovery with its CI and the paired perplexity difference; and whether a mix of at
most 5 bits beats uniform W4A16 by more than its CI (the whole CI of the KL difference below 0).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="qg-bench-mixed-"))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "sweep=demo_mixed", f"run_dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    run = run_dir / "demo_mixed"
    report = json.loads((run / "report" / "report.json").read_text())
    with sqlite3.connect(run / "ledger.db") as db:
        seconds = db.execute("SELECT seconds FROM cells WHERE task = 'sensitivity' AND state = 'done'").fetchone()
    load = re.search(r"sensitivity/\S+: base model and its held-out log-probs loaded in ([0-9.]+)s", proc.stdout)
    (sens,) = report["sensitivity"]
    top = sorted(sens["groups"], key=lambda g: -g["kl"])[:5]
    rows = report["frontier"]
    keep = ("bits", "predicted_kl", "kl", "kl_ci", "kl_vs_ref", "kl_vs_ref_ci", "ppl_recovery", "ppl_recovery_ci")
    keep += ("ppl_vs_ref", "ppl_vs_ref_ci", "groups")
    beats = [
        r["format"]
        for r in rows
        if r["kind"] == "mixed" and r["bits"] <= 5.0 + 1e-9 and r.get("kl_vs_ref_ci") and r["kl_vs_ref_ci"][1] < 0
    ]
    print(
        json.dumps(
            {
                "wall_s": round(wall, 1),
                "sensitivity_s": round(float(seconds[0]) if seconds else float("nan"), 1),
                "sensitivity_load_s": float(load.group(1)) if load else None,
                "groups": len(sens["groups"]),
                "kl_sum": round(sum(g["kl"] for g in sens["groups"]), 4),
                "top_groups": {g["name"]: round(g["kl"], 4) for g in top},
                "frontier": {r["format"]: {k: r.get(k) for k in keep if r.get(k) is not None} for r in rows},
                "mixed_at_most_5_bits_beating_w4a16_beyond_ci": beats,
                "report": str(run / "report"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
