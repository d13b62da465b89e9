"""The host probe and the capability table (torch-free: what the driver plans with)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quantgrid import capability
from quantgrid.capability import EMULATED, NATIVE, UNAVAILABLE, CapabilityError, Execution, host_for, resolve, scheme_of
from quantgrid.host import FORCE_ENV, X86_LEVELS, Host, HostError, cpu_level, probe

ROOT = Path(__file__).resolve().parents[2]
AVX2 = {"avx", "avx2", "fma", "sse4_2"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}


def test_cpu_level_follows_vllms_library_order():
    assert cpu_level(AVX2, "x86_64") == "avx2"
    assert cpu_level(AVX512, "x86_64") == "avx512"
    assert cpu_level(AVX512 | {"avx512_bf16"}, "x86_64") == "avx512_bf16"
    assert cpu_level(AVX512 | {"avx512_bf16", "amx_bf16", "amx_tile"}, "x86_64") == "amx"
    assert cpu_level({"avx512_bf16", "avx2", "fma"}, "x86_64") == "avx2"  # bf16 without AVX-512F is not a level
    assert cpu_level({"sse4_2"}, "x86_64") == "x86_64"
    assert cpu_level({"fp", "asimd", "bf16"}, "aarch64") == "aarch64"
    libs = {isa: Host("cpu", isa).vllm_library for isa in X86_LEVELS}
    assert libs == {
        "x86_64": "vllm._C_AVX2",
        "avx2": "vllm._C_AVX2",
        "avx512": "vllm._C_AVX512",
        "avx512_bf16": "vllm._C",
        "amx": "vllm._C",
    }
    assert (
        not Host("cpu", "avx512").native_bf16
        and Host("cpu", "avx512_bf16").native_bf16
        and Host("cuda", "sm90").native_bf16
    )


def test_forcing_a_lower_isa_only():
    native = probe({})
    assert not native.forced and native.device == "cpu"
    if native.isa == "aarch64":
        with pytest.raises(HostError):
            probe({FORCE_ENV: "avx2"})
        return
    forced = probe({FORCE_ENV: "avx2"})
    assert forced.isa == "avx2" and forced.vllm_library == "vllm._C_AVX2"
    assert forced.forced == (native.isa != "avx2")
    above = [lvl for lvl in X86_LEVELS if X86_LEVELS.index(lvl) > X86_LEVELS.index(native.isa)]
    for lvl in above:  # beyond this CPU: refused in one line
        with pytest.raises(HostError, match="beyond this CPU"):
            probe({FORCE_ENV: lvl})
    with pytest.raises(HostError, match="not an x86 level"):
        probe({FORCE_ENV: "avx9000"})


def _formats():
    for p in sorted((ROOT / "conf" / "format").glob("*.yaml")):
        d = yaml.safe_load(p.read_text())
        yield d["name"], d.get("recipe"), d.get("published"), d.get("scheme")


def test_every_shipped_format_has_a_scheme_and_a_mode_on_every_host():
    schemes = {name: scheme_of(name, r, p, s) for name, r, p, s in _formats()}
    assert schemes["bf16"] == "dense" and schemes["fp8"] == schemes["paper_fp8"] == schemes["nm_fp8"] == "w8a8-fp8"
    assert schemes["int8"] == schemes["paper_int8"] == schemes["nm_int8"] == "w8a8-int8"
    assert schemes["w4a16"] == schemes["paper_w4a16"] == schemes["nm_w4a16"] == "wna16-int"
    rows = capability.matrix()
    hosts = {r["host"] for r in rows}
    assert {
        "cpu:avx2",
        "cpu:avx512",
        "cpu:avx512_bf16",
        "cpu:amx",
        "cuda:sm80",
        "cuda:sm89",
        "cuda:sm90",
        "cuda:sm100",
    } <= hosts
    for scheme in set(schemes.values()):  # one row per (scheme, host), each with a source
        got = {r["host"] for r in rows if r["scheme"] == scheme}
        assert got == hosts, scheme
    assert all(r["source"] and r["runs"] and r["mode"] in (NATIVE, EMULATED, UNAVAILABLE) for r in rows)
    mode = {(r["scheme"], r["host"]): r["mode"] for r in rows}
    assert mode["wna16-int", "cpu:avx2"] == EMULATED  # _C_AVX2 has no cpu_gemm_wna16
    assert (
        mode["wna16-int", "cpu:avx512"]
        == mode["wna16-int", "cpu:avx512_bf16"]
        == mode["wna16-int", "cpu:amx"]
        == NATIVE
    )
    assert mode["w8a8-fp8", "cuda:sm80"] == UNAVAILABLE and mode["w8a8-fp8", "cuda:sm90"] == NATIVE


def test_dtype_per_format_and_host():
    avx2, avx512, bf16 = Host("cpu", "avx2"), Host("cpu", "avx512"), Host("cpu", "avx512_bf16")
    h100 = host_for("h100-80gb", avx2)
    assert h100.name == "cuda:sm90"
    # no bf16 hardware: float32 engines and calibration, except the W4A16 kernel (bf16 only)
    assert resolve("bf16", "dense", "bfloat16", avx2) == Execution(
        NATIVE,
        "float32",
        "float32",
        "cpu:avx2",
        "dense Linear (oneDNN matmul)",
        resolve("bf16", "dense", "bfloat16", avx2).source,
    )
    assert resolve("w4a16", "wna16-int", "bfloat16", avx2).dtype == "float32"
    assert resolve("w4a16", "wna16-int", "bfloat16", avx512).dtype == "bfloat16"
    assert resolve("w4a16", "wna16-int", "bfloat16", avx512).calibration_dtype == "float32"
    for host in (bf16, h100):
        for scheme in ("dense", "w8a8-int8", "wna16-int"):
            ex = resolve("f", scheme, "bfloat16", host)
            assert (ex.mode, ex.dtype, ex.calibration_dtype) == (NATIVE, "bfloat16", "bfloat16")
    # pins: emulated where a path exists (W8A8 keeps its kernel: a dense engine cannot quantize activations)
    assert resolve("w4a16", "wna16-int", "bfloat16", bf16, "emulated").mode == EMULATED
    assert resolve("int8", "w8a8-int8", "bfloat16", bf16, "emulated").mode == NATIVE
    assert resolve("w4a16", "wna16-int", "bfloat16", bf16, "auto", "float32").dtype == "float32"
    with pytest.raises(CapabilityError, match="cannot run native on cpu:avx2"):
        resolve("w4a16", "wna16-int", "bfloat16", avx2, "native")


def test_unavailable_and_unknown_are_one_line_errors():
    a100 = host_for("a100-80gb", Host("cpu", "avx2"))
    with pytest.raises(CapabilityError) as e:
        resolve("paper_fp8", "w8a8-fp8", "bfloat16", a100)
    assert "unavailable on cuda:sm80" in str(e.value) and "sm89" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CapabilityError, match="unknown GPU class"):
        host_for("tpu-v5", Host("cpu", "avx2"))
    with pytest.raises(CapabilityError, match="no row for NVFP4"):
        scheme_of("nvfp4", {"q": {"QuantizationModifier": {"scheme": "NVFP4"}}}, None, None)
    with pytest.raises(CapabilityError, match="must declare its scheme"):
        scheme_of("pub", None, {"repo": "x/y"}, None)
    cfg = {"weights": {"num_bits": 4, "type": "int"}}
    assert scheme_of("w4", {"m": {"GPTQModifier": {"config_groups": {"g": cfg}}}}, None, None) == "wna16-int"


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_plan_prints_and_records_the_host_and_each_formats_execution():
    host = probe()
    proc = _cli("plan", "sweep=tiny", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["host"]["name"] == host.name and out["host"]["vllm_library"] == host.vllm_library
    ex = out["execution"]["tiny-llama"]
    want = "native" if host.isa in ("avx512", "avx512_bf16", "amx") else "emulated"
    assert ex["w4a16"]["execution_mode"] == want and ex["bf16"]["execution_mode"] == "native"
    assert ex["bf16"]["dtype"] == ("bfloat16" if host.native_bf16 else "float32")
    text = _cli("plan", "sweep=tiny").stdout
    assert f"host {host.name}" in text and f"w4a16: {want}" in text


def test_forced_avx2_plans_w4a16_emulated_and_perf_refuses_it():
    forced = {FORCE_ENV: "avx2"}
    proc = _cli("plan", "sweep=tiny", "--json", env=forced)
    if probe().isa == "aarch64":
        assert proc.returncode == 2 and "not an x86 level" in proc.stderr
        return
    ex = json.loads(proc.stdout)["execution"]["tiny-llama"]
    assert ex["w4a16"]["execution_mode"] == "emulated" and ex["w4a16"]["dtype"] == "float32"
    # cell keys change with the execution (numerics change)
    keys = {c["format"]: c["key"] for c in json.loads(proc.stdout)["cells"] if c["task"] == "ppl_local"}
    pinned = json.loads(_cli("plan", "sweep=tiny", "--json", "engine.dtype=bfloat16", env=forced).stdout)
    assert keys["bf16"] != {c["format"]: c["key"] for c in pinned["cells"] if c["task"] == "ppl_local"}["bf16"]
    proc = _cli("plan", "sweep=tiny_perf", "sweep.formats=[bf16,w4a16]", env=forced)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "perf: format w4a16 of tiny-llama runs emulated on cpu:avx2" in proc.stderr
    proc = _cli("plan", "sweep=tiny", "engine.execution=native", env=forced)
    assert proc.returncode == 2 and "cannot run native on cpu:avx2" in proc.stderr


def test_a_format_the_accelerator_cannot_run_is_refused_at_plan_time():
    proc = _cli("plan", "sweep=paper", "sweep.engine.accelerator=a100-80gb")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "paper_fp8 (w8a8-fp8) is unavailable on cuda:sm80" in proc.stderr
    proc = _cli("plan", "sweep=paper_perf_a100")  # the A100 sweep leaves FP8 out: plans
    assert proc.returncode == 0, proc.stderr
