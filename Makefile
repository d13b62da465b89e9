# quantgrid: `make demo` and `make test` work on a fresh machine; both install what is missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export QUANTGRID_CACHE ?= $(HOME)/.cache/quantgrid

.PHONY: setup demo test lint lock gpu-lock gpu-lock-check bench clean

setup:
	@bash scripts/setup.sh

# The embedded sweep, then the same model and formats with adaptive paired verdicts (demo_adaptive:
# reuses the demo's checkpoints; MMLU cells stop as soon as their verdict is decided).
demo: setup
	$(VENV)/bin/quantgrid run sweep=demo
	$(VENV)/bin/quantgrid run sweep=demo_adaptive

test: setup gpu-lock-check lint
	@bash scripts/test-deps.sh
	$(PY) -m pytest tests --durations=15

# ruff (pinned in requirements/cpu.lock; settings in pyproject.toml [tool.ruff], line length 120).
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# The GPU dependency sets (extras gpu, gpu-quantize) for linux x86_64 / CUDA: re-resolve them, or
# check (in `make test`, hence CI) that the committed locks still resolve and match pyproject.toml.
gpu-lock: setup
	@bash scripts/gpu-lock.sh write

gpu-lock-check: setup
	@bash scripts/gpu-lock.sh check

# Measures the issue figures into bench/results.json: grid engine (plan-500k, resume-500k, simulate,
# ray-cluster, engine-loads) and foundation (setup-again, setup-cold, demo-cold, demo-warm). BENCH=names picks.
bench: setup
	$(PY) -m bench.run $(BENCH)

# Re-resolve the CPU lock (needs network). Commit requirements/cpu.lock afterwards.
lock:
	uv pip compile requirements/cpu.in --overrides requirements/cpu-overrides.txt \
	  --find-links /opt/wheels --index-strategy unsafe-best-match --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements/cpu.lock

clean:
	rm -rf $(VENV) runs
