"""Shared fixtures. The tiny-llama checkpoint is built once into the real cache and reused."""

from __future__ import annotations

import os
from pathlib import Path

# Before anything imports transformers / huggingface_hub: they read these flags at import.
for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import yaml

from quantgrid.runtime import CONF_DIR, cache_dir
from quantgrid.types import Artifact, ModelSpec


@pytest.fixture(scope="session")
def tiny_llama_spec() -> ModelSpec:
    """conf/model/tiny-llama.yaml (the canonical source dict) as a ModelSpec; plain YAML, no
    interpolation in that file."""
    data = yaml.safe_load((Path(CONF_DIR) / "model" / "tiny-llama.yaml").read_text())
    return ModelSpec(**data)


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_spec: ModelSpec) -> Artifact:
    """Built once per session into cache_dir()/"models": content addressed, so a later session
    (or another checkout sharing the cache) reuses it in a fraction of a second."""
    from workers.stages.assets import build_model

    return build_model(tiny_llama_spec, root=cache_dir() / "models")


@pytest.fixture(scope="session")
def lm_eval_task():
    """Load one of our task folders through lm-eval's registry, as the score stage does."""
    from lm_eval.tasks import get_task_dict

    from workers.scoring.lm_eval_scorer import task_manager

    return lambda name: get_task_dict([name], task_manager())[name]
