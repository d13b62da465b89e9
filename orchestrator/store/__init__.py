"""Where results live: `ledger` (SQLite: cells, attempts, fencing tokens; the source of truth),
`results` (per-sample Parquet written atomically before the commit that names it), `export` and
`tracking` (MLflow: one run per sweep, nested runs per (model, format), metrics by log_batch),
`cache_gc` (the content-addressed cache)."""
