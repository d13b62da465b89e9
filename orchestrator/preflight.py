"""Checks before a sweep starts, each failure one line with its fix.

Here: gated Hugging Face models need their token variable set (the value is never read into
params, tags or logs: only whether it is set). Elsewhere, before any work: unknown tasks
(orchestrator/tasks.py, against lm-eval's registry), engines no node can hold (placement.demand),
malformed perf scenarios (perf_config), group sizes against model dims (config).
"""

from __future__ import annotations

import os

from orchestrator.config import ConfigError


def check(plan) -> None:
    for m in plan.sweep.models:
        src = m.source or {}
        if src.get("kind") == "hf_hub" and src.get("gated"):
            var = str(src.get("token_env") or "HF_TOKEN")
            if not os.environ.get(var):
                raise ConfigError(f"model {m.name} ({src.get('repo')}) is gated on the Hugging Face Hub: set {var} to a "
                                  f"token that has accepted its license (on KubeRay: a Secret mapped to {var})")
