"""Checks before a sweep starts (run, resume, submit), each failure one line with its fix.

- a gated Hugging Face model needs its token variable set (only whether it is set is looked at:
  the value is never read into params, tags or logs); not checked for `submit`, where the token
  lives on the cluster (a Kubernetes Secret);
- GPU memory: each engine's weights (parameters x bytes per weight of its format) plus a KV-cache
  reserve must fit the GPUs its tensor x pipeline parallelism gives it (accelerator classes name
  their memory: h100-80gb);
- a remote MLflow tracking server must answer;
- an LLM judge (external scorer tasks) needs its key variable set and its endpoint answering with
  that key (not for `submit` either: the key is a cluster Secret);
- disk: the checkpoints the sweep will write (base models, one per quantized format; those already
  in the cache excepted) must fit the cache's free space (the quantize worker checks again, per
  checkpoint, with the recipe's quantize_resources.disk_gb).
Elsewhere, before any work: unknown tasks (orchestrator/config/tasks.py, against lm-eval's registry),
engines no node can hold (placement.demand), malformed perf scenarios (perf_config), W4A16 group
sizes against model dims (config).
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from orchestrator.config import ConfigError

# Bytes per weight by the recipe's weight precision; activations do not change weight memory.
BYTES_PER_WEIGHT = {4: 0.5, 8: 1.0, 16: 2.0}
KV_RESERVE = 0.10  # fraction of GPU memory kept for the KV cache and activations (vLLM needs some)


def weight_bits(fmt) -> int:
    """4, 8 or 16: what the format stores its Linear weights in."""
    text = f"{fmt.label} {fmt.recipe or ''}"  # the label also covers published checkpoints
    if re.search(r"W4A16|num_bits': 4", text):
        return 4
    if re.search(r"W8A8|FP8|num_bits': 8", text):
        return 8
    return 16


def gpu_memory_gb(accelerator: str) -> float | None:
    m = re.search(r"(\d+)\s*gb", accelerator.lower())
    return float(m.group(1)) if m else None


def check_memory(plan) -> None:
    from orchestrator.planning.cost import model_params_b

    for s in plan.stages:
        if s.kind.value not in ("evaluate", "perf") or not s.cells:
            continue
        mem = gpu_memory_gb(s.cells[0].engine.accelerator)
        if mem is None:  # cpu, or a class without its memory in the name
            continue
        gpus = s.model.tensor_parallel_size * s.model.pipeline_parallel_size
        need = model_params_b(s.model) * BYTES_PER_WEIGHT[weight_bits(s.format)]
        have = gpus * mem * (1 - KV_RESERVE)
        if need > have:
            raise ConfigError(
                f"{s.model.name}/{s.format.name}: {need:.0f} GB of weights do not fit {gpus} x {mem:g} GB GPUs "
                f"(tensor_parallel_size {s.model.tensor_parallel_size} x pipeline_parallel_size "
                f"{s.model.pipeline_parallel_size}, {KV_RESERVE:.0%} kept for the KV cache): raise the parallelism "
                f"(conf/model: tensor_parallel_size, or format_overrides.{s.format.name}.parallel)"
            )


def check_tracking(uri: str, timeout_s: float = 10) -> None:
    if not uri.startswith(("http://", "https://")):
        return  # a local store (sqlite, file): created on demand
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
            if r.status == 200:
                return
    except OSError as exc:
        raise ConfigError(
            f"MLflow tracking server {uri} unreachable ({' '.join(str(exc).split())[:120]}): start it "
            "(docker/mlflow.yaml), fix tracking_uri, or leave it empty for the run directory's own store"
        ) from None


def check_tokens(plan) -> None:
    for m in plan.sweep.models:
        src = m.source or {}
        if src.get("kind") == "hf_hub" and src.get("gated"):
            var = str(src.get("token_env") or "HF_TOKEN")
            if not os.environ.get(var):
                raise ConfigError(
                    f"model {m.name} ({src.get('repo')}) is gated on the Hugging Face Hub: set {var} to a "
                    f"token that has accepted its license (on KubeRay: a Secret mapped to {var})"
                )


def check_judges(plan) -> None:
    for t in plan.sweep.tasks:
        if t.scorer_kind != "arena_hard":
            continue
        judge = t.scorer["judge"]
        var = judge.get("api_key_env")
        if var and not os.environ.get(var):
            raise ConfigError(
                f"task {t.name} is scored by an LLM judge ({judge['model']}): set {var} to its API key "
                f"(on KubeRay: a Secret mapped to {var}), or point scorer.judge.base_url at your own endpoint"
            )
        url = str(judge["base_url"]).rstrip("/") + "/models"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {os.environ[var]}"} if var else {})
        try:
            urllib.request.urlopen(req, timeout=15).close()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise ConfigError(
                    f"task {t.name}: the judge endpoint {judge['base_url']} rejected the key in {var} "
                    f"(HTTP {exc.code}): set a valid key"
                ) from None
            # other answers (an endpoint without GET /models): it is up
        except OSError as exc:
            raise ConfigError(
                f"task {t.name}: judge endpoint {judge['base_url']} unreachable "
                f"({' '.join(str(exc).split())[:120]}): start it or fix scorer.judge.base_url"
            ) from None


def _cached(root: Path, prefix: str) -> bool:
    return root.is_dir() and any(p.is_dir() for p in root.glob(prefix + "-*"))


def check_disk(plan, free_gb: float | None = None) -> None:
    """Checkpoints still to be written into the cache vs its free space (10% margin)."""
    from orchestrator.planning.cost import model_params_b
    from quantgrid.runtime import cache_dir

    root = cache_dir()
    need, what = 0.0, []
    for m in plan.sweep.models:
        params = model_params_b(m)
        if (m.source or {}).get("kind") != "local" and not _cached(root / "models", m.name):
            need += params * BYTES_PER_WEIGHT[16]
            what.append(m.name)
        for f in plan.sweep.formats[m.name].values():
            if not f.is_baseline and not _cached(root / "checkpoints", f"{m.name}-{f.name}"):
                need += params * BYTES_PER_WEIGHT[weight_bits(f)]
                what.append(f"{m.name}/{f.name}")
    if free_gb is None:
        probe = root
        while not probe.exists():
            probe = probe.parent
        free_gb = shutil.disk_usage(probe).free / 1e9
    if need * 1.1 > free_gb:
        raise ConfigError(
            f"the sweep writes ~{need:.0f} GB of checkpoints ({len(what)}: {', '.join(what[:4])}"
            f"{', ...' if len(what) > 4 else ''}) into {root}, which has {free_gb:.0f} GB free: free "
            "space or set QUANTGRID_CACHE to a larger (shared) volume"
        )


def check(plan, submitting: bool = False) -> list[str]:
    """Refuse what cannot run (ConfigError, one line); return warnings for what can. A tracking
    server that is down is a warning: a GPU reservation is not given up for it, the ledger
    buffers every result and `quantgrid export` (or the run's own exporter, once the server is
    back) drains them."""
    warnings = []
    check_memory(plan)
    try:
        check_tracking(os.environ.get("MLFLOW_TRACKING_URI") or plan.sweep.tracking_uri)
    except ConfigError as exc:
        warnings.append(f"{exc}; running anyway: results are buffered in the ledger until it answers")
    if not submitting:  # on a cluster the job's own `quantgrid run` checks these where they apply
        check_tokens(plan)
        check_judges(plan)
        check_disk(plan)
    return warnings
