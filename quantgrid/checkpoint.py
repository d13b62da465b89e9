"""Content-addressed checkpoints: manifest, cheap verification, atomic publish, build lock.

Pure Python (no torch) so the driver can reject a corrupted or truncated checkpoint in one
line before any GPU/CPU time is spent on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from quantgrid.types import file_sha256

MANIFEST = "quantgrid_manifest.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file."""


def write_manifest(ckpt: Path) -> str:
    """Hash every file once at publish time; return the checkpoint's content hash."""
    files = {
        str(p.relative_to(ckpt)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(ckpt.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    content_hash = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    (ckpt / MANIFEST).write_text(json.dumps({"content_hash": content_hash, "files": files}, indent=1))
    return content_hash


def _check_safetensors(path: Path) -> None:
    """Parse the header and check the file holds every tensor's bytes (catches truncation)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                raise ValueError("header length beyond end of file")
            header = json.loads(f.read(n))
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupted checkpoint file {path}: unreadable safetensors header ({e})") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"truncated checkpoint file {path}: {size} bytes on disk, header needs {8 + n + end}")


def verify_checkpoint(ckpt: Path, deep: bool = False) -> str:
    """Cheap check on load: config parses, sizes match the manifest, safetensors are whole.

    `deep=True` also re-hashes every file. Returns the content hash ("" if no manifest).
    """
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise CheckpointError(f"checkpoint not found: {ckpt}")
    cfg = ckpt / "config.json"
    try:
        json.loads(cfg.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"corrupted checkpoint {ckpt}: config.json is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupted checkpoint {ckpt}: config.json does not parse ({e})") from None
    weights = sorted(ckpt.glob("*.safetensors"))
    if not weights:
        raise CheckpointError(f"corrupted checkpoint {ckpt}: no *.safetensors weights")
    for w in weights:
        _check_safetensors(w)
    manifest_path = ckpt / MANIFEST
    if not manifest_path.exists():
        return ""
    manifest = json.loads(manifest_path.read_text())
    for rel, meta in manifest["files"].items():
        p = ckpt / rel
        if not p.exists():
            raise CheckpointError(f"corrupted checkpoint {ckpt}: {rel} is missing")
        if p.stat().st_size != meta["size"]:
            raise CheckpointError(
                f"corrupted checkpoint file {p}: {p.stat().st_size} bytes, manifest says {meta['size']}"
            )
        if deep and file_sha256(p) != meta["sha256"]:
            raise CheckpointError(f"corrupted checkpoint file {p}: sha256 differs from the manifest")
    return manifest["content_hash"]


REVISION_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "chat_template.jinja",
    "chat_template.json",
    "special_tokens_map.json",
)


def checkpoint_revision(ckpt: Path) -> str:
    """A cheap identity for a user's checkpoint at plan time: its manifest's content hash, else a
    hash of its config, tokenizer and chat template files plus the weight files' names and sizes
    (weights are not read: a changed chat template or config is a new revision, for free)."""
    ckpt = Path(ckpt)
    if (ckpt / MANIFEST).exists():
        return json.loads((ckpt / MANIFEST).read_text())["content_hash"]
    h = hashlib.sha256()
    for name in REVISION_FILES:
        if (ckpt / name).is_file():
            h.update(name.encode() + (ckpt / name).read_bytes())
    for w in sorted(ckpt.glob("*.safetensors")):
        h.update(f"{w.name}:{w.stat().st_size}".encode())
    return h.hexdigest()[:16]


def model_dims(ckpt: Path) -> dict[str, int]:
    """The Linear input dimensions a group-wise quantizer must divide."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    dims = {"hidden_size": cfg["hidden_size"], "intermediate_size": cfg["intermediate_size"]}
    heads, head_dim = cfg.get("num_attention_heads"), cfg.get("head_dim")
    if heads and head_dim:
        dims["num_heads*head_dim"] = heads * head_dim  # o_proj input
    return dims


@contextlib.contextmanager
def build_lock(target: Path) -> Iterator[None]:
    """Exclusive lock so two processes never build the same artifact at once."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(str(target) + ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def publish(target: Path, build: Callable[[Path], None]) -> tuple[str, bool]:
    """Build into a temp dir beside `target`, write the manifest, rename into place.

    Returns (content_hash, reused). A present but corrupt target is rebuilt.
    """
    target = Path(target)
    with build_lock(target):
        if target.exists():
            try:
                return verify_checkpoint(target), True
            except CheckpointError:
                shutil.rmtree(target)  # corrupt: rebuild below
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            content_hash = write_manifest(tmp)
            os.replace(tmp, target)  # atomic on one filesystem
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return content_hash, False
