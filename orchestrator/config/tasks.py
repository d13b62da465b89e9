"""Where a sweep's tasks come from, checked at plan time.

`registry: local` (default): our lm-eval task folders under workers/tasks (the embedded, offline
tasks). `registry: lm_eval`: the installed lm-eval's own registry (the paper's leaderboard tasks:
`leaderboard_bbh`, `gsm8k_llama`, ...; their datasets are fetched on the cluster). Both are read
as YAML text, never by importing lm-eval, so the driver stays free of torch; the worker then finds
the same names through lm-eval's TaskManager.

A task's version hash covers its YAML folder (prompts, utils): a changed prompt is a new result.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from orchestrator.config.loader import ConfigError, build, load_yaml
from quantgrid.runtime import CONF_DIR
from quantgrid.scorers import SCORERS
from quantgrid.runtime import TASKS_DIR
from quantgrid.types import TaskSpec

REGISTRIES = ("local", "lm_eval")
_ENTRY = re.compile(r"^(task|group|tag):\s*['\"]?([^'\"\s]+)['\"]?\s*$", re.M)


def lm_eval_tasks_dir() -> Path | None:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def registry_root(registry: str) -> Path | None:
    return Path(TASKS_DIR) if registry == "local" else lm_eval_tasks_dir()


@lru_cache(maxsize=4)
def registry_index(root: Path) -> dict[str, tuple[str, Path]]:
    """name -> (task | group | tag, defining YAML) for every YAML under `root` (~14k files for
    lm-eval 0.4.13: under a second)."""
    index: dict[str, tuple[str, Path]] = {}
    for y in sorted(root.rglob("*.yaml")):
        for kind, name in _ENTRY.findall(y.read_text(errors="replace")):
            index.setdefault(name, (kind, y))
    return index


def find_task(name: str, registry: str = "local") -> tuple[str, Path] | None:
    root = registry_root(registry)
    return registry_index(root).get(name) if root is not None and root.is_dir() else None


def task_folder(name: str, registry: str = "local") -> Path | None:
    found = find_task(name, registry)
    return found[1].parent if found else None


def task_output_type(name: str, registry: str = "local") -> str:
    """The lm-eval output_type of a task (following `include:`); "group" for a group; lm-eval's
    default is generate_until."""
    found = find_task(name, registry)
    if found is None:
        return "unknown"
    kind, y = found
    if kind != "task":
        return kind
    text = y.read_text(errors="replace")
    for _ in range(8):  # an include chain, not a cycle
        m = re.search(r"^output_type:\s*(\S+)", text, re.M)
        if m:
            return m.group(1)
        inc = re.search(r"^include:\s*(\S+)", text, re.M)
        if not inc or not (y.parent / inc.group(1)).is_file():
            break
        y = y.parent / inc.group(1)
        text = y.read_text(errors="replace")
    return "generate_until"


def task_version_hash(name: str, registry: str = "local") -> str:
    """Hash of the task's YAML folder and its subfolders (a group's subtasks): YAML, Python, templates."""
    folder = task_folder(name, registry)
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in (".yaml", ".py", ".jinja", ".json", ".txt"):
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_source(where: str, spec: Any) -> None:
    if not isinstance(spec, dict) or not (spec.get("path") or (spec.get("hub") and spec.get("file"))):
        raise ConfigError(f"{where} must be {{path: FILE}} or {{hub: DATASET_REPO, file: PATH_IN_REPO, revision: REV}}")


def check_scorer(where: str, scorer: Any) -> None:
    """An external scorer's config, checked before any worker starts (each error one line)."""
    if not isinstance(scorer, dict):
        raise ConfigError(f"{where}: scorer must be a mapping with a kind ({', '.join(SCORERS)})")
    kind = scorer.get("kind")
    external = [k for k in SCORERS if k != "lm_eval"]
    if kind not in external:
        raise ConfigError(
            f"{where}: scorer.kind must be one of {', '.join(external)} (lm-eval tasks need no "
            f"scorer block), got {kind!r}"
        )
    SCORER_CHECKS[kind](where, scorer)


# vLLM's default max_logprobs (vllm/config/model.py): prompt_logprobs above it are refused.
MAX_TOP_K = 20


def _check_token_dist(where: str, scorer: dict) -> None:
    unknown = set(scorer) - {"kind", "text", "top_k", "max_tokens"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown scorer key(s) {', '.join(sorted(unknown))} (known: text, top_k, max_tokens)"
        )
    text = scorer.get("text")
    if not isinstance(text, dict) or not (text.get("path") or (text.get("package") and text.get("file"))):
        raise ConfigError(f"{where}: scorer.text must be {{package: PKG, file: PATH_IN_PKG}} or {{path: FILE}}")
    k = scorer.get("top_k", MAX_TOP_K)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOP_K:
        raise ConfigError(
            f"{where}: scorer.top_k must be an integer in 1..{MAX_TOP_K} (vLLM's max_logprobs), got {k!r}"
        )
    n = scorer.get("max_tokens", 256)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"{where}: scorer.max_tokens must be an integer >= 2, got {n!r}")


def _check_arena_hard(where: str, scorer: dict) -> None:
    unknown = set(scorer) - {"kind", "questions", "baseline", "judge", "generation", "strong_weight"}
    if unknown:
        raise ConfigError(f"{where}: unknown scorer key(s) {', '.join(sorted(unknown))}")
    _check_source(f"{where}: scorer.questions", scorer.get("questions"))
    _check_source(f"{where}: scorer.baseline", scorer.get("baseline"))
    judge = scorer.get("judge")
    if not isinstance(judge, dict):
        raise ConfigError(f"{where}: scorer.judge must be {{base_url, model, api_key_env, ...}}")
    if "api_key" in judge:
        raise ConfigError(
            f"{where}: scorer.judge.api_key: never put a key in config; name the environment "
            "variable that holds it in api_key_env"
        )
    url = str(judge.get("base_url") or "")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{where}: scorer.judge.base_url must be an http(s) URL of an OpenAI-compatible API, got {url!r}"
        )
    if not judge.get("model"):
        raise ConfigError(f"{where}: scorer.judge.model must name the judge model the endpoint serves")
    var = judge.get("api_key_env")
    if var is not None and not (isinstance(var, str) and _ENV_NAME.fullmatch(var)):
        raise ConfigError(f"{where}: scorer.judge.api_key_env must be an environment variable name, got {var!r}")
    if not isinstance(judge.get("extra_body") or {}, dict):
        raise ConfigError(f"{where}: scorer.judge.extra_body must be a mapping (sent with every judge request)")
    if not judge.get("prompt_file") and not (judge.get("system_prompt") and judge.get("prompt_template")):
        raise ConfigError(
            f"{where}: scorer.judge needs prompt_file (Arena-Hard's judge_config.yaml) or "
            "system_prompt and prompt_template"
        )
    for key, low in (("concurrency", 1), ("attempts", 1), ("max_tokens", 1), ("retries", 0), ("timeout_s", 1)):
        v = judge.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < low):
            raise ConfigError(f"{where}: scorer.judge.{key} must be a number >= {low}, got {v!r}")
    gen = scorer.get("generation") or {}
    if not isinstance(gen, dict) or set(gen) - {"max_gen_toks", "temperature"}:
        raise ConfigError(f"{where}: scorer.generation must be {{max_gen_toks, temperature}}")
    if not (isinstance(gen.get("max_gen_toks", 1), int) and gen.get("max_gen_toks", 1) >= 1):
        raise ConfigError(f"{where}: scorer.generation.max_gen_toks must be a positive integer")
    if float(gen.get("temperature", 0)) < 0 or float(scorer.get("strong_weight", 3)) <= 0:
        raise ConfigError(f"{where}: scorer.generation.temperature must be >= 0 and strong_weight > 0")


# scorer kind -> its config check (one per row of quantgrid/scorers.py SCORERS but lm_eval).
SCORER_CHECKS = {"arena_hard": _check_arena_hard, "token_dist": _check_token_dist}


def scorer_version_hash(scorer: dict) -> str:
    """An external scorer's version: its config and the scorer's code."""
    import json

    # The scorer's source file, found without importing it (the driver never imports worker code).
    module = SCORERS.get(scorer.get("kind"), SCORERS["arena_hard"]).partition(":")[0]
    code = Path(importlib.util.find_spec(module).origin).read_bytes()
    return hashlib.sha256(json.dumps(scorer, sort_keys=True).encode() + code).hexdigest()[:16]


def load_task(name: str, settings: dict | None, conf_dir: Path = CONF_DIR) -> TaskSpec:
    node = load_yaml("task", name, conf_dir)
    if settings:
        node = OmegaConf.merge(node, settings)
    data = OmegaConf.to_container(node, resolve=True)
    data.pop("source", None)  # where a setting comes from (documentation in the YAML)
    if data.get("scorer") is not None:  # an external scorer: not looked up in lm-eval's registry
        check_scorer(f"conf/task/{name}.yaml", data["scorer"])
        data["version_hash"] = scorer_version_hash(data["scorer"])
        return build(TaskSpec, data, f"conf/task/{name}.yaml")
    registry = data.get("registry", "local")
    if registry not in REGISTRIES:
        raise ConfigError(f"conf/task/{name}.yaml: registry must be one of {', '.join(REGISTRIES)}, got {registry!r}")
    lm_name = name  # conf/task/NAME.yaml scores lm-eval's task (or group) NAME
    found = find_task(lm_name, registry)
    if found is None:
        where = TASKS_DIR if registry == "local" else f"the installed lm-eval's registry ({lm_eval_tasks_dir()})"
        raise ConfigError(f"task '{lm_name}' is not defined by any lm-eval task YAML under {where}")
    if found[0] == "tag":
        raise ConfigError(
            f"conf/task/{name}.yaml: '{lm_name}' is an lm-eval tag (several tasks); name one task or group"
        )
    data["version_hash"] = task_version_hash(lm_name, registry)
    return build(TaskSpec, data, f"conf/task/{name}.yaml")
