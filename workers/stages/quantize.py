"""Quantize stage: llmcompressor `oneshot` with the format's recipe, published content-addressed.

One checkpoint per (base checkpoint, recipe, calibration set, library versions): the key is a
hash of all of them, so a changed recipe is a new artifact and an unchanged one is reused.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import random
import time
from pathlib import Path
from typing import Any

import yaml

from quantgrid import smoothquant
from quantgrid.checkpoint import publish
from quantgrid.failures import FailureClass, StageFailure
from quantgrid.runtime import cache_dir
from quantgrid.settings import Sanity
from quantgrid.types import Artifact, FormatSpec, ModelSpec, file_sha256, stable_hash
from workers.stages.sanity import SANITY_FILE, Probe, gate, probe_checkpoints, sidecar, stored_result, write_result


def calibration_texts(path: Path, num_samples: int, seed: int) -> list[str]:
    """Documents of the calibration corpus (one per line; a .jsonl holds one JSON string per line,
    for documents with newlines), a seeded sample of `num_samples`."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    docs = (
        [json.loads(line) for line in lines if line.strip()]
        if str(path).endswith(".jsonl")
        else [line.strip() for line in lines]
    )
    docs = [d for d in docs if isinstance(d, str) and d.strip()]
    if not docs:
        raise ValueError(f"calibration data {path} holds no text")
    random.Random(seed).shuffle(docs)
    # Fewer documents than samples asked for: use them all rather than repeat any (repeats add
    # no information to GPTQ's Hessian and bias SmoothQuant's activation ranges).
    return docs[:num_samples]


def stage_published(model: ModelSpec, fmt: FormatSpec, root: Path | None = None) -> Artifact:
    """A published quantized checkpoint (e.g. the paper's authors' releases) staged into the
    shared cache like a checkpoint we quantized: content-addressed, verified, reused."""
    from workers.hub import MODEL_FILES, download, token_env

    pub = fmt.published or {}
    repo, rev = str(pub["repo"]), str(pub.get("revision") or "main")
    target = Path(root or cache_dir() / "checkpoints") / f"{model.name}-{fmt.name}-{stable_hash({'published': pub})}"
    t0 = time.perf_counter()

    def build(out: Path) -> None:
        sha = download(repo, rev, out, "model", token_env(pub), MODEL_FILES)
        (out / "quantgrid_recipe.json").write_text(
            json.dumps(
                {"format": fmt.name, "label": fmt.label, "published": {"repo": repo, "revision": rev, "commit": sha}},
                indent=1,
            )
        )

    content_hash, reused = publish(target, build)
    qcfg = json.loads((target / "config.json").read_text()).get("quantization_config")
    return Artifact(
        path=str(target),
        content_hash=content_hash,
        quantization_config=qcfg,
        seconds=time.perf_counter() - t0,
        reused=reused,
    )


def stage_calibration(cal: dict[str, Any], base: Path, base_hash: str) -> Path:
    """A Hugging Face calibration dataset (`hf_dataset`, `revision`, `split`, `text_field`) as a
    local .jsonl of documents, staged once into the shared cache. Chat-formatted records (a list
    of {role, content} messages) are rendered with the model's own chat template, as the paper's
    authors calibrate."""
    from workers.hub import download, token_env

    repo, rev = str(cal["hf_dataset"]), str(cal.get("revision") or "main")
    split, field = str(cal.get("split") or "train"), str(cal.get("text_field") or "text")
    root = cache_dir() / "datasets" / f"{repo.replace('/', '--')}-{rev}"
    target = root / f"{split}-{field}-{base_hash[:12]}.jsonl"
    if target.is_file():
        return target
    if not (root / "repo").is_dir():
        download(repo, rev, root / "repo", "dataset", token_env(cal))
    from datasets import load_dataset
    from transformers import AutoTokenizer

    ds = load_dataset(str(root / "repo"), split=split)
    if field not in ds.column_names:
        raise ValueError(
            f"calibration dataset {repo}: no column '{field}' in split {split} (columns: {ds.column_names})"
        )
    tok = None
    texts = []
    for value in ds[field]:
        if isinstance(value, list):  # chat messages
            tok = tok or AutoTokenizer.from_pretrained(base)
            value = tok.apply_chat_template(value, tokenize=False)
        texts.append(str(value))
    tmp = target.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(t) + "\n" for t in texts))
    tmp.replace(target)  # atomic: a concurrent quantize job sees all of it or none
    return target


def artifact_key(base_hash: str, fmt: FormatSpec, calibration_hash: str | None, compute_dtype: str = "bfloat16") -> str:
    versions = {p: md.version(p) for p in ("llmcompressor", "compressed-tensors", "transformers", "torch")}
    key = {"base": base_hash, "format": fmt.recipe_key, "calibration": calibration_hash, "versions": versions}
    if compute_dtype != "bfloat16":  # float32 calibration gives other GPTQ numerics: another checkpoint
        key["compute_dtype"] = compute_dtype
    return stable_hash(key)


def quantize(
    base: Artifact,
    model: ModelSpec,
    fmt: FormatSpec,
    calibration_path: Path | None,
    root: Path | None = None,
    calibration_dtype: str = "bfloat16",
    sanity: Sanity | None = None,
) -> Artifact:
    """Return the quantized checkpoint for (base, fmt); the baseline format is the base itself.

    A checkpoint we quantize is gated (`sanity`, default Sanity(): workers/stages/sanity.py):
    past its limits the stage fails `quantization_broken`, after the checkpoint is published (a
    rerun reuses it and fails again in seconds, on the figures stored in it). The baseline is
    the base itself; a published checkpoint (the authors' release) is only downloaded, by an
    actor sized for staging (no GPU), so probing it would mean loading both models there: not
    gated."""
    sanity = sanity or Sanity()
    if fmt.mixed:  # the assignment solved by the driver -> config groups (keyed on it: fmt.mixed)
        from workers.stages.mixed_recipe import materialize

        fmt = materialize(fmt)
    if fmt.is_baseline:
        return Artifact(path=base.path, content_hash=base.content_hash, quantization_config=None, reused=True)
    if fmt.published:
        return stage_published(model, fmt, root)
    if fmt.calibration and fmt.calibration.get("hf_dataset"):
        calibration_path = stage_calibration(fmt.calibration, Path(base.path), base.content_hash)
    calib_hash = file_sha256(calibration_path, 16) if fmt.calibration else None
    key = artifact_key(base.content_hash, fmt, calib_hash, calibration_dtype)
    target = Path(root or cache_dir() / "checkpoints") / f"{model.name}-{fmt.name}-{key}"
    t0 = time.perf_counter()

    def build(out: Path) -> None:
        probed = _run_oneshot(Path(base.path), fmt, calibration_path, out, calibration_dtype, model.dtype, sanity)
        if probed is not None:  # part of the checkpoint's content: a reuse re-reads it
            write_result(out / SANITY_FILE, probed)
        (out / "quantgrid_recipe.json").write_text(
            json.dumps(
                {
                    "format": fmt.name,
                    "label": fmt.label,
                    "recipe": fmt.recipe,
                    "calibration": fmt.calibration,
                    "calibration_sha256": calib_hash,
                    "base_content_hash": base.content_hash,
                    "calibration_dtype": calibration_dtype,
                    "seconds": round(time.perf_counter() - t0, 1),
                },
                indent=1,
            )
        )

    content_hash, reused = publish(target, build)
    figures = None
    if sanity.enabled:
        # Built here or reused (by us or a concurrent builder): the figures stored in it; an older
        # cache entry, or one probed with other settings, is probed now from disk.
        figures = stored_result(target, sanity, content_hash)
        if figures is None:
            figures = probe_checkpoints(Path(base.path), target, sanity, calibration_dtype)
            write_result(sidecar(target), {**figures, "content_hash": content_hash})
        gate(figures, sanity, target, model, fmt)
    qcfg = json.loads((target / "config.json").read_text()).get("quantization_config")
    return Artifact(
        path=str(target),
        content_hash=content_hash,
        quantization_config=qcfg,
        seconds=time.perf_counter() - t0,
        reused=reused,
        sanity=figures,
    )


def _run_oneshot(
    base: Path,
    fmt: FormatSpec,
    calibration_path: Path | None,
    out: Path,
    compute_dtype: str = "bfloat16",
    save_dtype: str = "bfloat16",
    sanity: Sanity | None = None,
) -> dict[str, Any] | None:
    """Quantize `base` into `out`; the sanity probe's figures when `sanity` is enabled."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    # Calibration runs in `compute_dtype`: float32 on a CPU without bf16 hardware, where bf16
    # matmuls are ~46x slower (W4A16 GPTQ on SmolLM2-135M: 734 s in bf16 on an AVX2 EPYC).
    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, compute_dtype))
    # The plan refuses this where it knows the architecture; here it always does (quantgrid/smoothquant.py).
    if why := smoothquant.refusal(type(model).__name__, fmt.recipe, fmt.name, base.name):
        raise StageFailure(FailureClass.BAD_INPUT.value, why)
    # The recipe is config (conf/format/*.yaml); llmcompressor reads it as a recipe YAML file.
    recipe_path = out / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(fmt.recipe, sort_keys=False))
    # The probe's base log-probs, from this very model before oneshot (same dtype as after).
    probe = Probe(tokenizer, sanity) if sanity and sanity.enabled else None
    if probe:
        probe.baseline(model)
    kwargs: dict[str, Any] = {}
    if fmt.calibration:
        cal = fmt.calibration
        texts = calibration_texts(calibration_path, int(cal["num_samples"]), int(cal.get("seed", 0)))
        enc = tokenizer(texts, truncation=True, max_length=int(cal["max_seq_length"]), add_special_tokens=True)
        kwargs = dict(
            dataset=Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}),
            num_calibration_samples=len(texts),
            max_seq_length=int(cal["max_seq_length"]),
            shuffle_calibration_samples=False,  # already a seeded sample: keep runs identical
        )
    _no_pinning_without_accelerator()
    oneshot(model=model, recipe=str(recipe_path), **kwargs)
    # After oneshot the model computes with its quantized weights (and activations): the logits
    # the saved checkpoint gives once loaded back (measured equal, workers/stages/sanity.py).
    # Calibrated in float32, the probe sees the float32 model; the bf16 cast below is not in it.
    probed = probe.compare(model, compute_dtype) if probe else None
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    if compute_dtype != save_dtype:
        cast_checkpoint(out, save_dtype)
    return probed


def _no_pinning_without_accelerator() -> None:
    """llmcompressor 0.14's AWQModifier pins its cached activations before each mapping's grid
    search (`IntermediatesCache.pin_memory`, for faster host-to-device copies); a CPU-only torch
    raises "Cannot access accelerator device when none is available" there. Pinning only speeds up
    transfers to an accelerator, so without one it is skipped (values unchanged)."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if not torch.accelerator.is_available():
        IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None


def cast_checkpoint(out: Path, dtype: str) -> None:
    """Store a checkpoint calibrated in float32 as the model's own dtype, as a bf16 calibration
    would have: float32 tensors (unquantized weights, norms, scales) are cast; packed integer and
    FP8 weights are already final (compressed from the float32 values at save time)."""
    import torch
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    for f in sorted(out.glob("*.safetensors")):
        tensors = load_file(f)
        save_file(
            {k: v.to(target) if v.dtype == torch.float32 else v for k, v in tensors.items()},
            f,
            metadata={"format": "pt"},
        )
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for k in ("dtype", "torch_dtype"):
        if k in cfg:
            cfg[k] = dtype
    cfg_path.write_text(json.dumps(cfg, indent=2))
