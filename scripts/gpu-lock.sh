#!/usr/bin/env bash
# The GPU dependency sets (pyproject extras `gpu` and `gpu-quantize`) resolved for linux x86_64 /
# CUDA (PyPI's Linux torch wheels are the CUDA builds), Python 3.12 (the vLLM image's).
#   scripts/gpu-lock.sh write   re-resolve into requirements/gpu*.lock (commit them)
#   scripts/gpu-lock.sh check   re-resolve into a temp dir, starting from the committed pins (uv keeps
#                               an output file's pins as preferences): fail if they no longer
#                               resolve or pyproject.toml now needs other pins. A newer release
#                               upstream changes nothing (it did: msgspec 0.23.0 broke a plain re-resolve).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-check}
CACHE=${QUANTGRID_CACHE:-$HOME/.cache/quantgrid}
UV=$(command -v uv || true)
[[ -z "$UV" ]] && UV="$CACHE/uv-0.13.9/bin/uv"
[[ -x "$UV" ]] || { echo "gpu-lock: uv not found (run make setup first)"; exit 2; }
OUT=requirements
[[ "$MODE" == check ]] && OUT=$(mktemp -d)
for extra in gpu gpu-quantize; do
  [[ "$MODE" == check ]] && cp "requirements/$extra.lock" "$OUT/$extra.lock"
  "$UV" pip compile pyproject.toml --extra "$extra" --python-version 3.12 \
    --python-platform x86_64-manylinux_2_28 -q -o "$OUT/$extra.lock"
done
if [[ "$MODE" == check ]]; then
  status=0
  for extra in gpu gpu-quantize; do
    # The header names the output path; compare the pins and their provenance only.
    if ! diff <(grep -v '^#' "requirements/$extra.lock") <(grep -v '^#' "$OUT/$extra.lock") >/dev/null; then
      echo "gpu-lock: requirements/$extra.lock is stale against pyproject.toml (scripts/gpu-lock.sh write):"
      diff <(grep -v '^#' "requirements/$extra.lock") <(grep -v '^#' "$OUT/$extra.lock") | head -20
      status=1
    fi
  done
  rm -rf "$OUT"
  [[ $status == 0 ]] && echo "gpu-lock: requirements/gpu.lock and gpu-quantize.lock resolve and match pyproject.toml"
  exit $status
fi
