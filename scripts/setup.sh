#!/usr/bin/env bash
# Build .venv from the committed CPU lock. Idempotent: a stamp keyed on the lock, the overrides,
# pyproject.toml and this script makes a second run a no-op (well under the 30 s budget).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
CACHE=${QUANTGRID_CACHE:-$HOME/.cache/quantgrid}
export UV_CACHE_DIR="$CACHE/uv"
UV_VERSION=0.13.9
VENV=.venv

key=$(cat requirements/cpu.lock requirements/cpu-overrides.txt pyproject.toml scripts/setup.sh \
      scripts/build_vllm_alias.py | sha256sum | cut -c1-16)
if [[ -f $VENV/.quantgrid-setup && "$(cat $VENV/.quantgrid-setup)" == "$key" && -x $VENV/bin/quantgrid ]]; then
  echo "setup: .venv up to date (lock $key)"
  exit 0
fi

# uv: bootstrap from pip into the cache if it is not on PATH at the pinned version.
UV=$(command -v uv || true)
if [[ -z "$UV" || "$($UV --version | cut -d' ' -f2)" != "$UV_VERSION" ]]; then
  UV="$CACHE/uv-$UV_VERSION/bin/uv"
  if [[ ! -x "$UV" ]]; then
    echo "setup: bootstrapping uv $UV_VERSION with pip"
    "$PY" -m venv "$CACHE/uv-$UV_VERSION"
    "$CACHE/uv-$UV_VERSION/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
  fi
fi

# torch 2.13.0+cpu is only on local disk (/opt/wheels) on these machines; uv does not read pip's config.
FIND_LINKS=()
[[ -d /opt/wheels ]] && FIND_LINKS=(--find-links /opt/wheels)

[[ -x $VENV/bin/python ]] || "$UV" venv -q --python "$PY" "$VENV"
echo "setup: syncing .venv with requirements/cpu.lock"
# --compile-bytecode: uv installs sources only, and where PYTHONDONTWRITEBYTECODE=1 (as on these
# machines) no process ever writes a .pyc, so each one compiled torch/vLLM/transformers/Ray from
# source at import: ~10 s per worker, per driver, per CLI call. Compiled once here (~1 min on 2
# cores; a .pyc is still read under PYTHONDONTWRITEBYTECODE).
"$UV" pip sync -q --compile-bytecode --python "$VENV/bin/python" "${FIND_LINKS[@]}" --index-strategy unsafe-best-match \
  requirements/cpu.lock
# The metadata-only `vllm` distribution (see scripts/build_vllm_alias.py for why).
ALIAS_DIR="$CACHE/vllm-alias"
mkdir -p "$ALIAS_DIR"
wheel=$("$VENV/bin/python" scripts/build_vllm_alias.py "$ALIAS_DIR")
"$UV" pip install -q --python "$VENV/bin/python" --no-deps "$wheel"
"$UV" pip install -q --python "$VENV/bin/python" --no-deps -e .
echo "$key" > $VENV/.quantgrid-setup
echo "setup: done ($("$VENV/bin/python" -c 'import vllm, importlib.metadata as m; print("vllm", m.version("vllm"))' 2>/dev/null | tail -1))"
