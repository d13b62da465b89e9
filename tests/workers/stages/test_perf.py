"""The perf stage's failure paths, each a clear message with its class and no process left
behind (the real vllm serve + GuideLLM run is in tests/e2e/test_perf_stage.py)."""

import json
import os
import socket
import sys
import time
from dataclasses import replace

import pytest

from quantgrid.types import EngineSettings, FormatSpec, LoadSettings, ModelSpec, PerfScenario
from workers.stages.perf import LoadGeneratorFailed, PortInUse, Server, ServerUnhealthy, run_load, summarize

MODEL = ModelSpec(name="m", source={"kind": "tiny_random"}, max_model_len=256)
FMT = FormatSpec(name="bf16", label="BF16")
SCENARIO = PerfScenario(name="s", prompt_tokens=16, output_tokens=8)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_server_that_never_becomes_healthy_is_stopped(tmp_path):
    t0 = time.time()
    with pytest.raises(ServerUnhealthy, match=r"not healthy within 2s") as e:
        Server(
            "/nonexistent",
            MODEL,
            FMT,
            EngineSettings(),
            start_timeout_s=2,
            log_path=tmp_path / "serve.log",
            command=[sys.executable, "-c", "import time; print('loading', flush=True); time.sleep(600)"],
        )
    assert "loading" in str(e.value) and time.time() - t0 < 30
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    assert not any("time.sleep(600)" in open(f"/proc/{p}/cmdline").read().replace("\0", " ") for p in pids if _alive(p))


def test_server_that_exits_names_its_error(tmp_path):
    with pytest.raises(ServerUnhealthy, match=r"exited with code 3 before becoming healthy: .*Error: no such model"):
        Server(
            "/nonexistent",
            MODEL,
            FMT,
            EngineSettings(),
            start_timeout_s=30,
            log_path=tmp_path / "serve.log",
            command=[sys.executable, "-c", "import sys; print('ValueError: no such model'); sys.exit(3)"],
        )


def test_an_fp8_kv_cache_reaches_vllm_serve(tmp_path):
    """engine.kv_cache_dtype (or a format's kv_cache_scheme) is a `vllm serve` argument; auto is not passed."""
    echo = [sys.executable, "-c", "import sys; print('args:', ' '.join(sys.argv[1:])); sys.exit(3)"]
    for kv, want in (("fp8", "--kv-cache-dtype fp8"), ("auto", None)):
        with pytest.raises(ServerUnhealthy) as e:
            Server(
                "/nonexistent",
                MODEL,
                FMT,
                EngineSettings(kv_cache_dtype=kv),
                start_timeout_s=30,
                log_path=tmp_path / kv,
                command=echo,
            )
        assert ("--kv-cache-dtype" in str(e.value)) == bool(want) and (want or "args:") in str(e.value)


def test_port_already_in_use_fails_before_anything_starts(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} on 127.0.0.1 is already in use"):
            Server(
                "/nonexistent",
                MODEL,
                FMT,
                EngineSettings(),
                port=port,
                log_path=tmp_path / "serve.log",
                command=[sys.executable, "-c", "raise SystemExit('must not start')"],
            )
    assert not (tmp_path / "serve.log").exists()


class _Fake:
    url, served_name, checkpoint, client_cores = "http://127.0.0.1:9", "m", "/nonexistent", None


def test_load_generator_crash_is_one_line(tmp_path):
    with pytest.raises(LoadGeneratorFailed, match=r"guidellm exited with code 2 on scenario s: RuntimeError: boom"):
        run_load(
            _Fake(),
            SCENARIO,
            LoadSettings(),
            tmp_path,
            command=[
                sys.executable,
                "-c",
                "import sys; sys.stderr.write('Traceback\\nRuntimeError: boom\\n'); sys.exit(2)",
            ],
        )


def _report(ok: int, errored: int = 0) -> dict:
    d = {"mean": 1.0, "median": 1.0, "percentiles": {"p90": 2.0, "p99": 3.0}}
    metrics = {
        k: {"successful": d}
        for k in (
            "requests_per_second",
            "output_tokens_per_second",
            "request_concurrency",
            "time_to_first_token_ms",
            "inter_token_latency_ms",
            "request_latency",
        )
    }
    metrics["request_totals"] = {"successful": ok, "errored": errored, "total": ok + errored}
    bench = lambda n: {
        "config": {"strategy": {"type_": "concurrent", "streams": n}},
        "metrics": metrics,  # noqa: E731
        "requests": {"errored": [{"info": {"error": "HTTPStatusError 500"}}] if errored else []},
    }
    return {"benchmarks": [bench(1), bench(4)]}


def test_guidellm_report_flattened_per_level_and_all_failed_is_an_error():
    m = summarize(_report(5), "s")
    assert m["sync_request_latency_s_p50,none"] == 1.0 and m["c4_ttft_ms_p99,none"] == 3.0
    assert m["sync_requests_ok,none"] == 5 and set(k.split("_")[0] for k in m) == {"sync", "c4"}
    # GuideLLM exits 0 when every request failed: that is a failure, never a row of zeros
    with pytest.raises(
        LoadGeneratorFailed,
        match=r"at sync: 0 of 3 requests succeeded \(3 errored, 0 cut off .*\); first error: HTTPStatusError 500",
    ):
        summarize(_report(0, 3), "s")


def test_guidellm_command_is_json_per_option():
    from workers.stages.perf import guidellm_command

    cmd = guidellm_command(
        _Fake(), SCENARIO, replace(LoadSettings(), streams=(1, 2, 8)), tmp := __import__("pathlib").Path("/x.json")
    )
    data = json.loads(cmd[cmd.index("--data") + 1])
    assert data == {"kind": "synthetic_text", "prompt_tokens": 16, "output_tokens": 8}
    assert json.loads(cmd[cmd.index("--backend") + 1])["request_format"] == "/v1/completions"
    assert cmd[cmd.index("--override") + 1 : cmd.index("--override") + 3] == ["profile.streams", "1,2,8"]
    assert json.loads(cmd[cmd.index("--output") + 1]) == {"kind": "json", "path": str(tmp)}
