"""The README's "adding things is config only" examples: a model, a format and a task written as
shown, then planned with the paper's sweep, no code touched."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_model_format_task_examples_plan(tmp_path):
    blocks = re.findall(r"```yaml\n# (conf/[^:\s]+):[^\n]*\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    kinds = {Path(p).parts[1] for p, _ in blocks}
    assert kinds == {"model", "format", "task"}
    for path, body in blocks:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(body)
    names = {Path(p).parts[1]: Path(p).stem for p, _ in blocks}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "plan",
            "--json",
            "--conf-dir",
            str(tmp_path / "conf"),
            "sweep=paper",
            f"sweep.models=[{names['model']}]",
            f"sweep.formats=[bf16,{names['format']}]",
            f"sweep.tasks=[{names['task']}]",
            "~sweep.similarity",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert {(c["model"], c["format"], c["task"]) for c in plan["cells"]} == {
        (names["model"], f, names["task"]) for f in ("bf16", names["format"])
    }
