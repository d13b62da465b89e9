"""Scoring on a ready engine: lm-eval (`lm_eval_scorer`), LLM-as-judge (`judge`), code execution
(`sandbox`). Looked up lazily by quantgrid/scorers.py ("module:function")."""
