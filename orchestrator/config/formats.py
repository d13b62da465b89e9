"""conf/format/*.yaml -> FormatSpec for one model (its format_overrides merged in), and the
calibration corpus a recipe is calibrated on.

Consumed in one place: `load_format` (the sweep's `formats:` axis, per model).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator.config.loader import ConfigError, build, load_yaml, one_line, refuse_unknown
from quantgrid.runtime import CONF_DIR
from quantgrid.types import FormatSpec, ModelSpec


# Calibration corpora by name: (package, file inside it). Read as files, never imported.
CALIBRATION_SOURCES = {"lee_background": ("gensim", "test/test_data/lee_background.cor")}


def load_format(name: str, model: ModelSpec, calibration: dict | None, conf_dir: Path = CONF_DIR) -> FormatSpec:
    """The format's recipe for one model: model overrides merged in, then interpolations resolved."""
    node = load_yaml("format", name, conf_dir)
    overrides = model.format_overrides.get(name, {})
    node = OmegaConf.merge(node, overrides)
    if calibration and node.get("calibration") is not None:
        node.calibration = OmegaConf.merge(node.calibration, calibration)
    try:
        data = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"conf/format/{name}.yaml: {one_line(e)}") from None
    # Top-level scalars (group_size, dampening_frac) only feed the recipe's interpolations.
    refuse_unknown(data.get("calibration"), CALIBRATION_KEYS, f"conf/format/{name}.yaml: calibration.")
    spec = {
        k: data.get(k)
        for k in ("name", "label", "recipe", "calibration", "dtype", "parallel", "published", "scheme")
        if k in data
    }
    fmt = build(FormatSpec, spec, f"conf/format/{name}.yaml")
    if fmt.published is not None and not (fmt.published or {}).get("repo"):
        raise ConfigError(
            f"format {name} has no published checkpoint for model {model.name}: set "
            f"format_overrides.{name}.published.repo in conf/model/{model.name}.yaml"
        )
    if fmt.published and fmt.recipe:
        raise ConfigError(f"conf/format/{name}.yaml: a format is a recipe or a published checkpoint, not both")
    for k, v in (fmt.parallel or {}).items():
        if k not in ("tensor_parallel_size", "pipeline_parallel_size") or not isinstance(v, int) or v < 1:
            raise ConfigError(
                f"format {name} for model {model.name}: parallel.{k} must be tensor_parallel_size or "
                f"pipeline_parallel_size, an integer >= 1 (got {v!r})"
            )
    return fmt


def locate_package_file(package: str, relative: str) -> Path | None:
    """Path of a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / relative


def calibration_file(calibration: dict[str, Any]) -> Path | None:
    """The local calibration file; None for a Hugging Face dataset (`hf_dataset`), which the
    quantize stage stages on the cluster."""
    if calibration.get("hf_dataset"):
        return None
    if calibration.get("path"):
        path = Path(calibration["path"]).expanduser()
    else:
        name = calibration.get("dataset")
        if name not in CALIBRATION_SOURCES:
            raise ConfigError(
                f"unknown calibration dataset '{name}' (known: {', '.join(CALIBRATION_SOURCES)}; or set "
                "calibration.path)"
            )
        path = locate_package_file(*CALIBRATION_SOURCES[name]) or Path(
            f"<package {CALIBRATION_SOURCES[name][0]} not installed>"
        )
    if not path.is_file():
        raise ConfigError(f"missing calibration data: {path} does not exist")
    return path


CALIBRATION_KEYS = (
    "dataset",
    "path",
    "hf_dataset",
    "revision",
    "split",
    "text_field",
    "num_samples",
    "max_seq_length",
    "seed",
)
