"""Driver side: never imports torch or vLLM (tests/orchestrator/test_layering.py checks it).

The data flow, one folder per step:

- `config/`     conf/ -> typed specs: loader (Hydra compose, search path, build: the leaf), one
                module per conf group (models, formats, tasks, perf), sweep (the `Sweep`)
- `planning/`   Sweep -> cells and stages: plan, cost model, placement, policy (dispatch order),
                sizing (subsets to a budget), simulate (a grid on N nodes without running it)
- `execution/`  stages -> results: scheduler (the Ray event loop over the `Hooks` protocol),
                stages (StageKind -> how to begin it), driver (implements Hooks), failures
                (classify + recovery), run/submit/preflight, sweep_lock (one owner per sweep)
- `store/`      where results live: ledger (SQLite, the source of truth), results (per-sample
                Parquet), export + tracking (MLflow), cache_gc
- `report/`     results -> tables, the paper's layout, analysis, recommend, plots
- `monitor/`    a running or finished sweep: status/logs, ui

`cli.py` turns argv into those calls; `console.py` prints one-line errors that never wrap.
"""
