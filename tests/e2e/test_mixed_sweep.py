"""Mixed precision on the real stack (tiny Llama through the `quantgrid` CLI: Ray actors,
llmcompressor, vLLM-CPU, lm-eval, MLflow): the sensitivity stage measures every layer group, the
driver solves each budget's assignment, the mixed checkpoint quantizes exactly the groups it was
given (the rest in `ignore`, served dense by vLLM), every mix is scored like a format, the report
draws the heatmap and the frontier, MLflow holds their figures, and a second run redoes nothing."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "sweep=tiny",
    "sweep.formats=[w4a16_rtn,int8_rtn]",
    "sweep.tasks=[nexttoken_local,ppl_local]",
    "sweep.similarity.tasks=[]",
    # the example: per group W4A16, W8A8 or BF16
    "+sweep.mixed={candidates: [w4a16_rtn, int8_rtn, bf16], budgets: [6], budgets_gb: [0.0008]}",
]


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    return out.stdout


def _group_of(module: str) -> str:
    """The layer group (workers/stages/sensitivity.py: vLLM's fused Linears) a Linear belongs to."""
    from workers.stages.sensitivity import FUSED

    parent, _, leaf = module.rpartition(".")
    return f"{parent}.{FUSED.get(leaf, leaf)}"


def test_sensitivity_mixes_and_frontier_on_the_real_stack(tmp_path, tiny_llama):
    _cli("run", *ARGS, f"run_dir={tmp_path}")
    run = tmp_path / "tiny"
    with sqlite3.connect(run / "ledger.db") as db:
        cells = {(f, t): st for f, t, st in db.execute("SELECT format, task, state FROM cells")}
    assert set(cells.values()) == {"done"}
    assert cells[("w4a16_rtn", "sensitivity")] == cells[("int8_rtn", "sensitivity")] == "done"
    for mix in ("mixed-6b", "mixed-0.0008gb"):
        assert cells[(mix, "nexttoken_local")] == cells[(mix, "ppl_local")] == "done"

    arts = {json.loads(line)["stage"]: json.loads(line) for line in (run / "artifacts.jsonl").read_text().splitlines()}
    used = set()
    for mix in ("mixed-6b", "mixed-0.0008gb"):
        solved = json.loads((run / "mixed" / "tiny-llama" / f"{mix}.json").read_text())
        budget = solved["budget_bits"]  # 0.8 MB: the Linears' bits once the embeddings take theirs at 16
        if mix.endswith("gb"):
            assert solved["budget_gb"] == 0.0008 and solved["size_gb"] <= 0.0008 + 1e-12 and budget > 6
        groups = solved["assignment"]
        assert len(groups) == 8 and {g["module"] for g in groups} == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
        assert 4.125 <= solved["bits"] <= budget and sum(solved["groups"].values()) == 8
        used |= {g["format"] for g in groups}
        # the checkpoint quantizes each group with its candidate's scheme; BF16 groups are in
        # `ignore`, which vLLM serves dense
        qcfg = json.loads((Path(arts[f"quantize/tiny-llama/{mix}"]["path"]) / "config.json").read_text())[
            "quantization_config"
        ]
        bits_of = {t: c["weights"]["num_bits"] for c in qcfg["config_groups"].values() for t in c["targets"]}
        dynamic = {t for c in qcfg["config_groups"].values() if c.get("input_activations") for t in c["targets"]}
        for g in groups:
            members = [m for m in set(bits_of) | set(qcfg["ignore"]) if _group_of(m) == g["name"]]
            assert members, g
            if g["format"] == "bf16":
                assert all(m in qcfg["ignore"] and m not in bits_of for m in members), g
            else:
                want = 4 if g["format"] == "w4a16_rtn" else 8
                assert all(bits_of.get(m) == want for m in members), g
                assert all((m in dynamic) == (g["format"] == "int8_rtn") for m in members), g
    assert len(used) >= 2  # the budgets mix candidates, not one uniform format
    # a larger budget can only lower the predicted KL (every 6-bit assignment fits in the 0.8 MB one)
    six = json.loads((run / "mixed" / "tiny-llama" / "mixed-6b.json").read_text())
    gb = json.loads((run / "mixed" / "tiny-llama" / "mixed-0.0008gb.json").read_text())
    assert gb["predicted_kl"] <= six["predicted_kl"]

    report = json.loads((run / "report" / "report.json").read_text())
    sens = {s["format"]: s for s in report["sensitivity"]}
    assert set(sens) == {"w4a16_rtn", "int8_rtn"}
    assert all(len(s["groups"]) == 8 and all(g["kl"] >= 0 for g in s["groups"]) for s in sens.values())
    rows = {r["format"]: r for r in report["frontier"]}
    assert set(rows) == {"bf16", "w4a16_rtn", "int8_rtn", "mixed-6b", "mixed-0.0008gb"}
    assert rows["bf16"]["bits"] == 16.0 and rows["w4a16_rtn"]["bits"] == 4.125 and rows["int8_rtn"]["bits"] == 8.0
    for mix in ("mixed-6b", "mixed-0.0008gb"):
        r = rows[mix]
        assert r["kind"] == "mixed" and r["reference"] == "w4a16_rtn"
        assert r["kl"] is not None and len(r["kl_vs_ref_ci"]) == 2 and r["ppl_recovery"] is not None
        assert r["ppl_vs_ref_ci"][0] <= r["ppl_vs_ref"] <= r["ppl_vs_ref_ci"][1]
    assert (run / "report" / "sensitivity_heatmap.png").stat().st_size > 0
    assert (run / "report" / "frontier.png").stat().st_size > 0
    md = (run / "report" / "report.md").read_text()
    assert "### Layer-group sensitivity" in md and "### Mixed-precision frontier" in md

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{run / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["quantgrid/tiny"], output_format="list")
    keys = {k for r in runs for k in r.data.metrics}
    assert {"frontier/tiny-llama/mixed-6b/bits", "frontier/tiny-llama/mixed-6b/kl_vs_ref"} <= keys
    assert "sensitivity/tiny-llama/w4a16_rtn/kl_sum" in keys

    again = _cli("run", *ARGS, f"run_dir={tmp_path}")  # every cell is in the ledger: nothing starts
    assert "▶" not in again
