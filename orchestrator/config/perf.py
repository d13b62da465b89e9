"""The sweep's `perf:` section: serving scenarios (conf/perf/NAME.yaml), how GuideLLM loads the
server, and what the recommendation weighs. Every check happens here, before any server starts,
and names the field it rejects.

    perf:
      scenarios: [code_completion, rag]          # conf/perf/*.yaml: prompt/output token counts
      load: {streams: [1, 4], max_requests: 8, max_seconds: 30, warmup_requests: 1, seed: 42}
      server: {port: 0, start_timeout_s: 600, extra_args: []}     # port 0 = pick a free one
      price_per_hour: {cpu: 0.10, h100-80gb: 3.0}  # $ per device-hour (per GPU on GPUs)
      latency_limits: {ttft_ms_p99: 2000, itl_ms_p99: 200}       # async: levels within these
      recovery_floors: [99, 97]                  # accuracy recovery a recommended format must keep
      accuracy_from: demo                        # recovery from another sweep's report (perf-only sweeps)
"""

from __future__ import annotations

from typing import Any

from orchestrator.config.loader import ConfigError, build, load_yaml
from quantgrid.types import LoadSettings, ModelSpec, PerfScenario
from quantgrid.settings import Perf, ServeSettings

LATENCY_KEYS = (
    "ttft_ms_p50",
    "ttft_ms_p90",
    "ttft_ms_p99",
    "itl_ms_p50",
    "itl_ms_p90",
    "itl_ms_p99",
    "request_latency_s_p50",
    "request_latency_s_p90",
    "request_latency_s_p99",
)
SECTION_KEYS = {"scenarios", "load", "server", "price_per_hour", "latency_limits", "recovery_floors", "accuracy_from"}


def load_scenario(name: str, conf_dir) -> PerfScenario:
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(load_yaml("perf", name, conf_dir), resolve=True)
    where = f"conf/perf/{name}.yaml"
    sc = build(PerfScenario, data, where)
    for k in ("prompt_tokens", "output_tokens"):
        if getattr(sc, k) < 1:
            raise ConfigError(f"{where}: {k} must be >= 1, got {getattr(sc, k)}")
    return sc


def _positive(value: Any, where: str, integer: bool = True) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        raise ConfigError(f"{where} must be a positive {'integer' if integer else 'number'}, got {value!r}")


def load_perf(node: Any, models: list[ModelSpec], conf_dir) -> Perf:
    """The validated perf section (an empty Perf = no perf stage)."""
    if not node:
        return Perf()
    if not isinstance(node, dict) or set(node) - SECTION_KEYS:
        bad = sorted(set(node) - SECTION_KEYS) if isinstance(node, dict) else node
        raise ConfigError(f"sweep.perf: unknown key(s) {bad} (allowed: {', '.join(sorted(SECTION_KEYS))})")
    names = node.get("scenarios") or []
    if not isinstance(names, list) or not names:
        raise ConfigError("sweep.perf.scenarios must be a non-empty list of conf/perf scenarios")
    scenarios = [load_scenario(str(n), conf_dir) for n in names]
    load_node = dict(node.get("load") or {})
    if "streams" in load_node:
        streams = load_node["streams"]
        if not isinstance(streams, list) or not streams:
            raise ConfigError(
                f"sweep.perf.load.streams must be a non-empty list of concurrency levels, got {streams!r}"
            )
        for s in streams:
            _positive(s, "sweep.perf.load.streams[]")
        if len(set(streams)) != len(streams):
            raise ConfigError(f"sweep.perf.load.streams lists a level twice: {streams}")
        if 1 not in streams:
            raise ConfigError(
                f"sweep.perf.load.streams must include 1 (the synchronous, one-request-at-a-time level), got {streams}"
            )
        load_node["streams"] = tuple(sorted(streams))
    load = build(LoadSettings, load_node, "sweep.perf.load")
    _positive(load.max_requests, "sweep.perf.load.max_requests")
    _positive(load.max_seconds, "sweep.perf.load.max_seconds", integer=False)
    if load.warmup_requests < 0 or load.max_requests <= load.warmup_requests + 1:
        # GuideLLM's warmup boundary is the start of the request after the N-th: N + 1 go unmeasured.
        raise ConfigError(
            f"sweep.perf.load.max_requests ({load.max_requests}) must exceed warmup_requests + 1 "
            f"({load.warmup_requests + 1}): nothing would be measured"
        )
    for sc in scenarios:
        for m in models:
            if sc.prompt_tokens + sc.output_tokens > m.max_model_len:
                raise ConfigError(
                    f"conf/perf/{sc.name}.yaml: prompt_tokens {sc.prompt_tokens} + output_tokens "
                    f"{sc.output_tokens} = {sc.prompt_tokens + sc.output_tokens} exceeds max_model_len "
                    f"{m.max_model_len} of model {m.name}"
                )
    server = dict(node.get("server") or {})
    unknown = sorted(set(server) - {"port", "start_timeout_s", "extra_args"})
    if unknown:
        raise ConfigError(
            f"sweep.perf.server: unknown key(s) {', '.join(unknown)} (allowed: extra_args, port, start_timeout_s)"
        )
    port = server.get("port", ServeSettings.port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"sweep.perf.server.port must be 0 (pick a free port) or 1-65535, got {port!r}")
    _positive(
        server.get("start_timeout_s", ServeSettings.start_timeout_s), "sweep.perf.server.start_timeout_s", integer=False
    )
    if not isinstance(server.get("extra_args", []), list):
        raise ConfigError("sweep.perf.server.extra_args must be a list of `vllm serve` arguments")
    serve = ServeSettings(
        port=int(port),
        start_timeout_s=float(server.get("start_timeout_s", ServeSettings.start_timeout_s)),
        extra_args=tuple(str(a) for a in server.get("extra_args") or ()),
    )
    prices = dict(node.get("price_per_hour") or {})
    for acc, price in prices.items():
        _positive(price, f"sweep.perf.price_per_hour.{acc}", integer=False)
    limits = dict(node.get("latency_limits") or {})
    for k, v in limits.items():
        if k not in LATENCY_KEYS:
            raise ConfigError(f"sweep.perf.latency_limits: unknown key {k} (known: {', '.join(LATENCY_KEYS)})")
        _positive(v, f"sweep.perf.latency_limits.{k}", integer=False)
    floors = list(node.get("recovery_floors") or Perf.recovery_floors)
    if not isinstance(floors, list) or not all(isinstance(f, (int, float)) and 0 < f <= 100 for f in floors):
        raise ConfigError(f"sweep.perf.recovery_floors must be a list of percentages in (0, 100], got {floors!r}")
    return Perf(
        scenarios=tuple(scenarios),
        load=load,
        server=serve,
        price_per_hour=prices,
        latency_limits=limits,
        recovery_floors=tuple(sorted(floors, reverse=True)),
        accuracy_from=str(node["accuracy_from"]) if node.get("accuracy_from") else "",
    )
