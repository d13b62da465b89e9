"""conf/ -> typed, validated specs; bad input refused in one line before any work.

`loader` is the leaf (Hydra compose, the conf search path, YAML -> dataclass with unknown keys
refused); each conf group is consumed in one module: `models`, `formats`, `tasks`, `perf`; `sweep`
puts them together into a `Sweep`. Callers import from here.
"""

from orchestrator.config.formats import calibration_file, load_format
from orchestrator.config.loader import ConfigError, SearchPath, compose, load_yaml, one_line, search_path
from orchestrator.config.models import check_group_size, load_model, static_dims
from orchestrator.config.sweep import Sweep, load_sweep, package_versions, resolve_execution

__all__ = [
    "ConfigError",
    "SearchPath",
    "Sweep",
    "calibration_file",
    "check_group_size",
    "compose",
    "load_format",
    "load_model",
    "load_sweep",
    "load_yaml",
    "one_line",
    "package_versions",
    "resolve_execution",
    "search_path",
    "static_dims",
]
