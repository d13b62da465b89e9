"""MLflow naming and limits shared by the exporter (orchestrator/export.py) and the report.

lm-eval's metric keys map to readable, valid and reversible MLflow names (`acc,none` ->
`task/acc`, `exact_match,strict-match` -> `task/exact_match/strict-match`, `pass@1` ->
`pass_at_1`); `log_batch` calls respect MLflow's per-call limits by chunking, never dropping.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


# MLflow's per-call limits for log_batch.
MAX_METRICS, MAX_PARAMS, MAX_TAGS, MAX_ENTRIES = 1000, 100, 100, 1000
MAX_PARAM_VALUE, MAX_KEY = 6000, 250
_INVALID = re.compile(r"[^A-Za-z0-9_\-. /:]")


def metric_name(task: str, lm_eval_key: str) -> str:
    """lm-eval's `acc,none` -> `task/acc`; `exact_match,strict-match` -> `task/exact_match/strict-match`."""
    metric, _, flt = lm_eval_key.partition(",")
    name = f"{task}/{metric}" if flt in ("", "none") else f"{task}/{metric}/{flt}"
    # MLflow rejects "@" (pass@1); spell it out so the name still reads back unambiguously.
    return _INVALID.sub("_", name.replace("@", "_at_"))[:MAX_KEY]


def lm_eval_key(name: str) -> tuple[str, str]:
    """The inverse of `metric_name`: `task/acc` -> (task, `acc,none`)."""
    task, metric, *flt = name.split("/")
    return task, f"{metric.replace('_at_', '@')},{flt[0] if flt else 'none'}"


def local_tracking_uri(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}"


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= MAX_PARAM_VALUE else s[: MAX_PARAM_VALUE - 3] + "..."


def log_batch_chunked(client, run_id: str, metrics=(), params=(), tags=()) -> None:
    """Respect MLflow's per-call limits by chunking, never by dropping."""
    from mlflow.entities import Metric, Param, RunTag

    metrics = [Metric(k[:MAX_KEY], float(v), ts, step) for k, v, ts, step in metrics]
    params = [Param(k[:MAX_KEY], _param_value(v)) for k, v in params]
    tags = [RunTag(k[:MAX_KEY], _param_value(v)) for k, v in tags]
    while metrics or params or tags:
        m, metrics = metrics[:MAX_METRICS], metrics[MAX_METRICS:]
        room = MAX_ENTRIES - len(m)
        p, params = params[: min(MAX_PARAMS, room)], params[min(MAX_PARAMS, room):]
        room -= len(p)
        t, tags = tags[: min(MAX_TAGS, room)], tags[min(MAX_TAGS, room):]
        client.log_batch(run_id, metrics=m, params=p, tags=t)


def attach_report(tracking_uri: str, experiment: str, paths: list[Path]) -> bool:
    """Log the report files to the sweep's latest parent run (under report/); False if none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return False
    runs = client.search_runs([exp.experiment_id], "tags.`quantgrid.kind` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return False
    for p in paths:
        client.log_artifact(runs[0].info.run_id, str(p), artifact_path="report")
    return True
