"""The package installs as a wheel and works outside the checkout: conf/ and the lm-eval task
folders travel as package data (quantgrid/conf, workers/tasks), found with importlib.resources.

The wheel is built from a copy of the checkout (PEP 517, setuptools' backend, no network) and
installed without dependencies into a fresh venv in a temporary directory; that venv borrows the
dependencies from .venv through a plain path (a .pth line, so .venv's editable finder for this
checkout is not loaded), and every command runs with its cwd outside the checkout. What is tested
is that nothing the CLI needs is read from the source tree.
"""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_plans_the_demo_and_the_paper_outside_the_checkout(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        symlinks=True,
        ignore=shutil.ignore_patterns(".venv", "runs", ".git", "__pycache__", "*.egg-info", "build", ".pytest_cache"),
    )
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_wheel({str(dist)!r}))"],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = dist / build.stdout.strip().splitlines()[-1]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    if pip.returncode == 0:
        inst = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    else:  # uv-made venvs have no pip: a pure-Python wheel is a zip laid out for site-packages
        inst = [sys.executable, "-c", f"import zipfile; zipfile.ZipFile({str(wheel)!r}).extractall({str(site)!r})"]
    subprocess.run(inst, check=True, capture_output=True, timeout=300)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(Path.home()), "HF_HUB_OFFLINE": "1"}
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import orchestrator, quantgrid.runtime as r; print(orchestrator.__file__); print(r.CONF_DIR); "
            "print(r.TASKS_DIR)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    for line in where.stdout.split():
        assert line.startswith(str(site)) and not line.startswith(str(ROOT)), where.stdout
    assert (Path(where.stdout.split()[1]) / "sweep" / "paper.yaml").is_file()  # a real directory, not the link
    for sweep, needle in (("demo", "smollm2-135m"), ("paper", "llama-3.1-405b-instruct")):
        plan = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "orchestrator.cli", "plan", f"sweep={sweep}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-2000:]
        assert needle in plan.stdout and "cells" in plan.stdout
