"""The perf stage through the CLI on the tiny random Llama: `vllm serve` is started and stopped
around a real short GuideLLM run, results reach the ledger, MLflow and the report, a format whose
server fails is recorded with its class while the sweep goes on, and no process survives."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ours(run_dir: Path) -> list[str]:
    """Command lines of vllm serve / guidellm processes still alive (the test's run only)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        if state != "Z" and (
            ("vllm" in cmd and " serve " in cmd and "tiny-llama" in cmd) or "guidellm run" in cmd or "VLLM::" in cmd
        ):
            found.append(cmd[:200])
    return found


@pytest.fixture(scope="module")
def perf_run(tmp_path_factory, tiny_llama):
    run_dir = tmp_path_factory.mktemp("runs")
    faults = [{"at": "open_server", "match": "tiny-llama/int8", "fault": "server_unhealthy"}]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"QUANTGRID_FAULTS": json.dumps(faults), "QUANTGRID_FAULTS_DIR": str(run_dir / "faults")}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "sweep=tiny_perf", f"run_dir={run_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    return proc, run_dir / "tiny_perf"


def test_real_guidellm_run_against_vllm_serve(perf_run):
    proc, out = perf_run
    assert proc.returncode == 1, proc.stderr[-2000:]  # one format failed, recorded, the rest ran
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    (r,) = [r for r in recs if r.get("kind") == "perf"]
    assert (r["format"], r["task"]) == ("bf16", "tiny_chat.perf")
    m = r["metrics"]
    for level in ("sync", "c2"):  # 1 stream (synchronous) and continuous batching at 2
        assert m[f"{level}_requests_ok,none"] >= 1 and m[f"{level}_requests_errored,none"] == 0
        assert (
            m[f"{level}_output_tok_per_s,none"] > 0
            and 0 < m[f"{level}_ttft_ms_p50,none"] <= m[f"{level}_ttft_ms_p99,none"]
        )
    hw = r["provenance"]["hardware"]
    assert hw["accelerator"] == "cpu" and hw["cpu_count"] and r["provenance"]["devices"] == 1
    if (os.cpu_count() or 1) >= 2:  # server and load generator on different cores
        assert set(hw["server_cores"]).isdisjoint(hw["load_generator_cores"]) and hw["load_generator_cores"]
    raw = json.loads(Path(r["provenance"]["attachments"]["guidellm.json"]).read_text())
    for b in raw["benchmarks"]:  # exactly the scenario's token counts: EOS ignored
        assert (
            b["metrics"]["prompt_token_count"]["successful"]["min"]
            == b["metrics"]["prompt_token_count"]["successful"]["max"]
            == 16
        )
        assert (
            b["metrics"]["output_token_count"]["successful"]["min"]
            == b["metrics"]["output_token_count"]["successful"]["max"]
            == 8
        )


def test_failed_server_recorded_with_its_class(perf_run):
    _, out = perf_run
    db = sqlite3.connect(out / "ledger.db")
    rows = dict(((f, t), (s, c)) for f, t, s, c in db.execute("SELECT format, task, state, failure_class FROM cells"))
    assert rows == {
        ("bf16", "tiny_chat.perf"): ("done", None),
        ("int8", "tiny_chat.perf"): ("failed", "server_unhealthy"),
    }


def test_results_in_mlflow_and_report_and_no_process_left(perf_run):
    _, out = perf_run
    db = sqlite3.connect(out / "mlflow.db")
    keys = {k for (k,) in db.execute("select distinct key from metrics")}
    assert {"tiny_chat.perf/sync_request_latency_s_p50", "tiny_chat.perf/c2_output_tok_per_s"} <= keys
    assert list((out / "mlartifacts").rglob("perf/tiny_chat.perf/*-guidellm.json"))
    md = (out / "report" / "report.md").read_text()
    assert "Serving performance" in md and "Recommendation" in md and "CPU figures are CPU figures" in md
    assert (out / "report" / "perf_frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert _ours(out) == []
