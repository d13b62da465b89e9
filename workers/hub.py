"""Hugging Face Hub downloads for the staging stage: model weights and calibration datasets,
fetched once into the shared cache before any GPU work.

Workers run with HF_HUB_OFFLINE=1 (nothing else may reach the network), and huggingface_hub
reads that flag at import; so each download runs in a short subprocess of its own with the hub
enabled. The token is read there from the environment variable the config names (a Kubernetes
Secret on KubeRay), never passed on a command line, logged or stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from quantgrid.checkpoint import CheckpointError

_SCRIPT = r"""
import json, os, sys
from huggingface_hub import HfApi, snapshot_download
a = json.loads(sys.argv[1])
token = os.environ.get(a["token_env"]) or None
info = HfApi().repo_info(a["repo"], revision=a["revision"], repo_type=a["repo_type"], token=token)
snapshot_download(repo_id=a["repo"], revision=info.sha, repo_type=a["repo_type"], local_dir=a["out"], token=token,
                  allow_patterns=a["allow"])
print(json.dumps({"sha": info.sha}))
"""

MODEL_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt"]


def token_env(source: dict) -> str:
    return str(source.get("token_env") or "HF_TOKEN")


def download(
    repo: str,
    revision: str,
    out: Path,
    repo_type: str = "model",
    token_var: str = "HF_TOKEN",
    allow: list[str] | None = None,
    timeout_s: float = 6 * 3600,
) -> str:
    """Snapshot `repo`@`revision` into `out`; returns the commit sha it resolved to."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    args = {
        "repo": repo,
        "revision": revision,
        "repo_type": repo_type,
        "out": str(out),
        "token_env": token_var,
        "allow": allow,
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT, json.dumps(args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise CheckpointError(f"downloading {repo_type} {repo}@{revision} took over {timeout_s:g}s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit code {proc.returncode}"
        hint = (
            f" (gated repository: set {token_var} to a token with access)"
            if "401" in reason or "403" in reason or "gated" in reason.lower()
            else ""
        )
        raise CheckpointError(f"cannot download {repo_type} {repo}@{revision}: {reason[-300:]}{hint}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["sha"]
