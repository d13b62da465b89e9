"""The Ray event loop: start jobs where the placement policy says, follow each attempt, recover.

One `Attempt` per job run on an actor: begin (pid, log file) -> lease in the ledger -> build /
quantize, or open_engine then one evaluate call per cell. The loop waits on every outstanding
call at once (`ray.wait`), so many engines run concurrently on a cluster; concurrency is bounded
by the resources Ray reports, through `ClusterState`.

Failure classes (quantgrid/failures.py FailureClass, each with its Recovery; orchestrator/execution/failures.py
classifies what Ray and the workers raise):
- actor or node death -> the attempt is given up (fenced) and the job's remaining cells retried
  on a new actor, up to resources.max_retries;
- hang: a call running past resources.stage_timeout_s -> given up, actor killed, retried; an
  actor that stops answering heartbeats for resources.lease_s (paused, partitioned) -> given
  up and retried at once; the old actor is kept as a zombie (until its resources are needed,
  at most stage_timeout_s) so a late result can arrive and be rejected by the ledger's fencing;
- out of memory -> retried with the next fallback of resources.oom_fallbacks (smaller batch,
  shorter max_model_len, larger TP), recorded on the attempt in the ledger;
- anything deterministic (task error, bad checkpoint, bad config) -> that cell (or stage) fails
  at once and the rest of the sweep goes on.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.execution.failures import classify, recovery_of
from orchestrator.execution.faults import driver_fault
from orchestrator.execution.hooks import Hooks
from orchestrator.execution.stages import STAGES
from orchestrator.planning.placement import ClusterState, NodeShape, Placement, ray_options
from orchestrator.planning.policy import Job, ReadyQueue
from quantgrid.failures import FailureClass, Recovery
from quantgrid.types import SCORING, Cell

TICK_S = 0.25
# How often the node list is read again from Ray besides after every actor failure: an actor
# pinned to a node that died never starts and never fails, so only a refresh notices it.
NODE_REFRESH_S = 10.0


# Fallbacks that can change a score, not only how fast it is computed: a shorter max_model_len
# truncates long documents (lm-eval cuts prompts from the left). Batch size and tensor parallelism
# change the numerics only at float rounding (recorded all the same).
SCORE_CHANGING_FALLBACKS = {"halve_max_model_len"}


def apply_fallback(step: str, model, engine):
    """One OOM fallback step -> (model, engine) or None when it cannot apply."""
    if step == "halve_batch_size":
        bs = engine.batch_size
        new = 16 if isinstance(bs, str) else bs // 2  # "auto" filled the memory: fix a modest batch
        return None if new < 1 else (model, replace(engine, batch_size=new))
    if step == "halve_max_model_len":
        return None if model.max_model_len <= 256 else (replace(model, max_model_len=model.max_model_len // 2), engine)
    if step == "double_tensor_parallel":
        return replace(model, tensor_parallel_size=model.tensor_parallel_size * 2), engine
    raise ValueError(f"unknown OOM fallback {step!r}")


@dataclass(eq=False)
class Attempt:
    job: Job
    actor: Any
    placement: Placement
    pg: Any = None
    token: int = 0
    phase: str = "begin"
    ref: Any = None
    call_started: float = 0.0
    cells: list[Cell] = field(default_factory=list)
    current: Cell | None = None
    ping_ref: Any = None
    ping_sent: float = 0.0
    last_alive: float = 0.0
    zombie_until: float = 0.0
    pid: int = 0
    log_path: str = ""
    fallback: dict | None = None  # the OOM fallback steps this attempt's engine was built with
    node_ids: str = ""  # the Ray nodes it actually runs on (a placement group's, once ready)

    @property
    def unscored(self) -> list[Cell]:
        """The cell in flight (if a scoring call is out) and those not started yet."""
        return ([self.current] if self.phase == "eval" and self.current else []) + self.cells


class Scheduler:
    def __init__(self, drv: Hooks, jobs: list[Job], nodes: list[NodeShape]):
        import ray

        self.ray = ray
        self.drv = drv
        res = self.resources = drv.settings.resources
        self.lease_s = drv.lease_s
        self.heartbeat_s = self.lease_s / 4
        self.stage_timeout_s = float(res.stage_timeout_s)
        self.start_timeout_s = float(res.start_timeout_s)
        self.max_retries = res.max_retries
        self.fallbacks = list(res.oom_fallbacks)
        self.reuse_actors = res.reuse_actors
        self.state = ClusterState(nodes)
        self.nodes = self.state.nodes  # one list: nodes that join are appended, indices never change
        self.nodes_read = time.time()
        self.jobs = {j.id: j for j in jobs}
        self.deps = {j.id: set(j.deps) for j in jobs}
        self.children: dict[str, list[Job]] = {}
        for j in jobs:
            for d in j.deps:
                self.children.setdefault(d, []).append(j)
        self.ready = ReadyQueue()
        for j in jobs:
            if not j.deps:
                self.ready.push(j)
        self.left = len(jobs)
        self.tries: dict[str, int] = {}
        self.fallback_level: dict[str, int] = {}
        self.overrides: dict[str, tuple] = {}  # job id -> (model, engine) after OOM fallbacks
        self.running: list[Attempt] = []
        self.zombies: list[Attempt] = []
        self.idle: list[tuple[Any, Placement, tuple, Any]] = []  # (actor, placement, actor key, pg)
        self.refs: dict[Any, tuple[Attempt, str]] = {}
        self._reused: dict[str, tuple[Any, Any]] = {}

    # -- main loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while self.left > 0:
                if self.drv.cancelled():
                    return
                self._dispatch()
                if not self.running and not self.zombies and self.left > 0 and not self.refs:
                    lost = (
                        f"; lost nodes: {sorted(self.nodes[i].node_id[:12] for i in self.state.dead)}"
                        if self.state.dead
                        else ""
                    )
                    raise RuntimeError(
                        f"scheduler stalled: {len(self.ready)} ready jobs fit no node of the cluster "
                        f"(free per node: {self.state.free}; waiting: {self.ready.shapes()}{lost})"
                    )
                done, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=TICK_S) if self.refs else ([], [])
                if done:  # take everything already finished, not just one
                    more, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
                    done = list(dict.fromkeys([*done, *more]))
                for ref in done:
                    entry = self.refs.pop(ref, None)  # None: dropped while handling an earlier one
                    if entry is not None:
                        self._on_ping(entry[0], ref) if entry[1] == "ping" else self._on_work(entry[0], ref)
                self._check_clocks()
        finally:
            for att in self.running + self.zombies:
                self._kill(att.actor, att.placement, att.pg)
            for actor, placement, _, pg in self.idle:
                self._kill(actor, placement, pg)
            self.running, self.zombies, self.idle = [], [], []

    def _dispatch(self) -> None:
        while self._dispatch_once():  # launching a zero-length job (baseline) readies its children
            pass

    def _dispatch_once(self) -> bool:
        started = self.drv.policy.dispatch(self.ready, self.state, self._take_idle if self.reuse_actors else None)
        if len(self.ready) and self.idle:
            # Idle actors hold what the next job needs: release them first.
            for actor, placement, _, pg in self.idle:
                self._kill(actor, placement, pg)
            self.idle = []
            started += self.drv.policy.dispatch(self.ready, self.state)
        if len(self.ready) and self.zombies:
            # Then zombies waiting to deliver a late result (one otherwise lives until
            # stage_timeout_s): their late result is then lost to fencing, never to the ledger.
            for att in list(self.zombies):
                self._bury(att)
            started += self.drv.policy.dispatch(self.ready, self.state)
        before = len(self.ready)
        for job, placement in started:
            self._launch(job, placement)
        return len(self.ready) > before

    def _take_idle(self, job: Job) -> Placement | None:
        for i, (actor, placement, key, pg) in enumerate(self.idle):
            if key == job.actor_key:
                self.idle.pop(i)
                self._reused[job.id] = (actor, pg)
                return placement
        return None

    # -- attempts ----------------------------------------------------------------------------------
    def _launch(self, job: Job, placement: Placement) -> None:
        without_actor = STAGES[job.kind].without_actor
        if without_actor and without_actor(job, self.drv):
            self._job_done(job)
            return
        actor, pg = self._reused.pop(job.id, (None, None))
        if actor is None:
            actor, pg = self._create_actor(job, placement)
        att = Attempt(job, actor, placement, pg, cells=list(job.cells), last_alive=time.time())
        self.running.append(att)
        n = self.tries.get(job.id, 0) + self.fallback_level.get(job.id, 0) + 1
        if not self.drv.verbose:  # -v streams worker output to the console instead
            att.log_path = str(self.drv.logs_dir / f"{re.sub(r'[^A-Za-z0-9_.#-]+', '_', job.name)}-try{n}.log")
        self._call(att, "begin", actor.begin.remote(att.log_path))
        self.drv.emit("start", stage=job.name, tasks=len(job.cells), attempt=n)

    def _create_actor(self, job: Job, placement: Placement):
        import os

        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

        settings = self.drv.settings
        opts = ray_options(placement, self.nodes, settings.kv_cache_gb, hub_offline=settings.hub_offline)
        bundles = opts.pop("_placement_group_bundles", None)
        node_id = opts.pop("_node_id", None)
        pg = None
        if bundles:
            pg = placement_group(bundles, strategy="PACK", name=f"quantgrid-{job.id[:24]}")
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
            )
        elif node_id and len(self.nodes) > 1:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        # Per-stage Python environments (resources.runtime_env): quantize actors may need their own
        # (llmcompressor and vLLM pin different compressed-tensors), e.g. {py_executable: /opt/quantize/bin/python}.
        stage_env = dict(
            (self.resources.runtime_env.get("quantize" if job.actor_key[0] == "prepare" else job.actor_key[0])) or {}
        )
        opts["runtime_env"]["env_vars"].update(stage_env.pop("env_vars", None) or {})
        opts["runtime_env"].update(stage_env)
        env = opts["runtime_env"]["env_vars"]
        tmp = Path(self.drv.run_dir) / "tmp" / job.stage.key
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)  # vLLM leaves /tmp/vllm_dist_* files
        for k in ("QUANTGRID_FAULTS", "QUANTGRID_FAULTS_DIR", "QUANTGRID_CACHE"):
            if os.environ.get(k):
                env[k] = os.environ[k]
        cls, args = self.drv.worker
        # Work calls run one at a time on ONE thread (vLLM-CPU binds its OpenMP threads to the
        # thread that built the engine: calls from another thread ran ~1.3-2x slower); `ping`
        # has its own group so heartbeats are answered while a stage runs.
        remote = self.ray.remote(concurrency_groups={"heartbeat": 1})(cls)
        return remote.options(**opts).remote(*args), pg

    def _call(self, att: Attempt, phase: str, ref) -> None:
        att.phase, att.ref, att.call_started = phase, ref, time.time()
        self.refs[ref] = (att, "work")

    def _next_call(self, att: Attempt) -> None:
        job, actor, drv = att.job, att.actor, self.drv
        handler = STAGES[job.kind]
        if att.phase == "begin":
            model, engine = self.overrides.get(job.id, (job.stage.model, None))
            fb = {"steps": self.fallbacks[: self.fallback_level[job.id]]} if self.fallback_level.get(job.id) else None
            att.fallback = (
                {**fb, "may_change_scores": bool(set(fb["steps"]) & SCORE_CHANGING_FALLBACKS)} if fb else None
            )
            att.token = drv.lease(job, att, fallback=fb)
            self._call(att, *handler.begin(actor, job, drv, model, engine))
            return
        while handler.score and att.cells and not self.drv.cancelled():
            att.current = att.cells.pop(0)
            ref = handler.score(actor, job, drv, att.current)
            if ref is not None:  # None: settled without a call (a comparison with a side missing)
                self._call(att, "eval", ref)
                return
        att.current = None
        if handler.closes and att.phase != "close":  # stop the server now, not when the actor goes
            self._call(att, "close", actor.close.remote())
            return
        drv.attempt_finished(att.token)
        self._release(att)
        self._job_done(att.job)

    def _on_work(self, att: Attempt, ref) -> None:
        try:
            value = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - every failure is classified below
            return self._on_error(att, exc)
        if att in self.zombies:  # a late result from an attempt already given up
            if att.phase == "eval":
                self.drv.commit(att, value)  # rejected by the ledger's fencing, and counted
            self._bury(att)
            return
        if att.phase == "eval":
            driver_fault("before_result")
        # Any reply is a sign of life, not only a heartbeat's: renew the lease before committing,
        # so a driver loop that stalled past lease_s never makes the ledger reject a live result.
        att.last_alive = time.time()
        if att.phase != "begin":
            self.drv.renew(att.token, self.lease_s)
        if att.phase == "begin":
            att.pid = value
            att.last_alive = time.time()  # the lease starts now
            self._adopt_placement(att)
        elif att.phase == "work":
            if not self.drv.artifact_ready(att.job, value):
                self._release(att)
                self._fail_job(att.job)
                return
        elif att.phase == "open":
            self.drv.engine_opened(att.job, value)
        elif att.phase == "eval":
            if self.drv.commit(att, value) and self.drv.continues(att.current):
                att.cells.insert(0, att.current)  # an adaptive cell's next batch, on the same engine
        self._next_call(att)

    def _on_error(self, att: Attempt, exc: BaseException) -> None:
        if att in self.zombies:
            self._bury(att)
            return
        cls, msg = classify(exc)
        job = att.job
        remaining = att.unscored
        if recovery_of(cls) is Recovery.FAIL:
            if att.phase == "eval":
                self.drv.fail_cells(job, [att.current], cls, msg)
                att.current = None
                self._next_call(att)  # the engine is still up: next task
                return
            self.drv.give_up(att.token, cls, msg)
            self._kill(att.actor, att.placement, att.pg, att)
            self._give_up_job(job, remaining, cls, msg)
            return
        self.drv.give_up(att.token, cls, msg)
        self._kill(att.actor, att.placement, att.pg, att)
        if cls == FailureClass.ACTOR_DIED.value:  # its node may be gone: place the retry on the nodes alive now
            self._refresh_nodes()
        self._retry(job, remaining, cls, msg)

    def _retry(self, job: Job, remaining: list[Cell], cls: str, msg: str) -> None:
        if job.kind in SCORING and not remaining:
            self._job_done(job)
            return
        if recovery_of(cls) is Recovery.FALLBACK and STAGES[job.kind].engine_fallbacks:
            level = self.fallback_level.get(job.id, 0)
            model, engine = self.overrides.get(job.id, (job.stage.model, job.cells[0].engine))
            while level < len(self.fallbacks):
                step = self.fallbacks[level]
                level += 1
                nxt = apply_fallback(step, model, engine)
                if nxt is not None and self._fits(nxt[0]):
                    self.fallback_level[job.id] = level
                    self.overrides[job.id] = nxt
                    job.cells = remaining
                    self.drv.emit("fallback", stage=job.name, step=step, message=msg)
                    self._requeue(job)
                    return
            return self._give_up_job(job, remaining, cls, msg + " (no OOM fallback left)")
        n = self.tries.get(job.id, 0)
        if recovery_of(cls) is Recovery.RETRY and n < self.max_retries:
            self.tries[job.id] = n + 1
            job.cells = remaining
            self.drv.emit("retry", stage=job.name, error_class=cls, message=msg, attempt=n + 2)
            self._requeue(job)
            return
        self._give_up_job(job, remaining, cls, msg)

    def _fits(self, model) -> bool:
        from orchestrator.planning.placement import demand

        if model.tensor_parallel_size > 1 and not any(n.gpus for n in self.nodes):
            return False  # tensor parallelism is a GPU fallback: a CPU engine gains no memory from it
        try:
            demand(model, self.nodes, self.resources, "evaluate")
            return True
        except ValueError:
            return False

    def _requeue(self, job: Job) -> None:
        model = self.overrides.get(job.id, (job.stage.model,))[0]
        if model is not job.stage.model:
            from orchestrator.planning.placement import demand

            job.demand = demand(model, self.nodes, self.resources, "evaluate")
        self.ready.push(job)

    def _give_up_job(self, job: Job, remaining: list[Cell], cls: str, msg: str) -> None:
        if job.kind in SCORING:
            self.drv.fail_cells(job, remaining, cls, msg)
            self._job_done(job)
        else:
            self.drv.fail_stage(job, cls, msg)
            self._fail_job(job)

    def _on_ping(self, att: Attempt, ref) -> None:
        att.ping_ref = None
        try:
            self.ray.get(ref)
        except Exception:  # noqa: BLE001 - a dead actor shows on its work call too
            return
        if att in self.running:
            att.last_alive = time.time()
            self.drv.renew(att.token, self.lease_s)

    # -- the cluster as it is -------------------------------------------------------------------
    def _adopt_placement(self, att: Attempt) -> None:
        """A placement group is ready once its actor has started: account for the nodes its
        bundles are really on (Ray's PACK is best effort), not the ones the policy chose."""
        if att.pg is not None:
            from orchestrator.planning.placement import placement_from_bundles
            from ray.util.placement_group import placement_group_table

            table = placement_group_table(att.pg)
            try:
                actual = placement_from_bundles(table.get("bundles_to_node_id") or {}, att.pg.bundle_specs, self.nodes)
            except KeyError:  # on a node that joined after the last refresh
                self._refresh_nodes()
                actual = placement_from_bundles(table.get("bundles_to_node_id") or {}, att.pg.bundle_specs, self.nodes)
            if set(actual) != set(att.placement):
                self.state.adopt(att.placement, actual)
                self.drv.emit(
                    "placement",
                    stage=att.job.name,
                    planned=[b.node for b in att.placement],
                    actual=[b.node for b in actual],
                )
                att.placement = actual
        att.node_ids = ",".join(self.nodes[b.node].node_id or str(b.node) for b in att.placement)

    def _refresh_nodes(self) -> None:
        """Read the alive nodes again: a dead node gets no more work, attempts still waiting to
        start on it are retried elsewhere now (instead of after start_timeout_s), new nodes join."""
        self.nodes_read = time.time()
        if not any(n.node_id for n in self.nodes):
            return  # a simulated or injected cluster: nothing to ask Ray
        from orchestrator.planning.placement import nodes_from_ray

        try:
            alive = nodes_from_ray(self.ray.nodes())
        except Exception:  # noqa: BLE001 - the GCS is briefly unreachable: try again at the next refresh
            return
        dead, added = self.state.sync(alive)
        for i in added:
            self.drv.emit("node", state="joined", node=self.nodes[i].node_id[:12])
        if not dead:
            return
        for i in dead:
            self.drv.emit("node", state="lost", node=self.nodes[i].node_id[:12])
        for att in list(self.running):
            if att.phase == "begin" and any(b.node in dead for b in att.placement):
                msg = f"node {self.nodes[att.placement[0].node].node_id[:12]} died before the actor started"
                self._kill(att.actor, att.placement, att.pg, att)
                self._retry(att.job, list(att.cells), FailureClass.ACTOR_DIED.value, msg)

    def _check_clocks(self) -> None:
        now = time.time()
        if now - self.nodes_read > NODE_REFRESH_S:
            self._refresh_nodes()
        for att in list(self.running):
            if att.phase == "begin":  # actor still starting (or waiting for its placement group)
                if now - att.call_started > self.start_timeout_s:
                    self._kill(att.actor, att.placement, att.pg, att)
                    self._retry(
                        att.job,
                        list(att.cells),
                        FailureClass.TIMEOUT.value,
                        f"actor did not start within start_timeout_s={self.start_timeout_s:g}",
                    )
                continue
            if att.ping_ref is None and now - att.ping_sent >= self.heartbeat_s:
                att.ping_ref, att.ping_sent = att.actor.ping.remote(), now
                self.refs[att.ping_ref] = (att, "ping")
            if now - att.call_started > self.stage_timeout_s:
                msg = f"{att.phase} call ran past stage_timeout_s={self.stage_timeout_s:g}"
                self._drop_refs(att)
                self.drv.give_up(att.token, FailureClass.TIMEOUT.value, msg)
                self._kill(att.actor, att.placement, att.pg, att)
                self._retry(att.job, att.unscored, FailureClass.TIMEOUT.value, msg)
            elif now - att.last_alive > self.lease_s:
                # Paused or cut off: fence it, retry elsewhere now, keep it one more lease so its
                # late result (if any) arrives and is rejected rather than lost in a killed process.
                msg = f"no heartbeat for {now - att.last_alive:.0f}s (lease_s={self.lease_s:g})"
                self.drv.give_up(att.token, FailureClass.LEASE_EXPIRED.value, msg)
                self.running.remove(att)
                att.zombie_until = now + self.stage_timeout_s
                self.zombies.append(att)
                self._retry(att.job, att.unscored, FailureClass.LEASE_EXPIRED.value, msg)
        for att in list(self.zombies):
            if now > att.zombie_until:
                self._bury(att)

    # -- bookkeeping -------------------------------------------------------------------------------
    def _drop_refs(self, att: Attempt) -> None:
        for ref in [r for r, (a, _) in self.refs.items() if a is att]:
            self.refs.pop(ref)

    def _bury(self, att: Attempt) -> None:
        self._drop_refs(att)
        if att in self.zombies:
            self.zombies.remove(att)
        self._kill(att.actor, att.placement, att.pg)

    def _kill(self, actor, placement: Placement, pg=None, att: Attempt | None = None) -> None:
        if att is not None:
            self._drop_refs(att)
            if att in self.running:
                self.running.remove(att)
        try:
            self.ray.kill(actor)
        except Exception:  # noqa: BLE001 - already gone
            pass
        if pg is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(pg)
        self.state.release(placement)

    def _release(self, att: Attempt) -> None:
        """A finished attempt's actor: kept idle for the next job of its kind, or killed."""
        self._drop_refs(att)
        if att in self.running:
            self.running.remove(att)
        if self.reuse_actors:
            self.idle.append((att.actor, att.placement, att.job.actor_key, att.pg))
        else:
            self._kill(att.actor, att.placement, att.pg)

    def _job_done(self, job: Job) -> None:
        self.left -= 1
        for child in self.children.get(job.id, []):
            if self.deps.get(child.id) is None:  # already dropped with another failed parent
                continue
            self.deps[child.id].discard(job.id)
            if not self.deps[child.id]:
                self.ready.push(child)

    def _fail_job(self, job: Job) -> None:
        """A build or quantize job failed: everything downstream is dropped (its cells already
        carry the first cause in the ledger)."""
        self.left -= 1
        for child in self.children.get(job.id, []):
            if self.deps.get(child.id) is not None:
                self.deps[child.id] = None
                self.drv.dependency_failed(child)
                self._fail_job(child)
