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

from omegaconf import OmegaConf

from orchestrator.config import CONF_DIR, ConfigError, _build, _load_yaml
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


def load_task(name: str, settings: dict | None, conf_dir: Path = CONF_DIR) -> TaskSpec:
    node = _load_yaml("task", name, conf_dir)
    if settings:
        node = OmegaConf.merge(node, settings)
    data = OmegaConf.to_container(node, resolve=True)
    data.pop("source", None)  # where a setting comes from (documentation in the YAML)
    registry = data.get("registry", "local")
    if registry not in REGISTRIES:
        raise ConfigError(f"conf/task/{name}.yaml: registry must be one of {', '.join(REGISTRIES)}, got {registry!r}")
    lm_name = name  # conf/task/NAME.yaml scores lm-eval's task (or group) NAME
    found = find_task(lm_name, registry)
    if found is None:
        where = TASKS_DIR if registry == "local" else f"the installed lm-eval's registry ({lm_eval_tasks_dir()})"
        raise ConfigError(f"task '{lm_name}' is not defined by any lm-eval task YAML under {where}")
    if found[0] == "tag":
        raise ConfigError(f"conf/task/{name}.yaml: '{lm_name}' is an lm-eval tag (several tasks); name one task or group")
    data["version_hash"] = task_version_hash(lm_name, registry)
    return _build(TaskSpec, data, f"conf/task/{name}.yaml")
