"""Actor side: never imports MLflow, the ledger or the driver (tests/orchestrator/test_layering.py).

`actor` is the thin Ray facade; `stages/` does the work of each stage (assets: build or fetch a
model; quantize: llmcompressor; engine: vLLM; execution: the engine a host can run, emulated
weights; similarity; perf: vllm serve + GuideLLM); `scoring/` scores on a ready engine (lm_eval_scorer:
lm-eval's simple_evaluate on a ready LM; judge; sandbox for code execution); `tasks/` holds the
lm-eval task folders (include_path); `hub`, `probe` (host throughput) and `faults` (the
fault hooks the real-stack fault tests arm; inert unless QUANTGRID_FAULTS is set) are shared.
"""
