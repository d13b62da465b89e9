"""`quantgrid ui [SWEEP]`: the MLflow UI on a sweep's tracking store.

Starts `mlflow server` on the sweep's local store (its sqlite database and artifact folder),
bound to 127.0.0.1 unless told otherwise, prints the URL of the sweep's experiment, and stops
the server (its whole process group) cleanly on Ctrl-C. A sweep tracked on a remote server
only gets that server's URL printed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from orchestrator.config import ConfigError


def pick_sweep(run_root: Path, sweep: str | None) -> str:
    sweeps = sorted(p.parent.name for p in Path(run_root).glob("*/ledger.db"))
    if sweep:
        if sweep not in sweeps:
            raise ConfigError(
                f"no sweep '{sweep}' under {Path(run_root).resolve()} (found: {', '.join(sweeps) or 'none'})"
            )
        return sweep
    if len(sweeps) != 1:
        raise ConfigError(
            f"name the sweep: {len(sweeps)} under {Path(run_root).resolve()} ({', '.join(sweeps) or 'none'})"
        )
    return sweeps[0]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_server(
    backend_uri: str, artifact_root: Path, log_path: Path, host: str = "127.0.0.1", port: int = 0
) -> tuple[subprocess.Popen, str]:
    """`mlflow server` in its own process group; returns (process, base URL) once /health
    answers (the port opens before the app is ready)."""
    from orchestrator.store.tracking import seed_sqlite_store

    seed_sqlite_store(backend_uri)  # a new store skips MLflow's migration chain
    port = port or free_port(host)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_uri,
        "--default-artifact-root",
        str(Path(artifact_root).resolve()),
    ]
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{host}:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"mlflow server exited with {proc.returncode} (see {log_path})")
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise ConfigError(f"mlflow server did not answer on {url} within 180 s (see {log_path})")


def start(run_dir: Path, host: str = "127.0.0.1", port: int = 0) -> tuple[subprocess.Popen, str]:
    """The server on a sweep's own store (its sqlite database and artifact folder)."""
    db = run_dir / "mlflow.db"
    if not db.exists():
        raise ConfigError(
            f"{db} does not exist: this sweep was tracked elsewhere (see `quantgrid export --tracking-uri`)"
        )
    return start_server(f"sqlite:///{db.resolve()}", run_dir / "mlartifacts", run_dir / "mlflow-ui.log", host, port)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def experiment_url(url: str, sweep: str) -> str:
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(url).get_experiment_by_name(f"quantgrid/{sweep}")
    return f"{url}/#/experiments/{exp.experiment_id}/runs" if exp else url


def serve(run_root: Path, sweep: str | None, host: str, port: int) -> int:
    name = pick_sweep(run_root, sweep)
    proc, url = start(Path(run_root).resolve() / name, host, port)
    try:
        print(f"MLflow UI for sweep {name}: {experiment_url(url, name)}  (Ctrl-C stops it)", flush=True)
        proc.wait()
        return 0 if proc.returncode in (0, -signal.SIGTERM) else 1
    except KeyboardInterrupt:
        print("stopping the MLflow UI", flush=True)
        return 0
    finally:
        stop(proc)
