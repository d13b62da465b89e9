"""An external-scorer task end to end: a sweep with an Arena-Hard-style task (added as config only,
through --conf-dir) answers through each format's vLLM engine in a Ray actor on tiny-llama; a local
OpenAI-compatible judge gives the verdicts; scores reach the ledger, the per-sample store (with
the judge's verdicts) and the paired report, and the judge's key is never recorded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tests.support.judge_server import SYSTEM, TEMPLATE, FakeJudge, write_arena

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ["bf16", "fp8"]


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("judge")
    judge = FakeJudge(key="sk-e2e-secret")
    # tiny-llama writes random text (never "GOOD"): the judge prefers a GOOD baseline strongly and
    # calls the rest ties, so every format scores (0 + 1 + 1) / (6 + 2 + 2) = 0.2.
    q, b = write_arena(
        tmp,
        {"a": "Plan a trip.", "b": "Explain DNS.", "c": "Write a limerick."},
        {"a": "GOOD plan", "b": "plain", "c": "plain"},
    )
    conf = tmp / "conf"
    (conf / "task").mkdir(parents=True)
    (conf / "sweep").mkdir()
    (conf / "task" / "arena_tiny.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "arena_tiny",
                "metric": "score,none",
                "higher_is_better": True,
                "apply_chat_template": True,
                "scorer": {
                    "kind": "arena_hard",
                    "questions": {"path": str(q)},
                    "baseline": {"name": "base", "path": str(b)},
                    "judge": {
                        "base_url": judge.url,
                        "model": "judge-e2e",
                        "api_key_env": "E2E_JUDGE_KEY",
                        "system_prompt": SYSTEM,
                        "prompt_template": TEMPLATE,
                        "retries": 0,
                        "concurrency": 4,
                    },
                    "generation": {"max_gen_toks": 16, "temperature": 0},
                },
                "cost": {"samples": 3, "prompt_tokens": 20, "output_tokens": 16},
            }
        )
    )
    (conf / "sweep" / "judge_tiny.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "judge_tiny",
                "models": ["tiny-llama"],
                "formats": FORMATS,
                "tasks": ["arena_tiny"],
                "seeds": [1234],
                "baseline": "bf16",
            }
        )
    )
    run_dir = tmp / "runs"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"E2E_JUDGE_KEY": "sk-e2e-secret"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "run",
            "--conf-dir",
            str(conf),
            "sweep=judge_tiny",
            f"run_dir={run_dir}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    yield proc, run_dir / "judge_tiny", judge
    judge.close()


def test_judged_task_scores_every_format(judged_run):
    proc, out, judge = judged_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    got = {r["format"]: r for r in recs if r["task"] == "arena_tiny"}
    assert set(got) == set(FORMATS)
    for r in got.values():
        assert r["metrics"]["score,none"] == pytest.approx(0.2) and r["metrics"]["invalid_games,none"] == 0
        assert r["num_samples"] == 3 and r["provenance"]["task_config_hash"]
        df = pd.read_parquet(r["samples_path"])
        assert list(df["num_score"]) == [0.0, 1.0, 1.0] and list(df["den_score"]) == [6.0, 2.0, 2.0]
        assert json.loads(df["extra"][0])["verdicts"] == ["A>>B", "B>>A"]  # the GOOD baseline won both games
        assert df["target"][0] == "GOOD plan" and df["response"].str.len().gt(0).all()
    assert len(judge.requests) == 2 * 3 * len(FORMATS) and set(judge.auth) == {"Bearer sk-e2e-secret"}


def test_report_pairs_the_ratio_metric_and_key_is_nowhere(judged_run):
    proc, out, _ = judged_run
    rep = json.loads((out / "report" / "report.json").read_text())
    (row,) = [r for r in rep["rows"] if r["kind"] == "task" and r["name"] == "arena_tiny"]
    assert row["baseline"] == pytest.approx(0.2) and row["formats"]["fp8"]["recovery"] == pytest.approx(100.0)
    assert row["baseline_ci"] == [0.0, 0.5]  # pooled wins / weight per resample: 0 (only "a") to 2/4
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".jsonl", ".json", ".parquet", ".db", ".log", ".yaml", ".txt"):
            assert b"sk-e2e-secret" not in p.read_bytes(), p
