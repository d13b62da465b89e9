"""`quantgrid submit sweep=... --address http://HEAD:8265`: run a sweep as a Ray job on a cluster.

The sweep is composed and validated here first (bad config never reaches the cluster), then
handed to Ray's job submission API: the project directory is the job's working_dir and the
entrypoint is `quantgrid run` with the same overrides and `ray_address=auto`, so the driver runs
on the head node, next to the ledger. Secrets never travel with the job: a gated model's token
is read on the cluster from the environment its nodes provide (a Kubernetes Secret on KubeRay).
`status`, `logs`, `resume` and `cancel` then work on the sweep's run directory as for any run;
with `--address`, `status`, `logs` and `cancel` also work from a machine that does not see it,
through the job API: the sweep's jobs (found by their `quantgrid.sweep` metadata), the latest
one's driver log, and stopping it (Ray sends the driver SIGTERM; cells in flight are fenced and
rerun by `resume`).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from orchestrator.config import ConfigError
from quantgrid.runtime import PROJECT_ROOT

EXCLUDES = [
    ".venv",
    ".git",
    "runs",
    "**/__pycache__",
    "*.pyc",
    ".pytest_cache",
    "bench/results.json",
    "quantgrid.egg-info",
]


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - unreachable dashboard, wrong scheme, ...
        if "authentication" in str(exc).lower():
            raise ConfigError(
                f"Ray job API at {address} requires Ray's token authentication: set RAY_AUTH_MODE=token and "
                "RAY_AUTH_TOKEN (or ~/.ray/auth_token) to the cluster's token"
            ) from None
        raise ConfigError(
            f"Ray job API at {address} unreachable ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
            "give the head's dashboard address, e.g. --address http://HEAD:8265"
        ) from None


def submit(plan, overrides: list[str], address: str, conf_dirs: list[str]) -> str:
    if conf_dirs:
        raise ConfigError(
            "submit uploads the project directory as the job's working_dir: put extra configs under "
            "conf/ instead of --conf-dir"
        )
    sweep = plan.sweep
    # The job runs in the working_dir Ray unpacks for it on the head, which Ray deletes once no
    # job uses it (its runtime-env agent's URI cache): a relative run_dir would put the ledger
    # and results there.
    for key, path in (("run_dir", sweep.run_dir), ("logs_dir", sweep.logs_dir)):
        if path and not Path(path).is_absolute():
            raise ConfigError(
                f"submit needs an absolute {key} on the cluster (got '{path}': relative to the job's "
                f"working_dir, which Ray deletes after the job), e.g. {key}=/var/lib/quantgrid/runs"
            )
    args = [o for o in overrides if not o.startswith("ray_address=")]
    # `python` of the cluster's environment (the image's, or the venv the head was started from).
    entry = ["python", "-m", "orchestrator.cli", "run", *args, "ray_address=auto"]
    return client(address).submit_job(
        entrypoint=" ".join(shlex.quote(a) for a in entry),
        submission_id=f"quantgrid-{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        runtime_env={"working_dir": str(PROJECT_ROOT), "excludes": EXCLUDES},
        metadata={"quantgrid.sweep": sweep.name, "quantgrid.run_dir": str(Path(sweep.run_dir) / sweep.name)},
    )


def wait(address: str, job_id: str, timeout_s: float) -> str:
    from ray.job_submission import JobStatus

    c = client(address)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = c.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status.value)
        time.sleep(2)
    return "RUNNING"


def jobs_for(address: str, sweep: str) -> list:
    """The sweep's Ray jobs, oldest first."""
    jobs = [j for j in client(address).list_jobs() if (j.metadata or {}).get("quantgrid.sweep") == sweep]
    if not jobs:
        raise ConfigError(f"no Ray job for sweep '{sweep}' at {address} (submitted with `quantgrid submit`?)")
    return sorted(jobs, key=lambda j: j.start_time or 0)


def job_lines(address: str, sweep: str) -> list[str]:
    out = []
    for j in jobs_for(address, sweep):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((j.start_time or 0) / 1000))
        took = f", {((j.end_time or time.time() * 1000) - (j.start_time or 0)) / 1000:.0f} s" if j.start_time else ""
        msg = (
            f": {' '.join(str(j.message).split())[:160]}"
            if j.message and str(j.status.value) in ("FAILED", "STOPPED")
            else ""
        )
        out.append(f"job {j.submission_id}: {j.status.value} (started {started}{took}){msg}")
    return out


def job_logs(address: str, sweep: str, lines: int) -> str:
    job = jobs_for(address, sweep)[-1]
    text = client(address).get_job_logs(job.submission_id)
    return "\n".join(
        [
            f"== job {job.submission_id} ({job.status.value}), driver log (last {lines} lines)",
            *text.splitlines()[-lines:],
        ]
    )


def stop_jobs(address: str, sweep: str) -> list[str]:
    """Stop the sweep's jobs that have not ended; their ids."""
    c = client(address)
    stopped = []
    for j in jobs_for(address, sweep):
        if str(j.status.value) in ("PENDING", "RUNNING") and c.stop_job(j.submission_id):
            stopped.append(j.submission_id)
    return stopped
