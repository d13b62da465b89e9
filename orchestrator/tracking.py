"""MLflow at the scale of the grid: one parent run per sweep, one nested run per engine group.

A (model, format) run holds every task's metrics as `task/metric[/filter]` keys, its params
(recipe, engine and task settings) and lineage tags; per-sample records stay in Parquet and are
linked as artifacts. 500k cells therefore become a few thousand runs, not 500k.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from quantgrid.types import Artifact, Cell, Stage, TaskResult

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


class MlflowSink:
    """Implements orchestrator.results.ResultSink on an MLflow tracking store."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = Path(artifact_root).resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        self.parent_id: str | None = None
        self.group_runs: dict[tuple[str, str, int], str] = {}
        self.logged_params: dict[str, set[str]] = {}

    def sweep_started(self, sweep_name: str, info: dict[str, Any]) -> None:
        run = self.client.create_run(self.experiment_id, run_name=f"sweep:{sweep_name}", tags={"quantgrid.kind": "sweep"})
        self.parent_id = run.info.run_id
        log_batch_chunked(self.client, self.parent_id,
                          params=[(k, v) for k, v in sorted(info.get("params", {}).items())],
                          tags=[(f"quantgrid.{k}", v) for k, v in sorted(info.get("tags", {}).items())])

    def _group_run(self, cell: Cell) -> str:
        key = (cell.model.name, cell.format.name, cell.seed)
        if key not in self.group_runs:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{cell.model.name}/{cell.format.name}" + (f"/seed{cell.seed}" if cell.seed != 1234 else ""),
                tags={
                    "mlflow.parentRunId": self.parent_id or "",
                    "quantgrid.kind": "engine_group",
                    "quantgrid.model": cell.model.name,
                    "quantgrid.format": cell.format.name,
                    "quantgrid.format_label": cell.format.label,
                    "quantgrid.model_note": cell.model.note,
                },
            )
            self.group_runs[key] = run.info.run_id
            params = {
                "model": cell.model.name, "format": cell.format.name, "format_label": cell.format.label,
                "recipe": cell.format.recipe, "calibration": cell.format.calibration,
                "dtype": cell.format.dtype or cell.model.dtype, "max_model_len": cell.model.max_model_len,
                "tensor_parallel_size": cell.model.tensor_parallel_size,
                "pipeline_parallel_size": cell.model.pipeline_parallel_size,
                **{f"engine.{k}": v for k, v in vars(cell.engine).items()}, "seed": cell.seed,
            }
            log_batch_chunked(self.client, run.info.run_id, params=list(params.items()))
            self.logged_params[run.info.run_id] = set(params)
        return self.group_runs[key]

    def artifact_ready(self, stage: Stage, artifact: Artifact) -> None:
        pass  # recorded on the group run when its first task result arrives (lineage tags)

    def task_result(self, cell: Cell, result: TaskResult) -> None:
        run_id = self._group_run(cell)
        ts = int(result.provenance.get("time", time.time()) * 1000)  # fixed timestamp: re-export is idempotent
        metrics = [(metric_name(result.task, k), v, ts, 0) for k, v in sorted(result.metrics.items())]
        metrics.append((f"{result.task}/num_samples", result.num_samples, ts, 0))
        metrics.append((f"{result.task}/seconds", result.seconds, ts, 0))
        for k, v in result.tokens.items():
            metrics.append((f"{result.task}/{k}", v, ts, 0))
        t = cell.task
        task_params = {
            f"task.{t.name}.num_fewshot": t.num_fewshot, f"task.{t.name}.apply_chat_template": t.apply_chat_template,
            f"task.{t.name}.fewshot_as_multiturn": t.fewshot_as_multiturn, f"task.{t.name}.gen_kwargs": t.gen_kwargs,
            f"task.{t.name}.subset": t.subset, f"task.{t.name}.metric": t.metric,
        }
        new_params = [(k, v) for k, v in task_params.items() if k not in self.logged_params[run_id]]
        self.logged_params[run_id].update(k for k, _ in new_params)
        p = result.provenance
        tags = [
            (f"quantgrid.cell.{result.task}", result.cell_key),
            ("quantgrid.checkpoint_hash", p.get("checkpoint_content_hash", "")),
            ("quantgrid.recipe_hash", p.get("recipe_hash", "")),
            ("quantgrid.calibration_hash", p.get("calibration_hash", "")),
            (f"quantgrid.task_hash.{result.task}", p.get("task_config_hash", "")),
            ("quantgrid.git_commit", p.get("git_commit", "")),
            ("quantgrid.packages", p.get("packages", {})),
            ("quantgrid.hardware", p.get("hardware", {})),
            ("quantgrid.engine_id", p.get("engine_id", "")),
        ]
        log_batch_chunked(self.client, run_id, metrics=metrics, params=new_params, tags=tags)
        if p.get("samples_path"):
            self.client.log_artifact(run_id, p["samples_path"], artifact_path=f"samples/{result.task}")

    def stage_failed(self, stage: Stage, error_class: str, message: str) -> None:
        if self.parent_id:
            self.client.set_tag(self.parent_id, f"quantgrid.failed.{stage.name.replace('/', '.')}"[:MAX_KEY], f"{error_class}: {message}"[:5000])

    def sweep_finished(self, summary: dict[str, Any]) -> None:
        if self.parent_id:
            for run_id in self.group_runs.values():
                self.client.set_terminated(run_id)
            status = "FINISHED" if not summary.get("failed") else "FAILED"
            log_batch_chunked(self.client, self.parent_id, metrics=[(f"sweep/{k}", v, int(time.time() * 1000), 0)
                                                                    for k, v in summary.items() if isinstance(v, (int, float))])
            for name in ("table.md",):
                path = Path(summary.get("run_dir", ".")) / name
                if path.exists():
                    self.client.log_artifact(self.parent_id, str(path))
            self.client.set_terminated(self.parent_id, status=status)


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
