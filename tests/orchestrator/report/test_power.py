"""Power planning (orchestrator/report/power.py) against Connor's (1987) formula by hand, and on
per-sample files of a run."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from orchestrator.report.power import documents_needed, plan_power
from orchestrator.store.results import samples_file


def test_documents_needed_is_connors_formula():
    p, d, drop = 0.6, 0.1, 0.05  # delta = 0.03
    delta = drop * p
    want = (norm.ppf(0.975) * math.sqrt(d) + norm.ppf(0.8) * math.sqrt(d - delta**2)) ** 2 / delta**2
    assert documents_needed(p, d, drop) == math.ceil(want) == 870
    assert documents_needed(p, d, 0.10) < documents_needed(p, d, 0.05)  # a bigger drop needs fewer
    assert documents_needed(p, 0.2, drop) > documents_needed(p, 0.1, drop)  # more disagreement, more
    assert documents_needed(p, d, drop, power=0.9) > documents_needed(p, d, drop)
    with pytest.raises(ValueError):
        documents_needed(0.0, d, drop)


def test_plan_power_reads_a_runs_samples(tmp_path, monkeypatch):
    base = np.array([1] * 60 + [0] * 40, float)
    fmt = base.copy()
    fmt[:8] = 0  # 8% discordant
    lines = []
    for name, values in (("bf16", base), ("int8", fmt)):
        path = samples_file(tmp_path, "m", name, "mmlu_local", f"k-{name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"doc_id": np.arange(100), "m_acc": values}).to_parquet(path)
        lines.append(json.dumps({"model": "m", "format": name, "task": "mmlu_local", "cell_key": f"k-{name}"}))
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    out = plan_power(tmp_path, [0.01, 0.05], 0.05, 0.8)
    r = out["tasks"]["mmlu_local"]
    assert r["p_base"] == 0.6 and r["discordance"] == pytest.approx(0.08) and r["documents"] == 100
    assert r["documents_needed"] == {
        "0.01": documents_needed(0.6, 0.08, 0.01),
        "0.05": documents_needed(0.6, 0.08, 0.05),
    }


def test_plan_cli_prints_the_power_section_and_refuses_a_bad_pilot(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]

    def plan(*args):
        cmd = [sys.executable, "-m", "orchestrator.cli", "plan", "sweep=tiny", *args]
        return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)

    bad = plan("--pilot", str(tmp_path))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "no results.jsonl" in bad.stderr
    test_plan_power_reads_a_runs_samples(tmp_path, None)
    ok = plan("--pilot", str(tmp_path), "--drop", "0.05", "--json")
    assert ok.returncode == 0, ok.stderr
    power = json.loads(ok.stdout)["power"]
    assert power["tasks"]["mmlu_local"]["documents_needed"] == {"0.05": documents_needed(0.6, 0.08, 0.05)}
    worse = plan("--pilot", str(tmp_path), "--power", "1.5")
    assert worse.returncode == 2 and "must each be in (0, 1)" in worse.stderr
