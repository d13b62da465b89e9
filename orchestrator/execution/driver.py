"""The Ray driver: turn a plan into jobs, run them with the scheduler, record every outcome.

The placement policy (orchestrator/planning/policy.py) makes jobs of the plan's stages for the cluster
Ray reports; the scheduler (orchestrator/execution/scheduler.py) runs them on actors. This module is the
bookkeeping both call back into: leases and results in the ledger (each result committed the
moment it arrives, fenced by its attempt's token), artifacts, failures, and the result sinks.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import calibration_file, check_group_size, one_line
from orchestrator.planning.cost import CostModel
from orchestrator.execution.adaptive import AdaptiveCell, document_order
from orchestrator.execution.faults import driver_fault
from orchestrator.execution.hooks import ActorSettings
from orchestrator.store.ledger import Ledger
from orchestrator.planning.placement import NodeShape, nodes_from_ray
from orchestrator.planning.plan import Plan
from orchestrator.planning.policy import Job, PlacementPolicy
from orchestrator.execution.mixed import assign
from orchestrator.store.results import ResultSink, read_generations, samples_file
from quantgrid.failures import FailureClass
from quantgrid.runtime import PROJECT_ROOT
from quantgrid.types import SCORING, Artifact, Cell, Comparison, Stage, StageKind, TaskResult, file_sha256, stable_hash


@dataclass
class RunSummary:
    done: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, class, message)
    engine_loads: dict[str, int] = field(default_factory=dict)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: int = 0  # cells already done in the ledger
    cancelled: bool = False
    rejected: int = 0  # late results fenced off by the ledger
    jobs: int = 0


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


class Driver:  # implements execution/hooks.py Hooks
    """Runs a plan on Ray. `worker` is (actor class, constructor args): the real StageWorker, or
    the SleepWorker for scheduler benches and fault tests."""

    def __init__(
        self,
        plan: Plan,
        sink: ResultSink,
        progress=None,
        verbose: bool = False,
        ledger: Ledger | None = None,
        worker: tuple[type, tuple] | None = None,
        nodes: list[NodeShape] | None = None,
        run_dir: Path | None = None,
    ):
        self.plan = plan
        self.sink = sink
        self.ledger = ledger
        self.sweep_name = plan.sweep.name
        # The sweep's folder (ledger, run store, logs): the CLI passes the one it created.
        self.run_dir = Path(run_dir).resolve() if run_dir else (Path(plan.sweep.run_dir) / plan.sweep.name).resolve()
        # Attempt logs, written by the workers: beside the ledger, or on storage every node mounts.
        logs = plan.sweep.logs_dir
        self.logs_dir = (Path(logs) / plan.sweep.name).resolve() if logs else self.run_dir / "logs"
        # Cells the ledger already holds results for are never scored again (resume).
        self.done: set[str] = ledger.done_keys(self.sweep_name) if ledger else set()
        self.progress = progress  # callable(event: str, **info) for the CLI's rich progress
        self.verbose = verbose
        self.summary = RunSummary()
        self.commit_id = git_commit()
        if worker is None:
            from workers.actor import StageWorker

            worker = (StageWorker, (self.commit_id,))
        self.worker = worker
        self.nodes = nodes
        self.policy: PlacementPolicy | None = None
        # Heartbeats renew a lease for this long (the scheduler's clock and the ledger's agree).
        self.lease_s = float(plan.sweep.resources.lease_s)
        # All the scheduler reads of the sweep (it never sees the plan: execution/hooks.py).
        self.settings = ActorSettings(
            resources=plan.sweep.resources,
            kv_cache_gb=plan.sweep.engine.kv_cache_gb,
            hub_offline=plan.sweep.hub_offline,
            perf_server=plan.sweep.perf.server,
        )
        self._cancel_checked = 0.0
        # Adaptive cells (orchestrator/execution/adaptive.py): their state, built at their first batch.
        self.adaptive: dict[str, AdaptiveCell | None] = {}
        self.baseline_cells = {
            (c.model.name, c.task.name, c.seed): c for c in plan.cells if c.format.name == plan.sweep.baseline
        }

    def emit(self, event: str, **info: Any) -> None:
        if self.progress:
            self.progress(event, **info)

    def _init_ray(self) -> None:
        import ray

        sweep = self.plan.sweep
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = dict(
            log_to_driver=self.verbose, include_dashboard=False, configure_logging=True, logging_level="ERROR"
        )
        if sweep.ray_address:
            ray.init(address=sweep.ray_address, **kwargs)
        else:
            # Workers import quantgrid from the same venv (editable install); no working_dir upload.
            # "local": a new instance, never a cluster someone `ray start`ed on this machine.
            ray.init(address="local", num_cpus=os.cpu_count(), **kwargs)

    def cancelled(self) -> bool:
        """`quantgrid cancel` flips the sweep's state in the ledger (checked at most every 0.5 s)."""
        if self.ledger is None or self.summary.cancelled:
            return self.summary.cancelled
        now = time.monotonic()
        if now - self._cancel_checked >= 0.5:
            self._cancel_checked = now
            info = self.ledger.sweep_info(self.sweep_name)
            self.summary.cancelled = bool(info and info["state"] == "cancelled")
        return self.summary.cancelled

    def todo(self, stage: Stage) -> list[Cell]:
        return [c for c in stage.cells if c.key not in self.done]

    def run(self) -> RunSummary:
        from orchestrator.execution.scheduler import Scheduler

        t0 = time.perf_counter()
        scoring = [s for s in self.plan.stages if s.kind in SCORING]
        self.summary.skipped = sum(len(s.cells) - len(self.todo(s)) for s in scoring)
        if not any(self.todo(s) for s in scoring):
            return self.summary  # everything is in the ledger: no Ray, no engine load
        self._init_ray()
        import ray

        try:
            nodes = self.nodes or nodes_from_ray(ray.nodes())
            self.policy = PlacementPolicy(nodes, self.plan.sweep.resources, CostModel(self.plan.sweep.cost))
            jobs = self.policy.jobs(self.plan.stages, self.todo)
            self.summary.jobs = len(jobs)
            Scheduler(self, jobs, nodes).run()
        finally:
            self.summary.seconds = time.perf_counter() - t0
        return self.summary

    # -- callbacks from the scheduler ------------------------------------------------------------
    def lease(self, job: Job, att, fallback: dict | None = None) -> int:
        if self.ledger is None:
            return 0
        node = getattr(att, "node_ids", "") or ",".join(str(b.node) for b in att.placement)
        return self.ledger.lease(
            self.sweep_name,
            job.name,
            [c.key for c in att.cells],
            self.lease_s,
            worker_pid=att.pid,
            node=node,
            fallback=fallback,
            log_path=att.log_path,
        )

    def renew(self, token: int, ttl_s: float) -> None:
        if self.ledger and token:
            self.ledger.renew(token, ttl_s)

    def give_up(self, token: int, cls: str, msg: str) -> None:
        """The attempt is lost (dead, hung or silent actor): fence it so a late result is rejected."""
        if self.ledger and token:
            self.ledger.give_up(token, cls, msg)

    def attempt_finished(self, token: int) -> None:
        if self.ledger and token:
            self.ledger.finish(token)

    def cell_started(self, cell: Cell) -> None:
        if self.ledger:
            self.ledger.start_cell(self.sweep_name, cell.key)

    def _calibration(self, job: Job) -> Path | None:
        cal = job.stage.format.calibration
        # Synthetic sweeps (benches) name calibration sets that exist only as sizes.
        return calibration_file(cal) if cal and not self.plan.sweep.synthetic else None

    def quantize_args(self, job: Job) -> tuple:
        base = self.summary.artifacts[job.stage.depends_on[0]]
        cal = self._calibration(job)
        # The calibration forward passes' dtype (float32 on a CPU without bf16 hardware): chosen
        # with the format's execution at plan time, it keys the checkpoint.
        ex = self.plan.sweep.execution.get(job.stage.model.name, {}).get(job.stage.format.name)
        cal_dtype, sanity = (ex.calibration_dtype if ex else ""), self.plan.sweep.sanity  # sanity: the gate's limits
        fmt = self._mixed_format(job.stage) if job.stage.format.mixed else job.stage.format
        return base, job.stage.model, fmt, str(cal) if cal else None, cal_dtype, sanity

    def base_artifact(self, job: Job) -> Artifact:
        """The base checkpoint a stage reads: its build stage's."""
        return self.summary.artifacts[job.stage.depends_on[0]]

    def _mixed_format(self, stage: Stage):
        """A mixed format with its assignment, solved on its candidates' sensitivity results
        (orchestrator/execution/mixed.py); raises Unresolved when a result is missing."""
        fmt, record = assign(stage, self.plan.sensitivity_cells, self.done, self.run_dir)
        out = self.run_dir / "mixed" / stage.model.name / f"{fmt.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1))  # the report's frontier reads it
        self.emit(
            "mixed",
            stage=stage.name,
            bits=record["bits"],
            predicted_kl=record["predicted_kl"],
            groups=record["groups"],
        )
        return fmt

    def engine_args(self, job: Job) -> tuple[Artifact, str | None]:
        cal = self._calibration(job)
        spec = job.stage.format.calibration
        # A hub dataset is identified by its config (repo, revision, split, field); the quantize
        # stage keys the checkpoint on the staged file's bytes.
        ident = file_sha256(cal, 16) if cal else (stable_hash(spec) if spec and spec.get("hf_dataset") else None)
        return self.summary.artifacts[job.stage.depends_on[0]], ident

    def baseline_artifact(self, job: Job) -> None:
        base = self.summary.artifacts[job.stage.depends_on[0]]
        self._publish(job.stage, Artifact(path=base.path, content_hash=base.content_hash, reused=True, dims=base.dims))

    def artifact_ready(self, job: Job, art: Artifact) -> bool:
        """A built or quantized checkpoint (verified by the worker that wrote it)."""
        if job.kind is StageKind.BUILD_MODEL and art.dims:
            # Every recipe is checked against its model's dims before any quantization starts;
            # a mismatch is bad config: the CLI stops with one line.
            for s in self.plan.stages:
                if s.kind is StageKind.QUANTIZE and s.model.name == job.stage.model.name:
                    check_group_size(s.format, s.model.name, art.dims)
        self._publish(job.stage, art)
        return True

    def _publish(self, stage: Stage, art: Artifact) -> None:
        self.summary.artifacts[stage.key] = art
        if self.ledger:
            self.ledger.record_artifact(self.sweep_name, stage.name, art.path, art.content_hash)
        self.sink.artifact_ready(stage, art)
        self.emit("done", stage=stage.name, seconds=art.seconds, reused=art.reused, sanity=art.sanity)

    def comparison_pairs(self, comp: Comparison) -> tuple[list[tuple[int, str, str]] | None, str]:
        """(doc_id, baseline output, output) for every document both cells generated for, read
        from the run store; (None, why) when a side has no result (its cell failed)."""
        missing = [c for c in (comp.baseline, comp.cell) if c.key not in self.done]
        if missing:
            return (
                None,
                f"no outputs to compare: {', '.join(f'{c.format.name}/{c.task.name}' for c in missing)} has no result",
            )
        if self.plan.sweep.synthetic:
            return [], ""
        outputs = []
        for c in (comp.baseline, comp.cell):
            path = samples_file(self.run_dir, c.model.name, c.format.name, c.task.name, c.key)
            try:
                outputs.append(read_generations(path))
            except Exception as exc:  # noqa: BLE001 - missing or damaged file: this comparison fails
                return (
                    None,
                    f"cannot read the outputs of {c.format.name}/{c.task.name} ({path}): {type(exc).__name__}: "
                    f"{one_line(exc)}",
                )
        base, other = outputs
        return [(d, base[d], other[d]) for d in sorted(set(base) & set(other))], ""

    def engine_opened(self, job: Job, info: dict) -> None:
        if job.kind is not StageKind.EVALUATE:  # an encoder or a vllm serve, not an lm-eval engine load
            self.emit("engine", stage=job.name, **info)
            return
        group = f"{job.stage.model.name}/{job.stage.format.name}/seed{job.cells[0].seed}"
        self.summary.engine_loads[group] = self.summary.engine_loads.get(group, 0) + 1
        self.emit("engine", stage=job.name, **info)

    # -- adaptive cells: scored batch by batch (orchestrator/execution/adaptive.py) -----------------
    def _adaptive(self, cell: Cell) -> AdaptiveCell | None:
        """The cell's adaptive state (its committed batches read back from the ledger), or None
        when it is scored whole: not adaptive, or the baseline has no scores to pair with."""
        if not cell.task.adaptive:
            return None
        if cell.key not in self.adaptive:
            self.adaptive[cell.key] = self._open_adaptive(cell)
        return self.adaptive[cell.key]

    def _open_adaptive(self, cell: Cell) -> AdaptiveCell | None:
        from orchestrator.report.paper import load_samples

        base = self.baseline_cells.get((cell.model.name, cell.task.name, cell.seed))
        why = ""
        if base is None or base.key not in self.done:
            why = f"the baseline's {cell.task.name} has no result"
        else:
            path = samples_file(self.run_dir, base.model.name, base.format.name, base.task.name, base.key)
            try:
                s = load_samples(path, cell.task.metric)
                y = dict(zip(s.doc_ids.astype(int).tolist(), s.values.astype(float).tolist()))
            except Exception as exc:  # noqa: BLE001 - a missing or damaged file: score the cell whole
                why = f"cannot read the baseline's samples ({path}): {type(exc).__name__}: {one_line(exc)}"
        if not why and not y:
            why = f"the baseline's {cell.task.name} scored no document under {cell.task.metric}"
        if why:
            self.emit("adaptive", stage=f"{cell.model.name}/{cell.format.name}", task=cell.task.name, skipped=why)
            return None
        a = cell.task.adaptive
        order = document_order(list(y), int(a["seed"]), cell.task.name, cell.seed)
        order = order[: int(a["max_documents"])] if int(a["max_documents"]) else order
        state = AdaptiveCell(cell, order, {d: y[d] for d in order})
        if self.ledger:
            state.batches = self.ledger.batches(self.sweep_name, cell.key)
        if state.batches and state.batches[-1]["verdict"]["final"]:
            # Decided, but the driver stopped before the merged result was committed: that last
            # batch is scored again (its ledger row is replaced), and the result committed then.
            state.undo()
        return state

    def next_documents(self, cell: Cell) -> list[int] | None:
        """The documents of the cell's next scoring call: its next batch, or None (all of them)."""
        state = self._adaptive(cell)
        return state.next_documents() if state is not None and not state.finished else None

    def continues(self, cell: Cell) -> bool:
        """True while an adaptive cell's verdict is open: the scheduler sends it again."""
        state = self.adaptive.get(cell.key)
        return state is not None and not state.finished

    def _commit_batch(self, att, state: AdaptiveCell, result: TaskResult) -> bool:
        documents = state.next_documents()
        row = state.add(result, documents)
        if self.ledger:
            reason = self.ledger.commit_batch(
                self.sweep_name, att.token, state.cell.key, row["batch"], documents, row["samples"], row["verdict"]
            )
            if reason:
                state.undo()
                return False
        v = row["verdict"]
        state.finished = bool(v["final"])
        self.emit(
            "batch",
            stage=att.job.name,
            task=state.cell.task.name,
            verdict=v["verdict"],
            documents=v["documents"],
            max_documents=v["max_documents"],
            seconds=result.seconds,
        )
        return True

    def commit(self, att, result: TaskResult) -> bool:
        """Record a task result exactly once, only from the attempt holding the lease. Its files
        first (atomically), then the ledger row that points at them (path, size, SHA-256): a crash
        in between costs a rescore, never a done cell without samples. An adaptive cell's batch is
        recorded as a batch; its last one also commits the merged result."""
        cell = att.current
        if getattr(att, "fallback", None):  # the engine this result came from was built after an OOM
            result.provenance["oom_fallback"] = dict(att.fallback)
        state = self.adaptive.get(cell.key)
        if state is not None and not state.finished:
            if not self._commit_batch(att, state, result):
                return self._rejected(att)
            if not state.finished:
                return True
            result = state.merged(result)
        elif cell.task.adaptive and state is None:  # scored whole: say why in its record
            result.provenance["adaptive"] = {"skipped": "the baseline had no per-document scores to pair with"}
        # A fenced-off attempt writes nothing (its files would replace the live attempt's); the
        # second check, at commit, is not reached while the driver is the ledger's only writer.
        # The lease itself was renewed when this reply arrived (Scheduler._on_work).
        if self.ledger and self.ledger.reject_if_fenced(self.sweep_name, att.token, result.cell_key):
            return self._rejected(att, state)
        self.sink.write_files(result)
        driver_fault("after_samples")
        if self.ledger and not self.ledger.commit_result(self.sweep_name, att.token, result):
            return self._rejected(att, state)
        self.done.add(cell.key)
        if state is not None and self.ledger:  # the merged result holds them now
            self.ledger.drop_batch_samples(self.sweep_name, cell.key)
        self.sink.task_result(cell, result)
        self.summary.done += 1
        self.emit(
            "result",
            stage=att.job.name,
            task=cell.task.name,
            score=result.score,
            metric=cell.task.metric,
            seconds=result.seconds,
            tokens=result.tokens,
        )
        return True

    def _rejected(self, att, state: AdaptiveCell | None = None) -> bool:
        if state is not None and state.finished:  # its merged result did not land: the last batch is scored again
            state.undo()
            state.finished = False
        self.summary.rejected += 1
        self.emit("rejected", stage=att.job.name, task=att.current.task.name)
        return False

    def fail_cells(self, job: Job, cells: list[Cell], cls: str, msg: str) -> None:
        if not cells:
            return
        stage = Stage(job.kind, job.stage.model, job.stage.format, cells=cells)
        name = stage.name + (f" [{', '.join(c.task.name for c in cells)}]" if len(cells) < len(job.stage.cells) else "")
        self.summary.failed.append((name, cls, msg))
        if self.ledger:
            self.ledger.fail_cells(self.sweep_name, [c.key for c in cells], cls, msg)
        self.sink.stage_failed(stage, cls, msg)
        self.emit("failed", stage=name, error_class=cls, message=msg)

    def fail_stage(self, job: Job, cls: str, msg: str) -> None:
        """A build or quantize stage failed: every cell downstream of it fails with this cause."""
        stage = job.stage
        self.summary.failed.append((stage.name, cls, msg))
        cells = [
            c
            for s in self.plan.stages
            if s.kind in SCORING
            and s.model.name == stage.model.name
            and (stage.format is None or s.format.name == stage.format.name)
            # a sensitivity stage reads the base model, not the format's checkpoint
            and (s.kind is not StageKind.SENSITIVITY or stage.kind is StageKind.BUILD_MODEL)
            for c in s.cells
            if c.key not in self.done
        ]
        if self.ledger:
            self.ledger.fail_cells(self.sweep_name, [c.key for c in cells], cls, msg)
        self.sink.stage_failed(stage, cls, msg)
        self.emit("failed", stage=stage.name, error_class=cls, message=msg)

    def dependency_failed(self, job: Job) -> None:
        if job.kind in SCORING:
            msg = (
                f"{job.stage.name}: an engine group it compares failed"
                if job.kind is StageKind.SIMILARITY
                else f"{job.stage.name}: no checkpoint (an upstream stage failed)"
            )
            if self.ledger:  # first cause sticks: cells already failed keep the upstream reason
                self.ledger.fail_cells(
                    self.sweep_name, [c.key for c in job.cells], FailureClass.DEPENDENCY_FAILED.value, msg
                )
            self.sink.stage_failed(job.stage, FailureClass.DEPENDENCY_FAILED.value, msg)
