"""The MLflow exporter: pushes ledger rows to a tracking server in batches, off the result path.

Workers return results to the driver, the driver commits them to the ledger; this exporter (a
background thread during `run`, or `quantgrid export SWEEP` any time later, e.g. to a new
server) reads what the ledger holds and this tracking target has not acknowledged yet, and
pushes it. Idempotent for real: each metric is logged with its ledger commit time as timestamp
and step 0, and MLflow drops an identical (key, value, timestamp, step) row, so exporting twice
(or a batch retried after a crash) leaves one history entry. The ledger is the buffer: while the
server is unreachable rows stay unacknowledged and drain when it returns.

Layout at the grid's scale: one parent run per sweep, one nested run per (model, format[, seed])
engine group holding every task's metrics (`task/metric[/filter]`), its params and lineage tags,
and the per-sample Parquet files as artifacts. 500,000 cells become a few thousand runs.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.store.ledger import Ledger
from orchestrator.store.results import attachment_file, samples_file
from orchestrator.store.tracking import log_batch_chunked, metric_name


class Exporter:
    def __init__(
        self,
        ledger_path: Path,
        sweep: str,
        tracking_uri: str,
        plan=None,
        artifact_root: Path | None = None,
        batch_cells: int = 500,
    ):
        self.ledger_path = Path(ledger_path)
        self.sweep = sweep
        self.uri = tracking_uri
        self.plan = plan
        self.artifact_root = artifact_root
        self.batch_cells = batch_cells
        self.cells = {c.key: c for c in plan.cells} if plan is not None else {}
        self._runs: dict[str, str] = {}
        self._client = None
        self.last_error: str = ""

    # -- runs ------------------------------------------------------------------------------------
    def client(self):
        if self._client is None:
            from orchestrator.store.tracking import client

            self._client = client(self.uri)
        return self._client

    def _experiment(self) -> str:
        c = self.client()
        name = f"quantgrid/{self.sweep}"
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = Path(self.artifact_root).resolve().as_uri() if self.artifact_root else None
        # experimentKind: MLflow 3's UI otherwise opens a GenAI (traces) overview, not the runs table.
        exp_id = c.create_experiment(
            name,
            artifact_location=location,
            tags={"mlflow.experimentKind": "custom_model_development", "quantgrid.sweep": self.sweep},
        )
        # A target without this sweep's experiment is a new (or wiped) store: whatever the ledger
        # says was acknowledged at this URI is gone, so everything is pushed again.
        ledger = Ledger(self.ledger_path)
        try:
            ledger.forget_exports(self.sweep, self.uri)
        finally:
            ledger.close()
        return exp_id

    def _run(self, group: str, name: str, tags: dict[str, str]) -> str:
        """Find-or-create by a quantgrid.group tag, so a restarted exporter reuses its runs."""
        if group in self._runs:
            return self._runs[group]
        c = self.client()
        exp = self._experiment()
        found = c.search_runs([exp], f"tags.`quantgrid.group` = '{group}'", max_results=1)
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = c.create_run(exp, run_name=name, tags={"quantgrid.group": group, **tags}).info.run_id
        self._runs[group] = run_id
        return run_id

    def parent(self) -> str:
        return self._run(
            f"sweep:{self.sweep}", f"sweep:{self.sweep}", {"quantgrid.kind": "sweep", "quantgrid.sweep": self.sweep}
        )

    def _group_run(self, rec: dict[str, Any]) -> str:
        seed = rec.get("seed", 1234)
        group = f"{rec['model']}/{rec['format']}" + (f"/seed{seed}" if seed != 1234 else "")
        if f"{self.sweep}:{group}" in self._runs:
            return self._runs[f"{self.sweep}:{group}"]
        run_id = self._run(
            f"{self.sweep}:{group}",
            group,
            {
                "mlflow.parentRunId": self.parent(),
                "quantgrid.kind": "engine_group",
                "quantgrid.model": rec["model"],
                "quantgrid.format": rec["format"],
                "quantgrid.model_note": rec.get("provenance", {}).get("model_note", ""),
                # native | emulated (quantgrid/capability.py): an emulated group's scores are not its kernel's
                "quantgrid.execution_mode": rec.get("provenance", {}).get("execution_mode", "native"),
            },
        )
        cell = self.cells.get(rec["cell_key"])
        if cell is not None:  # params are set once; re-logging the same value is a no-op in MLflow
            params = {
                "model": cell.model.name,
                "format": cell.format.name,
                "format_label": cell.format.label,
                "recipe": cell.format.recipe,
                "calibration": cell.format.calibration,
                "dtype": cell.engine.dtype if cell.engine.host else (cell.format.dtype or cell.model.dtype),
                "max_model_len": cell.model.max_model_len,
                "tensor_parallel_size": cell.model.tensor_parallel_size,
                "pipeline_parallel_size": cell.model.pipeline_parallel_size,
                **{f"engine.{k}": v for k, v in vars(cell.engine).items() if not k.startswith("_")},
                "seed": cell.seed,
            }
            log_batch_chunked(self.client(), run_id, params=list(params.items()))
        return run_id

    # -- push ------------------------------------------------------------------------------------
    def _payload(self, rec: dict[str, Any], committed: float, run_dir: Path | None):
        ts = int(committed * 1000)  # the ledger commit time: a re-export logs the identical row
        task = rec["task"]
        metrics = [
            (metric_name(task, k), v, ts, 0) for k, v in sorted(rec["metrics"].items()) if isinstance(v, (int, float))
        ]
        metrics += [
            (f"{task}/num_samples", rec.get("num_samples", 0), ts, 0),
            (f"{task}/seconds", rec.get("seconds", 0.0), ts, 0),
        ]
        metrics += [(f"{task}/{k}", v, ts, 0) for k, v in (rec.get("tokens") or {}).items()]
        p = rec.get("provenance") or {}
        if rec.get("kind") == "similarity":  # the comparison's lineage, not the engine's
            tags = [
                (f"quantgrid.cell.{task}", rec["cell_key"]),
                (f"quantgrid.{task}.encoder", p.get("encoder", "")),
                (f"quantgrid.{task}.baseline_cell", p.get("baseline_cell", "")),
            ]
            f = (
                samples_file(run_dir, rec["model"], rec["format"], task, rec["cell_key"])
                if run_dir is not None
                else None
            )
            return metrics, [], tags, [(f"samples/{task}", f)] if f is not None and f.exists() else []
        if rec.get("kind") == "perf":  # the server's hardware and GuideLLM's raw report
            tags = [
                (f"quantgrid.cell.{task}", rec["cell_key"]),
                ("quantgrid.checkpoint_hash", p.get("checkpoint_content_hash", "")),
                (f"quantgrid.{task}.hardware", p.get("hardware", {})),
                (f"quantgrid.{task}.load", p.get("load", {})),
            ]
            f = (
                attachment_file(run_dir, rec["model"], rec["format"], task, rec["cell_key"], "guidellm.json")
                if run_dir
                else None
            )
            return metrics, [], tags, [(f"perf/{task}", f)] if f is not None and f.exists() else []
        tags = [
            (f"quantgrid.cell.{task}", rec["cell_key"]),
            ("quantgrid.checkpoint_hash", p.get("checkpoint_content_hash", "")),
            ("quantgrid.recipe_hash", p.get("recipe_hash", "")),
            ("quantgrid.calibration_hash", p.get("calibration_hash", "")),
            (f"quantgrid.task_hash.{task}", p.get("task_config_hash", "")),
            ("quantgrid.git_commit", p.get("git_commit", "")),
            ("quantgrid.packages", p.get("packages", {})),
            ("quantgrid.hardware", p.get("hardware", {})),
        ]
        cell = self.cells.get(rec["cell_key"])
        params = []
        if cell is not None:
            t = cell.task
            params = [
                (f"task.{t.name}.{k}", getattr(t, k))
                for k in (
                    "metric",
                    "num_fewshot",
                    "apply_chat_template",
                    "fewshot_as_multiturn",
                    "gen_kwargs",
                    "subset",
                )
            ]
        files = []
        if run_dir is not None:
            f = samples_file(run_dir, rec["model"], rec["format"], task, rec["cell_key"])
            files = [(f"samples/{task}", f)] if f.exists() else []
        return metrics, params, tags, files

    @staticmethod
    def _files_written(run_dir: Path, key: str, rec: dict[str, Any]) -> bool:
        """Has the driver written the files this result links (its Parquet, or its raw report)?"""
        if rec.get("kind") == "perf":
            return attachment_file(run_dir, rec["model"], rec["format"], rec["task"], key, "guidellm.json").exists()
        return (
            not rec.get("num_samples") or samples_file(run_dir, rec["model"], rec["format"], rec["task"], key).exists()
        )

    def push(self, run_dir: Path | None = None, limit: int | None = None, wait_for_samples: bool = False) -> int:
        """Push every unacknowledged result (or up to `limit`); returns how many were pushed.
        Raises if the server is unreachable: nothing is acknowledged that was not logged.
        `wait_for_samples` (during a run): leave a result for the next round while the driver is
        still writing its Parquet file, so the artifact link is never missed."""
        ledger = Ledger(self.ledger_path)
        pushed = 0
        try:
            while limit is None or pushed < limit:
                rows = ledger.unexported(
                    self.sweep, self.uri, self.batch_cells if limit is None else min(self.batch_cells, limit - pushed)
                )
                if not rows:
                    break
                if wait_for_samples and run_dir is not None:
                    ready = [r for r in rows if self._files_written(run_dir, r[0], r[2])]
                    if not ready:
                        break
                    rows = ready
                by_run: dict[str, list] = {}
                for key, committed, rec in rows:
                    by_run.setdefault(self._group_run(rec), []).append((key, committed, rec))
                for run_id, group in by_run.items():
                    metrics, params, tags, files = [], [], [], []
                    for _, committed, rec in group:
                        m, p, t, f = self._payload(rec, committed, run_dir)
                        metrics += m
                        params += p
                        tags += t
                        files += f
                    log_batch_chunked(
                        self.client(), run_id, metrics=metrics, params=list(dict(params).items()), tags=tags
                    )
                    for where, path in files:
                        self.client().log_artifact(run_id, str(path), artifact_path=where)
                    ledger.mark_exported(self.sweep, self.uri, [k for k, _, _ in group])
                    pushed += len(group)
        finally:
            ledger.close()
        return pushed

    def log_sweep(self, run_dir: Path, host: dict[str, Any] | None, sizing: dict[str, Any] | None) -> bool:
        """The parent run's params and tags: what was swept, on which host, sized how. Logged once:
        by the run when the server answers, or by `quantgrid export` after a run the server missed
        (then with the host the ledger recorded and the run's sizing.json, never this machine's:
        MLflow refuses a param logged again with another value). False if already there."""
        c, parent = self.client(), self.parent()
        if c.get_run(parent).data.params:
            return False
        sweep = self.plan.sweep
        log_batch_chunked(
            c,
            parent,
            params=[
                ("models", [m.name for m in sweep.models]),
                ("formats", sweep.format_names),
                ("tasks", [t.name for t in sweep.tasks]),
                ("seeds", sweep.seeds),
                ("baseline", sweep.baseline),
                ("host", (host or {}).get("name", "")),
                *(
                    [
                        ("sizing", {k: sizing[k] for k in ("budget_s", "factor", "tasks", "calibration", "quantize")}),
                        ("probe_gflops", sizing["probe"]["gflops"]),
                    ]
                    if sizing
                    else []
                ),
            ],
            tags=[
                ("quantgrid.run_dir", str(run_dir)),
                ("quantgrid.versions", dict(sweep.versions)),
                ("quantgrid.host", host or {}),
            ],
        )
        return True

    def finish(self, summary: dict[str, Any], status: str) -> None:
        """Sweep-level metrics and failures on the parent run; runs marked terminated."""
        c = self.client()
        parent = self.parent()
        ledger = Ledger(self.ledger_path)
        try:
            failed = [x for x in ledger.cells(self.sweep) if x["state"] == "failed"]
        finally:
            ledger.close()
        tags = [
            (f"quantgrid.failed.{x['model']}.{x['format']}.{x['task']}", f"{x['failure_class']}: {x['failure']}")
            for x in failed
        ]
        log_batch_chunked(
            c,
            parent,
            metrics=[
                (f"sweep/{k}", v, int(time.time() * 1000), 0)
                for k, v in summary.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            ],
            tags=tags,
        )
        for run_id in set(self._runs.values()) - {parent}:
            c.set_terminated(run_id)
        c.set_terminated(parent, status=status)


class BackgroundExport:
    """Runs `Exporter.push` every `interval_s` in a thread during a sweep; an unreachable server
    only delays the export (the ledger buffers), it never slows or fails the scheduler. `first`
    (the sweep's params and tags) runs once before the first push, whenever the server answers.
    `drain` does the last push and closes the runs, giving up after a deadline: MLflow's own HTTP
    retries against a dead server take minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES, backoff), and a
    finished sweep must exit within seconds of its last result."""

    FINAL_TRIES = 3

    def __init__(self, exporter: Exporter, run_dir: Path, interval_s: float = 2.0, first=None):
        self.exporter = exporter
        self.run_dir = run_dir
        self.interval_s = interval_s
        self.first = first
        self.last = None  # runs once after the final push (the run attaches its report there)
        self._stop = threading.Event()
        self._final: tuple[dict[str, Any], str] | None = None
        self._drained = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlflow-export", daemon=True)
        self.errors = 0

    def start(self) -> "BackgroundExport":
        self._thread.start()
        return self

    def _round(self, final: bool) -> None:
        if self.first is not None:
            self.first()
            self.first = None
        self.exporter.push(self.run_dir, wait_for_samples=not final)

    def _loop(self) -> None:
        delay = 0.0
        while True:
            if self._stop.is_set():  # draining: retry on our own clock until the process exits
                time.sleep(delay)
                stopping = True
            else:
                stopping = self._stop.wait(delay)
            try:
                self._round(final=stopping)
                if stopping:
                    if self._final is not None:
                        self.exporter.finish(*self._final)
                    if self.last is not None:
                        self.last()
                    self._drained.set()
                    return
                delay = self.interval_s
            except Exception as exc:  # noqa: BLE001 - unreachable server: back off, keep buffering
                self.errors += 1
                self.exporter.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                delay = min(60.0, max(self.interval_s, delay * 2))
                if stopping:
                    if self._final is None:
                        return
                    delay = min(delay, 5.0)

    def drain(self, summary: dict[str, Any], status: str, timeout_s: float, stop_on_error: bool = False) -> bool:
        """Last push + runs terminated, within `timeout_s`. False: the server did not take it in
        time (the thread keeps trying until the process exits; the ledger holds the rest).
        `stop_on_error`: give up after FINAL_TRIES failed final rounds instead (a local store is
        never "down": repeated failures there are an error that waiting does not mend, while one
        may be a transient sqlite lock)."""
        errors = self.errors
        self._final = (summary, status)
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        while not self._drained.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or (stop_on_error and self.errors >= errors + self.FINAL_TRIES):
                return False
        return True
