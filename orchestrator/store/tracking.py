"""MLflow naming and limits shared by the exporter (orchestrator/store/export.py) and the report.

lm-eval's metric keys map to readable, valid and reversible MLflow names (`acc,none` ->
`task/acc`, `exact_match,strict-match` -> `task/exact_match/strict-match`, `pass@1` ->
`pass_at_1`); `log_batch` calls respect MLflow's per-call limits by chunking, never dropping.
"""

from __future__ import annotations

import json
import re
import time
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


def client(uri: str):
    """An MlflowClient on `uri`; a new local sqlite store is seeded first (`seed_sqlite_store`)."""
    from mlflow.tracking import MlflowClient

    seed_sqlite_store(uri)
    return MlflowClient(uri)


def seed_sqlite_store(uri: str) -> None:
    """A sqlite store that does not exist yet starts as a copy of an empty store built once per
    MLflow version (cache_dir()/mlflow-store/): MLflow runs its whole alembic migration chain on
    every new database (mlflow/store/db/utils.py, `_initialize_tables`: ~9 s of CPU on 2 cores,
    once per sweep and again for each `ui`), and skips it on a store whose tables all exist
    (`_all_tables_exist`). The copy's Default experiment points at the store's own artifacts."""
    if not uri.startswith("sqlite:///") or "?" in uri:  # URI options: left to MLflow as given
        return
    db = Path(uri[len("sqlite:///") :])
    if db.exists():
        return
    import os
    import shutil
    import sqlite3

    import mlflow

    from quantgrid.runtime import cache_dir

    template = cache_dir() / "mlflow-store" / f"empty-mlflow-{mlflow.__version__}.db"
    if not template.exists():
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        template.parent.mkdir(parents=True, exist_ok=True)
        tmp = template.with_suffix(f".{os.getpid()}.tmp")
        store = SqlAlchemyStore(f"sqlite:///{tmp}", str(template.parent / "artifacts"))
        store.engine.dispose()
        os.replace(tmp, template)  # concurrent builders: each replace is whole
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_suffix(f".{os.getpid()}.tmp")
    shutil.copyfile(template, tmp)
    with sqlite3.connect(tmp) as con:
        con.execute(
            "UPDATE experiments SET artifact_location=? WHERE experiment_id=0",
            ((db.parent / "mlartifacts").resolve().as_uri(),),
        )
    con.close()
    try:
        os.link(tmp, db)  # never replaces a store another process created meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


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
        p, params = params[: min(MAX_PARAMS, room)], params[min(MAX_PARAMS, room) :]
        room -= len(p)
        t, tags = tags[: min(MAX_TAGS, room)], tags[min(MAX_TAGS, room) :]
        client.log_batch(run_id, metrics=m, params=p, tags=t)


def attach_report(
    tracking_uri: str, experiment: str, paths: list[Path], metrics: dict[str, float] | None = None
) -> bool:
    """Log the report files to the sweep's latest parent run (under report/), and the report's
    per-(model, format) figures as its metrics (one log_batch); False if there is no such run."""
    mlflow_client = client(tracking_uri)
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None:
        return False
    runs = mlflow_client.search_runs(
        [exp.experiment_id], "tags.`quantgrid.kind` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        return False
    for p in paths:
        mlflow_client.log_artifact(runs[0].info.run_id, str(p), artifact_path="report")
    if metrics:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())]
        for i in range(0, len(batch), 1000):  # MLflow's log_batch takes at most 1000 metrics
            mlflow_client.log_batch(runs[0].info.run_id, metrics=batch[i : i + 1000])
    return True


def report_metrics(report_json: Path) -> dict[str, float]:
    """The report's per-(model, format, task) fidelity figures and adaptive verdicts as metric keys:
    fidelity/MODEL/FORMAT/TASK/{kl,top1,outside_mass}, adaptive/MODEL/FORMAT/TASK/{verdict,documents,saved}
    (verdict: above 1, undecided 0, below -1); frontier/MODEL/FORMAT/... and sensitivity/MODEL/FORMAT/...
    (orchestrator/report/mixed.py `metrics`)."""
    import json

    try:
        report = json.loads(report_json.read_text())
    except (OSError, ValueError):
        return {}
    out = {
        f"fidelity/{r['model']}/{r['format']}/{r['task']}/{k}": r[k]
        for r in report.get("fidelity") or []
        for k in ("kl", "top1", "outside_mass")
        if r.get(k) is not None
    }
    out |= {k: float(v) for k, v in (report.get("mixed_metrics") or {}).items()}  # frontier/..., sensitivity/...
    code = {"above": 1.0, "undecided": 0.0, "below": -1.0}
    for r in report.get("adaptive") or []:
        key = f"adaptive/{r['model']}/{r['format']}/{r['task']}".replace("@", "_at_")
        out |= {f"{key}/verdict": code[r["verdict"]], f"{key}/documents": r["documents"], f"{key}/saved": r["saved"]}
    return out
