"""conf/model/*.yaml -> ModelSpec, and the engine and shape checks that need only a model's config.

Consumed in one place: `load_model` (the sweep's `models:` axis); `check_group_size` refuses a
group-wise recipe whose group size does not divide the model's Linear input dims, before any work.
"""

from __future__ import annotations

import json

import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from orchestrator.config.loader import ConfigError, build, load_yaml
from quantgrid.capability import KV_CACHE_DTYPES
from quantgrid.checkpoint import checkpoint_revision, model_dims, verify_checkpoint
from quantgrid.runtime import CONF_DIR
from quantgrid.types import EngineSettings, FormatSpec, ModelSpec


def check_engine(e: EngineSettings) -> None:
    bs = e.batch_size
    if not (isinstance(bs, int) and bs >= 1 or isinstance(bs, str) and re.fullmatch(r"auto(:\d+)?", bs)):
        raise ConfigError(f"conf/engine: batch_size must be a positive integer, 'auto' or 'auto:N', got {bs!r}")
    if e.max_gen_toks < 1:
        raise ConfigError(f"conf/engine: max_gen_toks must be >= 1, got {e.max_gen_toks}")
    if e.kv_cache_gb < 0:
        raise ConfigError(f"conf/engine: kv_cache_gb must be >= 0, got {e.kv_cache_gb}")
    if e.kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ConfigError(
            f"conf/engine: kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {e.kv_cache_dtype!r}"
        )


MODEL_SOURCES = ("gguf_package", "tiny_random", "local", "hf_hub")


def load_model(name: str, conf_dir: Path = CONF_DIR) -> ModelSpec:
    data = OmegaConf.to_container(load_yaml("model", name, conf_dir), resolve=True)
    spec = build(ModelSpec, data, f"conf/model/{name}.yaml")
    kind = (spec.source or {}).get("kind")
    if kind not in MODEL_SOURCES:
        raise ConfigError(f"model {name}: unknown source kind '{kind}' (known: {', '.join(MODEL_SOURCES)})")
    if kind == "hf_hub" and not spec.source.get("repo"):
        raise ConfigError(f"model {name}: source.repo (a Hugging Face repository id) is missing")
    if kind == "local":
        # A checkpoint the user brings: reject a corrupted or truncated one before any work.
        path = Path(spec.source.get("path", "")).expanduser()
        verify_checkpoint(path)
        spec = replace(spec, revision=checkpoint_revision(path))
    for k in ("tensor_parallel_size", "pipeline_parallel_size", "max_model_len"):
        if int(getattr(spec, k)) < 1:
            raise ConfigError(f"model {name}: {k} must be >= 1")
    return spec


def static_dims(model: ModelSpec) -> dict[str, int] | None:
    """Linear input dims known from config alone (a GGUF's are known once it is converted)."""
    src = model.source
    if src.get("kind") == "local":
        return model_dims(Path(src["path"]).expanduser())
    if src.get("kind") == "hf_hub" and src.get("dims"):  # stated in the config (the weights are not here)
        return {k: int(v) for k, v in src["dims"].items()}
    if src.get("kind") == "tiny_random":
        return {
            "hidden_size": int(src["hidden_size"]),
            "intermediate_size": int(src["intermediate_size"]),
            "num_heads*head_dim": int(src["num_attention_heads"]) * int(src["head_dim"]),
        }
    return None


def architecture_of(model: ModelSpec) -> str | None:
    """The model's transformers architecture where it is known without building the model: a local
    checkpoint's config.json, a tiny random model's (Llama unless it says), or `architecture:` in
    an hf_hub source. None otherwise (the quantize stage checks the loaded model's class)."""
    src = model.source
    if src.get("kind") == "local":
        try:
            arch = json.loads((Path(src["path"]).expanduser() / "config.json").read_text()).get("architectures")
        except (OSError, ValueError):
            return None
        return str(arch[0]) if arch else None
    if src.get("kind") == "tiny_random":
        return str(src.get("architecture", "LlamaForCausalLM"))
    return str(src["architecture"]) if src.get("architecture") else None


def group_sizes(recipe: Any) -> list[int]:
    """Every group_size in a (nested) llmcompressor recipe."""
    found: list[int] = []
    if isinstance(recipe, dict):
        for k, v in recipe.items():
            if k == "group_size" and v is not None:
                found.append(int(v))
            else:
                found += group_sizes(v)
    elif isinstance(recipe, list):
        for v in recipe:
            found += group_sizes(v)
    return found


def check_group_size(fmt: FormatSpec, model: str, dims: dict[str, int]) -> None:
    """Group-wise quantization needs every Linear input dim divisible by the group size."""
    for g in group_sizes(fmt.recipe):
        bad = {k: v for k, v in dims.items() if v % g}
        if bad:
            common = math.gcd(*dims.values())
            valid = [2**i for i in range(4, 11) if common % 2**i == 0]
            what = ", ".join(f"{k} {v}" for k, v in bad.items())
            raise ConfigError(
                f"format {fmt.name}: group_size {g} does not divide {model}'s {what}; "
                f"valid group sizes: {', '.join(map(str, valid)) or 'none (use channel-wise)'} "
                f"(set conf/model/{model}.yaml format_overrides.{fmt.name}.group_size)"
            )
