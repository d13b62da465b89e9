"""The layout is the data flow: the driver never loads torch/vLLM; workers never touch MLflow."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_driver_imports_no_torch_or_vllm():
    code = ("import sys, orchestrator.cli, orchestrator.driver, orchestrator.tracking, orchestrator.report, "
            "orchestrator.plan, orchestrator.placement, orchestrator.results, quantgrid.types, quantgrid.checkpoint; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'vllm', 'llmcompressor', 'lm_eval')); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_workers_never_import_mlflow_or_the_driver():
    for path in (ROOT / "workers").rglob("*.py"):
        bad = _imports(path) & {"mlflow", "orchestrator"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_shared_types_import_neither_side():
    for path in (ROOT / "quantgrid").rglob("*.py"):
        bad = _imports(path) & {"orchestrator", "workers", "torch", "vllm", "mlflow"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
