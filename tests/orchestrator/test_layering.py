"""The layout is the data flow: the driver never loads torch/vLLM; workers never touch MLflow."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_driver_imports_no_torch_or_vllm():
    """Every module of the driver side, imported: none pulls in the model stack."""
    code = (
        "import importlib, pkgutil, sys, orchestrator, quantgrid; "
        "mods = [m.name for p in (orchestrator, quantgrid) "
        "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]; "
        "[importlib.import_module(m) for m in mods]; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'vllm', 'llmcompressor', 'lm_eval')); "
        "print(len(mods), bad); sys.exit(1 if bad or len(mods) < 30 else 0)"
    )
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


def _project_import_graph() -> dict[str, set[str]]:
    """module -> project modules it imports, at any depth of the file (function-level imports
    count: a lazy import is still a dependency, and two modules that need each other are one)."""
    mods = {}
    for pkg in ("orchestrator", "workers", "quantgrid"):
        for p in (ROOT / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            mods[name] = p
    graph = {}
    for name, p in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {node.module} & set(mods) | {f"{node.module}.{a.name}" for a in node.names} & set(mods)
        graph[name] = deps - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w) :] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_no_import_cycles():
    """`python -m pytest tests/orchestrator/test_layering.py -k cycles`: config loading, the
    scheduler and the scorers once imported each other (config <-> tasks/perf_config through
    private helpers, scheduler <-> driver, score <-> judge)."""
    graph = _project_import_graph()
    assert graph["orchestrator.execution.scheduler"] and graph["orchestrator.config"]  # the graph was read
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check itself sees one


def test_every_failure_class_a_worker_raises_is_one_the_scheduler_knows():
    from quantgrid.failures import FailureClass
    from workers.scoring import judge
    from workers.stages import perf

    raised = {judge.JudgeFailed.failure_class} | {
        c.failure_class for c in vars(perf).values() if isinstance(c, type) and hasattr(c, "failure_class")
    }
    assert raised and raised <= {f.value for f in FailureClass}


def test_every_external_scorer_has_a_config_check_and_an_output_type():
    """A row in quantgrid/scorers.py SCORERS needs its config check (config/tasks.py) and what its
    records hold (SCORER_OUTPUT), or a task of that kind would pass unchecked."""
    from orchestrator.config.tasks import SCORER_CHECKS
    from quantgrid.scorers import SCORER_OUTPUT, SCORERS

    external = set(SCORERS) - {"lm_eval"}
    assert external and set(SCORER_CHECKS) == external == set(SCORER_OUTPUT)
