"""The Ray driver: prepare models (build + quantize), then serve each engine group once.

Minimal scheduler for the foundation: stages run in dependency order with concurrency bounded
by the resources Ray reports (one actor at a time on a 2-core machine, where one engine already
uses every core). Each task result is handed to the sinks the moment it arrives. The grid
engine (ledger, leases, placement groups, retries) replaces `_run_stages`, not the workers.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import ConfigError, calibration_file, check_group_size, one_line
from orchestrator.ledger import Ledger
from orchestrator.plan import Plan
from orchestrator.results import ResultSink
from quantgrid.checkpoint import CheckpointError, model_dims, verify_checkpoint
from orchestrator.placement import actor_resources, nodes_from_ray
from quantgrid.runtime import PROJECT_ROOT
from quantgrid.types import Artifact, Stage, StageKind, file_sha256


# Failure classes worth another actor: the process or node went away, or it hung. Task errors,
# bad checkpoints and bad config fail their cells at once (retrying cannot help).
RETRYABLE = {"actor_died", "timeout", "oom"}


@dataclass
class RunSummary:
    done: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, class, message)
    engine_loads: dict[str, int] = field(default_factory=dict)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: int = 0  # cells already done in the ledger
    cancelled: bool = False


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def classify(exc: BaseException) -> tuple[str, str]:
    """(failure class, one-line message) for a stage error, as the ledger will record it."""
    import ray.exceptions as rex

    cause = exc
    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
    if isinstance(exc, (rex.ActorDiedError, rex.WorkerCrashedError, rex.NodeDiedError)):
        return "actor_died", one_line(exc, last=True)
    if isinstance(exc, rex.OutOfMemoryError) or isinstance(cause, MemoryError) or "out of memory" in str(cause).lower():
        return "oom", one_line(cause)
    if isinstance(exc, rex.GetTimeoutError):
        return "timeout", one_line(exc)
    if isinstance(cause, (CheckpointError, ConfigError)):
        return "bad_input", one_line(cause)
    if cause is exc and isinstance(exc, rex.RayTaskError):  # no cause object: the text ends with it
        return "error", one_line(exc, last=True)
    return "error", f"{type(cause).__name__}: {one_line(cause)}"


class Driver:
    def __init__(self, plan: Plan, sink: ResultSink, progress=None, verbose: bool = False,
                 ledger: Ledger | None = None):
        self.plan = plan
        self.sink = sink
        self.ledger = ledger
        self.sweep_name = plan.sweep.name
        # Cells the ledger already holds results for are never scored again (resume).
        self.done: set[str] = ledger.done_keys(self.sweep_name) if ledger else set()
        self.stage_timeout_s = float(plan.sweep.resources.get("stage_timeout_s") or 3600)
        self.max_retries = int(plan.sweep.resources.get("max_retries", 2))
        self._lost: tuple[str, str] = ("", "")  # (class, message) of the last lost attempt
        self.progress = progress  # callable(event: str, **info) for the CLI's rich progress
        self.verbose = verbose
        self.summary = RunSummary()
        self.commit = git_commit()

    def _emit(self, event: str, **info: Any) -> None:
        if self.progress:
            self.progress(event, **info)

    # -- Ray -----------------------------------------------------------------------------------
    def _init_ray(self) -> None:
        import ray

        sweep = self.plan.sweep
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = dict(log_to_driver=self.verbose, include_dashboard=False,
                                      configure_logging=True, logging_level="ERROR")
        if sweep.ray_address:
            ray.init(address=sweep.ray_address, **kwargs)
        else:
            # Workers import quantgrid from the same venv (editable install); no working_dir upload.
            ray.init(num_cpus=os.cpu_count(), **kwargs)

    def _actor_options(self, stage: Stage) -> dict[str, Any]:
        import ray

        opts = actor_resources(stage.model, nodes_from_ray(ray.nodes()), self.plan.sweep.resources,
                               kv_cache_gb=self.plan.sweep.engine.kv_cache_gb)
        tmp = Path(self.plan.sweep.run_dir).resolve() / "tmp" / stage.key
        tmp.mkdir(parents=True, exist_ok=True)
        opts["runtime_env"]["env_vars"]["TMPDIR"] = str(tmp)  # vLLM leaves /tmp/vllm_dist_* files
        return opts

    def _actor(self, stage: Stage):
        import ray

        from workers.actor import StageWorker

        return ray.remote(StageWorker).options(name=None, **self._actor_options(stage)).remote(self.commit)

    # -- stages -------------------------------------------------------------------------------
    def cancelled(self) -> bool:
        """`quantgrid cancel` flips the sweep's state in the ledger; we stop at the next cell."""
        if self.ledger is None:
            return False
        info = self.ledger.sweep_info(self.sweep_name)
        if info and info["state"] == "cancelled":
            self.summary.cancelled = True
        return self.summary.cancelled

    def todo(self, stage: Stage) -> list:
        return [c for c in stage.cells if c.key not in self.done]

    def run(self) -> RunSummary:
        t0 = time.perf_counter()
        pending = [s for s in self.plan.evaluate_stages if self.todo(s)]
        self.summary.skipped = sum(len(s.cells) - len(self.todo(s)) for s in self.plan.evaluate_stages)
        if not pending:
            return self.summary  # everything is in the ledger: no Ray, no engine load
        needed = {(s.model.name, s.format.name) for s in pending}
        self._init_ray()
        try:
            bases = self._build_models({m for m, _ in needed})
            # Every recipe is checked against its model's dims before any quantization starts.
            for stage in self.plan.stages:
                if stage.kind is StageKind.QUANTIZE and stage.model.name in bases:
                    check_group_size(stage.format, stage.model.name, model_dims(Path(bases[stage.model.name].path)))
            for model in self.plan.sweep.models:
                if model.name in bases:
                    self._quantize_model(model, bases[model.name], {f for m, f in needed if m == model.name})
            self._evaluate_all(pending)
        finally:
            self.summary.seconds = time.perf_counter() - t0
        return self.summary

    def _evaluate_all(self, pending: list[Stage]) -> None:
        """Engine groups in order. With `resources.reuse_actors` (CPU default) one actor process
        serves a model's groups one after another (vLLM imported once, ~17 s saved per group);
        each group still gets its own engine, loaded exactly once."""
        import ray

        reuse = bool(self.plan.sweep.resources.get("reuse_actors", False))
        actor, actor_model = None, None
        try:
            for stage in pending:
                if self.cancelled():
                    break
                if actor is not None and (not reuse or actor_model != stage.model.name):
                    ray.kill(actor)
                    actor = None
                if self.summary.artifacts.get(stage.depends_on[0]) is None:
                    self._evaluate(stage, None)
                    continue
                retries = 0
                while True:
                    actor = actor or self._actor(stage)
                    actor_model = stage.model.name
                    if self._evaluate(stage, actor):
                        break
                    ray.kill(actor)  # a broken actor is never reused
                    actor = None
                    left = self.todo(stage)
                    cls, msg = self._lost
                    if left and cls in RETRYABLE and retries < self.max_retries:
                        retries += 1
                        self._emit("retry", stage=stage.name, error_class=cls, message=msg, attempt=retries + 1)
                        continue
                    if left:  # out of retries, or deterministic: these cells fail, the sweep goes on
                        self._fail(Stage(StageKind.EVALUATE, stage.model, stage.format, cells=left), cls=cls, msg=msg)
                    break
        finally:
            if actor is not None:
                ray.kill(actor)

    def _fail(self, stage: Stage, exc: BaseException | None = None, cls: str = "", msg: str = "") -> None:
        if exc is not None:
            cls, msg = ("bad_input", str(exc)) if isinstance(exc, (ConfigError, CheckpointError)) else classify(exc)
        self.summary.failed.append((stage.name, cls, msg))
        if self.ledger:
            self.ledger.fail_cells(self.sweep_name, [c.key for c in self._affected_cells(stage)], cls, msg)
        self.sink.stage_failed(stage, cls, msg)
        self._emit("failed", stage=stage.name, error_class=cls, message=msg)

    def _affected_cells(self, stage: Stage) -> list:
        """The cells a failed stage takes down: its own, or every cell downstream of it."""
        if stage.cells:
            return stage.cells
        return [c for s in self.plan.evaluate_stages if s.model.name == stage.model.name
                and (stage.format is None or s.format.name == stage.format.name) for c in s.cells
                if c.key not in self.done]

    def _build_models(self, needed: set[str]) -> dict[str, Artifact]:
        """Base checkpoints (cached, content-addressed); a corrupt one is bad input, in one line."""
        import ray

        builds = [s for s in self.plan.stages if s.kind is StageKind.BUILD_MODEL and s.model.name in needed]
        bases: dict[str, Artifact] = {}
        actor = self._actor(builds[0])
        try:
            for stage in builds:
                self._emit("start", stage=stage.name)
                try:
                    base = ray.get(actor.build_model.remote(stage.model))
                except Exception as exc:
                    self._fail(stage, exc)
                    continue
                verify_checkpoint(Path(base.path))  # CheckpointError -> the CLI's one-line error
                bases[stage.model.name] = base
                self.summary.artifacts[stage.key] = base
                self.sink.artifact_ready(stage, base)
                self._emit("done", stage=stage.name, seconds=base.seconds, reused=base.reused)
        finally:
            ray.kill(actor)  # release the cores for the next stage
        return bases

    def _quantize_model(self, model, base: Artifact, formats: set[str]) -> None:
        """All recipes of one model in one actor lifetime (llmcompressor imports once)."""
        import ray

        stages = [s for s in self.plan.stages if s.kind is StageKind.QUANTIZE and s.model.name == model.name
                  and s.format.name in formats]
        actor = None
        try:
            for stage in stages:
                fmt = stage.format
                self._emit("start", stage=stage.name)
                if fmt.is_baseline:
                    art = Artifact(path=base.path, content_hash=base.content_hash, reused=True)
                else:
                    actor = actor or self._actor(stage)
                    try:
                        cal = str(calibration_file(fmt.calibration)) if fmt.calibration else None
                        art = ray.get(actor.quantize.remote(base, model, fmt, cal))
                        verify_checkpoint(Path(art.path))
                    except Exception as exc:  # one format failing must not stop the others
                        self._fail(stage, exc)
                        continue
                self.summary.artifacts[stage.key] = art
                self.sink.artifact_ready(stage, art)
                self._emit("done", stage=stage.name, seconds=art.seconds, reused=art.reused)
        finally:
            if actor is not None:
                ray.kill(actor)

    def _evaluate(self, stage: Stage, actor) -> bool:
        """Serve one engine group; returns whether the actor is still fit for reuse."""
        import ray

        art = self.summary.artifacts.get(stage.depends_on[0])
        cells = self.todo(stage)
        if art is None or actor is None:
            msg = f"{stage.name}: no checkpoint (quantize failed)"
            if self.ledger:
                self.ledger.fail_cells(self.sweep_name, [c.key for c in cells], "dependency_failed", msg)
            self.sink.stage_failed(stage, "dependency_failed", msg)
            self.summary.failed.append((stage.name, "dependency_failed", "no checkpoint"))
            return True
        try:
            pid = ray.get(actor.pid.remote(), timeout=self.stage_timeout_s)
        except Exception as exc:
            self._lost = classify(exc)
            return False
        token = (self.ledger.lease(self.sweep_name, stage.name, [c.key for c in cells], self.stage_timeout_s, worker_pid=pid)
                 if self.ledger else 0)
        try:
            self._emit("start", stage=stage.name, tasks=len(cells))
            cal = stage.format.calibration
            cal_hash = file_sha256(calibration_file(cal), 16) if cal else None
            ref = actor.open_engine.remote(art, stage.model, stage.format, stage.cells[0].engine, cal_hash)
            info = ray.get(ref, timeout=self.stage_timeout_s)
            self.summary.engine_loads[f"{stage.model.name}/{stage.format.name}/seed{stage.cells[0].seed}"] = info["loads"]
            self._emit("engine", stage=stage.name, **info)
        except ray.exceptions.RayTaskError as exc:  # engine failed to load: deterministic, not retried
            self._give_up(token, exc)
            self._fail(stage, exc)
            self._lost = ("error", "")
            return False
        except Exception as exc:
            self._give_up(token, exc)
            return False
        for cell in cells:
            if self.cancelled():
                break
            one = Stage(StageKind.EVALUATE, stage.model, stage.format, cells=[cell])
            try:
                result = ray.get(actor.evaluate.remote(cell), timeout=self.stage_timeout_s)
            except ray.exceptions.RayTaskError as exc:  # the task raised: the engine is still up
                self._fail(one, exc)
                continue
            except Exception as exc:  # actor died or hung: the caller retries the rest on a new actor
                self._give_up(token, exc)
                return False
            if self.ledger and not self.ledger.commit_result(self.sweep_name, token, result):
                self._emit("rejected", stage=stage.name, task=cell.task.name)
                continue
            self.done.add(cell.key)
            self.sink.task_result(cell, result)  # committed the moment it arrives
            self.summary.done += 1
            if self.ledger:
                self.ledger.renew(token, self.stage_timeout_s)
            self._emit("result", stage=stage.name, task=cell.task.name, score=result.score,
                       metric=cell.task.metric, seconds=result.seconds, tokens=result.tokens)
        if self.ledger:
            self.ledger.finish(token)
        return True

    def _give_up(self, token: int, exc: BaseException) -> None:
        """The attempt is lost (dead or hung actor): fence it off so a late result is rejected."""
        self._lost = classify(exc)
        if self.ledger and token:
            self.ledger.give_up(token, *self._lost)
