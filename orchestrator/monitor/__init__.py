"""Watching a sweep: `status` (ledger status, logs, why a cell is not done) and `ui` (a local
web page over the ledger and MLflow). Named `monitor` rather than `inspect` so no module shadows a
stdlib name."""
