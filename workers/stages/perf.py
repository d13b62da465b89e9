"""Performance stage: serve a checkpoint with `vllm serve`, load it with GuideLLM per scenario.

One server start per (model, format) serves every scenario. The server runs on 127.0.0.1 in its
own process group with a parent-death signal, so it never outlives the actor (stopped on close,
on failure, and by the kernel if the actor is killed). GuideLLM 0.8.1 runs as a subprocess per
scenario (its CLI is `guidellm run` with JSON-valued options; it spawns worker processes, which
must not happen inside the Ray actor's interpreter): synthetic prompts of exactly the scenario's
token counts, the checkpoint's own tokenizer, `/v1/completions` (no chat template added), and
GuideLLM sets `ignore_eos` + `max_tokens` so every request generates exactly `output_tokens`.

Profile: `concurrent` at each level of LoadSettings.streams. Level 1 is the synchronous profile
(one request at a time: TTFT, ITL, request latency); higher levels are continuous batching
(requests/s, output tokens/s, with the latency at each point). On a CPU the server and the load
generator get different cores.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from quantgrid.failures import FailureClass
from quantgrid.runtime import worker_env
from quantgrid.settings import ServeSettings
from quantgrid.types import EngineSettings, FormatSpec, LoadSettings, ModelSpec, PerfScenario


class PerfError(RuntimeError):
    """A perf failure with its class (the ledger's failure_class)."""

    failure_class = FailureClass.PERF_FAILED.value


class ServerUnhealthy(PerfError):
    failure_class = FailureClass.SERVER_UNHEALTHY.value


class PortInUse(PerfError):
    failure_class = FailureClass.PORT_IN_USE.value


class LoadGeneratorFailed(PerfError):
    failure_class = FailureClass.LOAD_GENERATOR_FAILED.value


def _child_setup(cores: set[int] | None):
    """preexec for the server and the load generator: own process group (stopped as a whole),
    SIGTERM when the actor dies (even kill -9), pinned to `cores` when given."""

    def preexec() -> None:
        os.setpgrp()
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass
        if cores:
            os.sched_setaffinity(0, cores)

    return preexec


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def split_cores() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, load generator cores): the load generator gets the last core when there
    are at least two, so it does not steal time from the engine it measures."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return set(cores[:-1]), {cores[-1]}


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _reason(log: str) -> str:
    """The most telling line of a failed server's log."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for needle in ("Address already in use", "Error", "error:", "Exception"):
        hits = [ln for ln in lines if needle in ln]
        if hits:
            return hits[-1][-300:]
    return lines[-1][-300:] if lines else "no output"


class Server:
    """`vllm serve` on 127.0.0.1 for one checkpoint; a context manager that always stops it."""

    def __init__(
        self,
        checkpoint: str,
        model: ModelSpec,
        fmt: FormatSpec,
        settings: EngineSettings,
        port: int = 0,
        start_timeout_s: float = ServeSettings.start_timeout_s,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
        command: list[str] | None = None,
    ):
        if port and not port_free(port):
            raise PortInUse(
                f"port {port} on 127.0.0.1 is already in use (set perf.server.port to a free port, or 0 to pick one)"
            )
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.checkpoint = checkpoint
        self.served_name = f"{model.name}-{fmt.name}"
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="quantgrid-serve-")) / "vllm-serve.log"
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        gpu = settings.accelerator != "cpu"
        args = [
            "serve",
            checkpoint,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--served-model-name",
            self.served_name,
            "--dtype",
            settings.dtype if settings.dtype not in ("", "auto") else (fmt.dtype or model.dtype),
            "--max-model-len",
            str(model.max_model_len),
            "--seed",
            str(settings.seed),
            "--tensor-parallel-size",
            str(model.tensor_parallel_size),
        ]
        if model.pipeline_parallel_size > 1:
            args += ["--pipeline-parallel-size", str(model.pipeline_parallel_size)]
        if os.environ.get("QUANTGRID_EXECUTOR"):  # multi-node engine: vLLM's Ray executor (placement.py)
            args += ["--distributed-executor-backend", os.environ["QUANTGRID_EXECUTOR"]]
        if settings.enforce_eager:
            args.append("--enforce-eager")
        if settings.kv_cache_dtype not in ("", "auto"):  # FP8 KV cache (quantgrid/capability.py kv-fp8)
            args += ["--kv-cache-dtype", settings.kv_cache_dtype]
        vllm = command or [str(Path(sys.executable).with_name("vllm"))]
        env = {**os.environ, **worker_env(kv_cache_gb=settings.kv_cache_gb, gpu=gpu)}
        self.server_cores, self.client_cores = split_cores() if not gpu else (None, None)
        # vLLM-CPU's automatic thread binding follows the process's affinity (set in preexec).
        self.cmd = [*vllm, *args, *(extra_args or [])]
        t0 = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_child_setup(self.server_cores),
                cwd=self.log_path.parent,
            )
        try:
            self._wait_healthy(start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                log = _tail(self.log_path)
                cls = PortInUse if "Address already in use" in log else ServerUnhealthy
                raise cls(
                    f"vllm serve exited with code {rc} before becoming healthy: {_reason(log)} (log: {self.log_path})"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise ServerUnhealthy(
            f"vllm serve on port {self.port} not healthy within {timeout_s:g}s "
            f"(perf.server.start_timeout_s); last log line: {_reason(_tail(self.log_path))} (log: {self.log_path})"
        )

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the server's process group (API server, engine core, workers), then SIGKILL."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the group (children that ignored SIGTERM)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def guidellm_command(server: Server, scenario: PerfScenario, load: LoadSettings, out: Path) -> list[str]:
    guidellm = str(Path(sys.executable).with_name("guidellm"))
    streams = list(load.streams)
    profile = {"kind": "concurrent", "streams": streams[0]}
    if load.warmup_requests:
        profile["warmup"] = {"value": load.warmup_requests, "mode": "requests"}
    cmd = [
        guidellm,
        "run",
        "--backend",
        json.dumps(
            {
                "kind": "openai_http",
                "target": server.url,
                "model": server.served_name,
                "request_format": "/v1/completions",
            }
        ),
        "--tokenizer",
        json.dumps({"kind": "huggingface_auto", "model": server.checkpoint}),
        "--data",
        json.dumps(
            {"kind": "synthetic_text", "prompt_tokens": scenario.prompt_tokens, "output_tokens": scenario.output_tokens}
        ),
        "--profile",
        json.dumps(profile),
        "--constraint",
        json.dumps({"kind": "max_requests", "count": load.max_requests}),
        "--constraint",
        json.dumps({"kind": "max_duration", "seconds": load.max_seconds}),
        "--seed",
        json.dumps({"kind": "static", "value": load.seed}),
        "--output",
        json.dumps({"kind": "json", "path": str(out)}),
        "--disable-console",
    ]
    if len(streams) > 1:
        cmd += ["--override", "profile.streams", ",".join(map(str, streams))]
    return cmd


def run_load(
    server: Server, scenario: PerfScenario, load: LoadSettings, workdir: Path, command: list[str] | None = None
) -> tuple[dict[str, float], str, float]:
    """One GuideLLM run of `scenario` against `server`: (metrics, raw JSON report, seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)  # a clean cwd: GuideLLM also reads settings from ./.env
    out = workdir / f"{scenario.name}-guidellm.json"
    out.unlink(missing_ok=True)
    cmd = command or guidellm_command(server, scenario, load, out)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GUIDELLM__MAX_WORKER_PROCESSES": str(max(1, min(len(server.client_cores or os.sched_getaffinity(0)), 4))),
        "GUIDELLM__LOGGING__CONSOLE_LOG_LEVEL": "WARNING",
    }
    timeout = 120 + len(load.streams) * (load.max_seconds + 60)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_child_setup(server.client_cores),
        )
    except subprocess.TimeoutExpired:
        raise LoadGeneratorFailed(f"guidellm ran past {timeout:g}s on scenario {scenario.name}") from None
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not out.is_file():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise LoadGeneratorFailed(
            f"guidellm exited with code {proc.returncode} on scenario {scenario.name}: "
            f"{(lines[-1] if lines else 'no output').strip()[-300:]}"
        )
    text = out.read_text()
    return summarize(json.loads(text), scenario.name), text, seconds


def _level_name(streams: int) -> str:
    return "sync" if streams == 1 else f"c{streams}"


def summarize(report: dict[str, Any], scenario: str = "") -> dict[str, float]:
    """GuideLLM's report -> flat metrics per level: sync_* (1 stream) and c<N>_* (N streams).
    GuideLLM exits 0 even when every request failed: a level without one successful request is a
    load-generator failure, never a row of zeros."""
    out: dict[str, float] = {}
    for b in report.get("benchmarks", []):
        strategy, m = b["config"]["strategy"], b["metrics"]
        level = _level_name(int(strategy.get("streams") or 1)) if strategy.get("type_") != "synchronous" else "sync"
        totals = m["request_totals"]
        if not totals.get("successful"):
            errs = [r.get("info", {}).get("error") for r in (b.get("requests") or {}).get("errored", [])]
            cut = totals.get("incomplete", 0)
            raise LoadGeneratorFailed(
                f"scenario {scenario} at {level}: 0 of {totals.get('total', 0)} requests succeeded "
                f"({totals.get('errored', 0)} errored, {cut} cut off by the level's time limit)"
                + (f"; first error: {str(errs[0])[:200]}" if errs and errs[0] else "")
                + ("; one request takes longer than sweep.perf.load.max_seconds: raise it" if cut and not errs else "")
            )
        ok = lambda k: m[k]["successful"]  # noqa: E731
        row = {
            "requests_ok": totals["successful"],
            "requests_errored": totals.get("errored", 0),
            "requests_per_s": ok("requests_per_second")["mean"],
            "output_tok_per_s": ok("output_tokens_per_second")["mean"],
            "concurrency": ok("request_concurrency")["mean"],
        }
        for name, key in (
            ("ttft_ms", "time_to_first_token_ms"),
            ("itl_ms", "inter_token_latency_ms"),
            ("request_latency_s", "request_latency"),
        ):
            d = ok(key)
            row |= {
                f"{name}_p50": d["median"],
                f"{name}_p90": d["percentiles"]["p90"],
                f"{name}_p99": d["percentiles"]["p99"],
            }
        out |= {f"{level}_{k},none": float(v) for k, v in row.items()}
    if not out:
        raise LoadGeneratorFailed(f"guidellm wrote no benchmarks for scenario {scenario}")
    return out
