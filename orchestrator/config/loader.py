"""The leaf of config loading: Hydra compose, the search path, YAML files and typed builds.

Everything else under config (orchestrator/config/sweep.py, tasks.py, perf_config.py) builds on this
module and it imports none of them, so config loading has no import cycle. One-line errors
(`ConfigError`) start here.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from quantgrid.errors import ConfigError, one_line  # noqa: F401 - re-exported
from quantgrid.runtime import CONF_DIR


def compose(overrides: list[str], conf_dir: SearchPath | Path = CONF_DIR) -> DictConfig:
    """Hydra compose (not @hydra.main: the driver expands the grid itself, one process)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        conf = SearchPath.of(conf_dir)
        with initialize_config_dir(config_dir=str(Path(conf.root).resolve()), version_base=None):
            extra = (
                [f"hydra.searchpath=[{','.join('file://' + str(d.resolve()) for d in conf.extra)}]"]
                if conf.extra
                else []
            )
            return _layer(hydra_compose("config", overrides=extra + list(overrides)), overrides)
    except yaml.YAMLError as e:
        raise ConfigError(f"malformed YAML: {one_line(e)}") from None
    except (HydraException, OmegaConfBaseException) as e:
        missing = re.search(
            r"Could not find '(\w+)/([^']+)'.*?Available options in '\w+':\s*(.*?)\s*Config search path",
            " ".join(str(e).split()),
        )
        if missing:
            group, name, known = missing.groups()
            raise ConfigError(f"unknown {group} '{name}' (known: {', '.join(known.split())})") from None
        raise ConfigError(one_line(e)) from None


# Set by compose, read (and removed) by load_sweep: not a setting anyone writes.
CLI_ENGINE_KEYS = "_cli_engine_keys"


def _cli_keys(overrides: list[str], section: str) -> set[str]:
    """The keys of `section` the command line sets (`resources.lease_s=60` -> lease_s)."""
    keys = (o.lstrip("+~").split("=", 1)[0] for o in overrides)
    return {k.split(".")[1] for k in keys if k.startswith(section + ".") and "." in k}


def _layer(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """What only compose can do, because only here are the command-line keys known:
    - a sweep's `resources:` go over conf/config.yaml's (the paper's 405B stages need hours, not
      the default hour), under the command line's `resources.*`, which always win;
    - the engine keys the command line set are recorded: they beat a model's own engine defaults
      (ModelSpec.engine), which beat conf/engine's."""
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg[CLI_ENGINE_KEYS] = sorted(_cli_keys(overrides, "engine"))
        pinned = OmegaConf.select(cfg, "sweep.resources")
        if isinstance(pinned, DictConfig):
            if cfg.get("resources") is None:
                cfg.resources = {}
            cli = _cli_keys(overrides, "resources")
            for k, v in pinned.items():
                if k not in cli:
                    cfg.resources[k] = v
    return cfg


@dataclass(frozen=True)
class SearchPath:
    """Where conf groups are looked up: extra config trees first (`quantgrid run --conf-dir DIR`:
    a team adds its own models, formats, tasks and sweeps without editing the repository; first
    match wins), then conf/. A value passed along, never process state."""

    extra: tuple[Path, ...] = ()
    root: Path = Path(CONF_DIR)

    @classmethod
    def of(cls, conf: SearchPath | Path | str | None = None) -> SearchPath:
        if isinstance(conf, SearchPath):
            return conf
        return cls(root=Path(conf)) if conf is not None else cls()

    def with_extra(self, dirs) -> SearchPath:
        """These dirs in front (those already here keep their place after them)."""
        new = [Path(d).resolve() for d in dirs]
        return SearchPath(tuple(dict.fromkeys([*new, *self.extra])), self.root)

    @property
    def dirs(self) -> list[Path]:
        return [*self.extra, Path(self.root)]


def search_path(conf: SearchPath | Path | str | None = None) -> list[Path]:
    return SearchPath.of(conf).dirs


def load_yaml(kind: str, name: str, conf_dir: SearchPath | Path) -> DictConfig:
    candidates = [d / kind / f"{name}.yaml" for d in search_path(conf_dir)]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        known = sorted({p.stem for d in search_path(conf_dir) for p in (d / kind).glob("*.yaml")})
        raise ConfigError(f"unknown {kind} '{name}' (known: {', '.join(known)})")
    try:
        return OmegaConf.create(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as e:
        raise ConfigError(f"malformed YAML in {path}: {one_line(e)}") from None


def _conforms(value: Any, hint: Any) -> bool:
    """Does a YAML value fit a dataclass field's annotation (the subset of types we use)?"""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    return True


def _type_name(hint: Any) -> str:
    return (
        " or ".join(_type_name(a) for a in get_args(hint))
        if get_origin(hint) in (Union, types.UnionType)
        else ("null" if hint is type(None) else getattr(get_origin(hint) or hint, "__name__", str(hint)))
    )


def build(cls, data: dict[str, Any], where: str):
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    hints = get_type_hints(cls)
    for k, v in data.items():
        if not _conforms(v, hints[k]):
            raise ConfigError(f"{where}: {k} must be {_type_name(hints[k])}, got {v!r}")
    try:
        return cls(**data)
    except TypeError as e:
        raise ConfigError(f"{where}: {one_line(e)}") from None


def refuse_unknown(node: Any, known: tuple[str, ...], where: str) -> None:
    if isinstance(node, dict):
        bad = [k for k in node if k not in known]
        if bad:
            raise ConfigError(f"{where}{bad[0]}: unknown setting (known: {', '.join(known)})")
