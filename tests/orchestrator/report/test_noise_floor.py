"""The noise floor in the report: each format's paired difference read against the baseline's
rerun (same documents, other batches), from per-sample files with known outcomes."""

import numpy as np
import pytest
import pandas as pd

from orchestrator.report.paper import build, to_markdown, within_noise_floor
from orchestrator.store.results import samples_file


def _write(run_dir, fmt, values):
    path = samples_file(run_dir, "m", fmt, "t", f"key-{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"doc_id": np.arange(len(values)), "m_acc": np.asarray(values, float)}).to_parquet(path)
    return {"model": "m", "format": fmt, "task": "t", "cell_key": f"key-{fmt}"}


def test_formats_are_read_against_the_reruns_flips_and_difference(tmp_path):
    base = np.array([1] * 60 + [0] * 40)
    rerun = base.copy()
    rerun[[0, 99]] = rerun[[0, 99]] ^ 1  # one correct->wrong, one wrong->correct: difference 0
    lossy = base.copy()
    lossy[:10] = 0  # ten correct->wrong
    results = [
        _write(tmp_path, "bf16", base),
        _write(tmp_path, "bf16_rerun", rerun),
        _write(tmp_path, "fp8", base),
        _write(tmp_path, "int8", lossy),
    ]
    tasks = {"t": {"metric": "acc,none", "higher_is_better": True, "chance": None}}
    formats = ["bf16", "fp8", "int8", "bf16_rerun"]
    (row,) = build(results, tmp_path, "bf16", tasks, {}, formats, resamples=200, noise_floor="bf16_rerun")
    assert row["noise_floor"] == {"diff": 0.0, "discordant": (1, 1)}
    assert row["formats"]["fp8"]["within_noise_floor"] is True
    assert row["formats"]["int8"]["within_noise_floor"] is False
    assert row["formats"]["int8"]["discordant"] == (10, 0) and row["formats"]["int8"]["diff"] == pytest.approx(-0.1)
    assert "within_noise_floor" not in row["formats"]["bf16_rerun"]
    md = to_markdown([row], "bf16", formats, {})
    assert "| t | fp8 | 100 |" in md and "| within |" in md and "| outside |" in md and "(the floor)" in md
    (plain,) = build(results, tmp_path, "bf16", tasks, {}, formats, resamples=200)  # no floor asked for
    assert "noise_floor" not in plain and "within_noise_floor" not in plain["formats"]["fp8"]


def test_within_means_no_larger_difference_and_no_more_flips():
    floor = {"diff": 0.01, "discordant": (3, 2)}
    assert within_noise_floor({"diff": -0.01, "discordant": (2, 3)}, floor)
    assert not within_noise_floor({"diff": 0.0, "discordant": (4, 4)}, floor)  # same score, more flips
    assert not within_noise_floor({"diff": 0.02, "discordant": (2, 0)}, floor)
    assert within_noise_floor({"diff": 0.005, "discordant": None}, {"diff": 0.01, "discordant": None})
