"""Where results go the moment they arrive: the seam the grid engine's ledger plugs into.

The driver talks to a `ResultSink`; this module has the local run store (JSON lines + Parquet
per-sample records + attached files such as GuideLLM reports, written before anything else so no
result is lost if MLflow is down). The MLflow exporter (orchestrator/export.py) reads the ledger, not this store.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from quantgrid.types import Artifact, Cell, Stage, TaskResult


def samples_file(run_dir: Path, model: str, fmt: str, task: str, cell_key: str) -> Path:
    """Where a cell's per-sample records live: a Parquet dataset partitioned model/format/task."""
    return Path(run_dir) / "samples" / f"model={model}" / f"format={fmt}" / f"task={task}" / f"{cell_key}.parquet"


def attachment_file(run_dir: Path, model: str, fmt: str, task: str, cell_key: str, name: str) -> Path:
    """Where a result's attached file lives (e.g. GuideLLM's raw report of a perf cell)."""
    return Path(run_dir) / "attachments" / f"model={model}" / f"format={fmt}" / f"task={task}" / f"{cell_key}-{name}"


class ResultSink(Protocol):
    def sweep_started(self, sweep_name: str, info: dict[str, Any]) -> None: ...
    def artifact_ready(self, stage: Stage, artifact: Artifact) -> None: ...
    def task_result(self, cell: Cell, result: TaskResult) -> None: ...
    def stage_failed(self, stage: Stage, error_class: str, message: str) -> None: ...
    def sweep_finished(self, summary: dict[str, Any]) -> None: ...


class RunStore:
    """Append-only local record of a sweep: results.jsonl + samples/*.parquet + artifacts.jsonl."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _append(self, name: str, record: dict[str, Any]) -> None:
        with (self.root / name).open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()

    def sweep_started(self, sweep_name: str, info: dict[str, Any]) -> None:
        self._append("events.jsonl", {"event": "sweep_started", "sweep": sweep_name, "time": time.time(), **info})

    def artifact_ready(self, stage: Stage, artifact: Artifact) -> None:
        self._append("artifacts.jsonl", {"stage": stage.name, "key": stage.key, **asdict(artifact)})

    def samples_path(self, result: TaskResult) -> Path:
        return samples_file(self.root, result.model, result.format, result.task, result.cell_key)

    def task_result(self, cell: Cell, result: TaskResult) -> None:
        for name, text in result.attachments.items():
            f = attachment_file(self.root, result.model, result.format, result.task, result.cell_key, name)
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text)
            result.provenance.setdefault("attachments", {})[name] = str(f)
        if result.samples or result.kind != "perf":
            self._write_samples(result)
        record = asdict(result)
        record.pop("samples")
        record.pop("attachments")
        record["samples_path"] = result.provenance.get("samples_path")
        record["seed"] = cell.seed
        record["time"] = time.time()
        self._append("results.jsonl", record)

    def _write_samples(self, result: TaskResult) -> None:
        import pandas as pd

        path = self.samples_path(result)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "cell_key": result.cell_key, "doc_id": s.doc_id, "target": s.target, "response": s.response,
                "metrics": json.dumps(s.metrics), "logprobs": s.logprobs,
                **{f"m_{k}": v for k, v in s.metrics.items()},
                **{f"ll_{k}": v[0] for k, v in s.extra.get("corpus", {}).items()},
                **{f"units_{k}": v[1] for k, v in s.extra.get("corpus", {}).items()},
                # ratio metrics (a judge's weighted wins / weight): pooled per resample, not averaged
                **{f"num_{k}": v[0] for k, v in s.extra.get("ratio", {}).items()},
                **{f"den_{k}": v[1] for k, v in s.extra.get("ratio", {}).items()},
                # the rest (a group's subtask, a judge's verdicts and judgments) as JSON
                "extra": json.dumps({k: v for k, v in s.extra.items() if k not in ("corpus", "ratio")}),
            }
            for s in result.samples
        ]
        pd.DataFrame(rows).to_parquet(path, index=False)
        result.provenance["samples_path"] = str(path)  # later sinks (MLflow) link it as an artifact

    def stage_failed(self, stage: Stage, error_class: str, message: str) -> None:
        self._append("failures.jsonl", {"stage": stage.name, "key": stage.key, "class": error_class, "message": message, "time": time.time()})

    def sweep_finished(self, summary: dict[str, Any]) -> None:
        self._append("events.jsonl", {"event": "sweep_finished", "time": time.time(), **summary})
