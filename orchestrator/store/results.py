"""Where results go the moment they arrive: the seam the grid engine's ledger plugs into.

The driver talks to a `ResultSink`; this module has the local run store (JSON lines + Parquet
per-sample records + attached files such as GuideLLM reports, written before anything else so no
result is lost if MLflow is down). The MLflow exporter (orchestrator/store/export.py) reads the ledger, not this store.

Commit order (nothing lost, nothing silently wrong): a result's files are written first, each
atomically (temp file, fsync, rename, fsync of the folder), and their path, size and SHA-256 go
into the ledger in the same transaction as the result (orchestrator/execution/driver.py `commit`). A crash
before the commit leaves a file and no result (the cell is scored again); a crash after it leaves
both. `check_samples` is how resume and report find a done cell whose file went missing or bad.
"""

from __future__ import annotations

import hashlib
import json
import os
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


def write_atomic(path: Path, write) -> None:
    """`write(tmp_path)` then rename over `path`: readers see the old file or the whole new one,
    never a torn one, and the rename is on disk before the ledger says the result exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return path.stat().st_size, h.hexdigest()


def check_samples(run_dir: Path, record: dict[str, Any], full: bool = False) -> str | None:
    """Why a done cell's per-sample file cannot be trusted (None = it can). Cheap by default (exists,
    recorded size, Parquet's closing magic: what a truncated or lost file fails), so resume stays
    fast on a grid of 500k cells; `full` also checks the SHA-256 recorded at commit."""
    if record.get("kind") == "perf" or not record.get("num_samples"):
        return None
    path = samples_file(run_dir, record["model"], record["format"], record["task"], record["cell_key"])
    want = (record.get("provenance") or {}).get("samples_file") or {}
    try:
        size = path.stat().st_size
        if want.get("bytes") is not None and size != want["bytes"]:
            return f"samples file {path} is {size} bytes, {want['bytes']} were committed"
        with open(path, "rb") as f:
            f.seek(max(0, size - 4))
            if f.read(4) != b"PAR1":
                return f"samples file {path} is not a complete Parquet file"
        if full and want.get("sha256") and file_digest(path)[1] != want["sha256"]:
            return f"samples file {path} does not match the SHA-256 committed with its result"
    except FileNotFoundError:
        return f"samples file {path} is missing"
    except OSError as e:
        return f"samples file {path} cannot be read ({e.strerror or e})"
    return None


def read_generations(path: Path) -> dict[int, str]:
    """{doc_id: raw generation} of a cell's samples file, for output similarity. Rows are per
    (doc, filter) and every filter's row holds the same raw text, so each document counts once."""
    import pandas as pd

    df = pd.read_parquet(path, columns=["doc_id", "response"]).drop_duplicates("doc_id")
    return dict(zip(df["doc_id"].astype(int), df["response"].fillna("").astype(str)))


def read_sensitivity(path: Path) -> list[dict[str, Any]]:
    """A sensitivity cell's groups in model order: {name, layer, module, modules, params,
    model_params (the whole model's, on every row), kl, ppl_ratio} (workers/stages/sensitivity.py
    writes one row per layer group)."""
    import pandas as pd

    df = pd.read_parquet(path, columns=["doc_id", "target", "m_kl", "m_ppl_ratio", "m_params", "extra"]).sort_values(
        "doc_id"
    )
    out = []
    for row in df.itertuples(index=False):
        extra = json.loads(row.extra or "{}")
        out.append(
            {
                "name": str(row.target),
                "layer": int(extra.get("layer", -1)),
                "module": str(extra.get("module", "")),
                "modules": list(extra.get("modules") or []),
                "params": int(row.m_params),
                "model_params": int(extra.get("model_params", 0)),
                "kl": float(row.m_kl),
                "ppl_ratio": float(row.m_ppl_ratio),
            }
        )
    return out


class ResultSink(Protocol):
    def sweep_started(self, sweep_name: str, info: dict[str, Any]) -> None: ...
    def artifact_ready(self, stage: Stage, artifact: Artifact) -> None: ...
    def write_files(self, result: TaskResult) -> None: ...
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

    def write_files(self, result: TaskResult) -> None:
        """Before the ledger commit: attachments and per-sample records, each written atomically;
        the samples' path, size and SHA-256 go into the result's provenance (hence the ledger)."""
        for name, text in result.attachments.items():
            f = attachment_file(self.root, result.model, result.format, result.task, result.cell_key, name)
            write_atomic(f, lambda tmp, text=text: tmp.write_text(text))
            result.provenance.setdefault("attachments", {})[name] = str(f)
        if result.samples or result.kind != "perf":
            self._write_samples(result)

    def task_result(self, cell: Cell, result: TaskResult) -> None:
        """After the ledger commit: the JSON-lines log of results (a convenience copy)."""
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
                # one row per (doc_id, filter): lm-eval scores each filter's answer separately
                "cell_key": result.cell_key,
                "doc_id": s.doc_id,
                "filter": s.filter,
                "target": s.target,
                "response": s.response,
                "filtered": s.filtered,
                "metrics": json.dumps(s.metrics),
                "logprobs": s.logprobs,
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
        write_atomic(path, lambda tmp: pd.DataFrame(rows).to_parquet(tmp, index=False))
        size, sha = file_digest(path)
        result.provenance["samples_path"] = str(path)  # later sinks (MLflow) link it as an artifact
        result.provenance["samples_file"] = {"bytes": size, "sha256": sha}

    def stage_failed(self, stage: Stage, error_class: str, message: str) -> None:
        self._append(
            "failures.jsonl",
            {"stage": stage.name, "key": stage.key, "class": error_class, "message": message, "time": time.time()},
        )

    def sweep_finished(self, summary: dict[str, Any]) -> None:
        self._append("events.jsonl", {"event": "sweep_finished", "time": time.time(), **summary})
