"""`make bench`: the issue figures, measured (never asserted by a timed test).

  python -m bench.run [NAME...]   (default: all; `make bench BENCH="plan-500k simulate"`)

Foundation: setup-again, setup-cold, demo-cold, demo-warm. Grid engine (bench/grid.py, each in
its own process): plan-500k, resume-500k, simulate, ray-cluster, engine-loads; results layer:
export (MLflow overhead per cell), samples-10m (10M per-sample rows, paired query).

- setup-again: `make setup` on the existing venv (target <= 30 s).
- setup-cold:  scripts/setup.sh into a fresh clone with an empty uv cache (target <= 5 min).
- demo-cold:   `quantgrid run sweep=demo` with an empty model/checkpoint cache (target <= 15 min).
- demo-warm:   the same with checkpoints cached (target <= 8 min).
- demo-perf:   `quantgrid run sweep=demo_perf`: vllm serve + GuideLLM per format (target <= 10 min).
- judge-vllm:  the Arena-Hard scorer against a real `vllm serve` judge (bench/judge.py).
- verdicts:    anytime-valid verdicts: coverage, documents saved, paper-grid hours (bench/verdicts.py).
- mixed:       `quantgrid run sweep=demo_mixed`: sensitivity wall, the bits frontier (bench/mixed.py).
Wall time, peak RSS (whole process tree and largest single process, sampled every 0.5 s) and the
engine's tokens/s (vLLM's own counters per task) go to bench/results.json and stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results.json"


def measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> dict:
    """Run `cmd`, sampling the RSS of its whole process tree (Ray workers included)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env or os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = {"tree": 0, "single": 0}
    seen: dict[int, psutil.Process] = {}

    def sample():
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
                # Ray's raylet re-parents workers to itself; include every process of this session.
                for p in procs:
                    seen.setdefault(p.pid, p)
                rss = []
                for p in list(seen.values()):
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.Error:
                        seen.pop(p.pid, None)
                peak["tree"] = max(peak["tree"], sum(rss))
                peak["single"] = max(peak["single"], max(rss, default=0))
            except psutil.Error:
                pass
            time.sleep(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    output = proc.stdout.read()
    proc.wait()
    th.join(timeout=2)
    return {
        "cmd": " ".join(cmd),
        "rc": proc.returncode,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_tree_mb": round(peak["tree"] / 2**20),
        "peak_rss_single_mb": round(peak["single"] / 2**20),
        "tail": output[-3000:],
        # the last JSON line whole (a bench module's figures can be longer than the tail)
        "last_json": next((ln for ln in reversed(output.splitlines()) if ln.startswith("{")), ""),
    }


def engine_rates(run_dir: Path) -> dict:
    rates = {}
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        tok = r.get("tokens", {})
        n = tok.get("prompt_tokens", 0) + tok.get("generation_tokens", 0)
        rates[f"{r['format']}/{r['task']}"] = {
            "tokens": n,
            "seconds": round(r["seconds"], 1),
            "tokens_per_s": round(n / max(r["seconds"], 1e-9)),
            "score": r["metrics"].get(r["primary_metric"]),
        }
    return rates


def stage_walls(run_dir: Path) -> dict:
    """Each stage attempt's wall time from the ledger (build, quantize per format, each engine group)."""
    import sqlite3

    db = sqlite3.connect(run_dir / "ledger.db")
    return {
        stage: round(end - start, 1)
        for stage, start, end in db.execute(
            "SELECT stage, started, finished FROM attempts WHERE finished IS NOT NULL ORDER BY started"
        )
    }


def host() -> dict:
    """The capability probe of the machine a figure was measured on (quantgrid/host.py)."""
    from quantgrid.host import probe

    return probe().as_dict()


# demo-cold's model/checkpoint cache, kept for demo-warm in the same `make bench` call: warm then
# means exactly this host's sizing and this config's checkpoints are cached (a checkpoint cached
# by an earlier config, e.g. another calibration size, is another key and would be rebuilt).
_COLD_CACHE: list[Path] = []


def demo(cold: bool) -> dict:
    env = os.environ.copy()
    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-"))
    if cold:
        # Empty model/checkpoint cache; the uv and vLLM caches do not matter to this figure.
        _COLD_CACHE[:] = [Path(tempfile.mkdtemp(prefix="qg-bench-cache-"))]
        env["QUANTGRID_CACHE"] = str(_COLD_CACHE[0])
    elif _COLD_CACHE:
        env["QUANTGRID_CACHE"] = str(_COLD_CACHE[0])
    run_dir = tmp / "runs"
    res = measured([str(ROOT / ".venv/bin/quantgrid"), "run", "sweep=demo", f"run_dir={run_dir}"], env)
    if (run_dir / "demo" / "results.jsonl").exists():
        res["engine"] = engine_rates(run_dir / "demo")
        res["figures"] = {"stage_wall_s": stage_walls(run_dir / "demo")}
        sizing = run_dir / "demo" / "sizing.json"
        if sizing.exists():
            res["figures"]["sizing"] = json.loads(sizing.read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def demo_perf() -> dict:
    """`quantgrid run sweep=demo_perf` (checkpoints cached): the perf stage's wall time and the
    sync / async figures per format (GuideLLM against vllm serve on this CPU)."""
    import sqlite3

    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-perf-"))
    res = measured([str(ROOT / ".venv/bin/quantgrid"), "run", "sweep=demo_perf", f"run_dir={tmp}"])
    out = tmp / "demo_perf"
    if (out / "results.jsonl").exists():
        figures = {}
        for line in (out / "results.jsonl").read_text().splitlines():
            r = json.loads(line)
            m = {k.split(",")[0]: v for k, v in r["metrics"].items()}
            figures[f"{r['format']}/{r['task']}"] = {
                "sync": {
                    k: round(m[f"sync_{k}"], 4)
                    for k in (
                        "ttft_ms_p50",
                        "itl_ms_p50",
                        "request_latency_s_p50",
                        "request_latency_s_p99",
                        "output_tok_per_s",
                    )
                },
                "c4": {
                    k: round(m[f"c4_{k}"], 4)
                    for k in ("requests_per_s", "output_tok_per_s", "ttft_ms_p99")
                    if f"c4_{k}" in m
                },
                "server_start_s": round(r["provenance"]["server_start_seconds"], 1),
                "guidellm_s": round(r["seconds"], 1),
            }
        db = sqlite3.connect(out / "ledger.db")
        figures["stage_wall_s"] = {
            stage: round(end - start, 1)
            for stage, start, end in db.execute(
                "SELECT stage, started, finished FROM attempts WHERE stage LIKE 'perf/%'"
            )
        }
        res["figures"] = figures
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def setup_cold() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-setup-"))
    subprocess.run(["git", "clone", "-q", str(ROOT), str(tmp / "clone")], check=True)
    env = os.environ.copy()
    env["QUANTGRID_CACHE"] = str(tmp / "cache")  # empty uv cache: every wheel is downloaded
    res = measured(["bash", "scripts/setup.sh"], env, cwd=tmp / "clone")
    shutil.rmtree(tmp, ignore_errors=True)
    return res


GRID = ("plan-500k", "resume-500k", "simulate", "ray-cluster", "engine-loads", "export", "samples-10m")
MODULES = {
    "judge-vllm": "bench.judge",
    "verdicts": "bench.verdicts",
    "mixed": "bench.mixed",
}  # benches with a module of their own (one JSON line of figures)


def grid(name: str) -> dict:
    res = measured(
        [sys.executable, "-m", MODULES[name]] if name in MODULES else [sys.executable, "-m", "bench.grid", name]
    )
    line = res.pop("last_json", "")
    if res["rc"] == 0 and line:
        res["figures"] = json.loads(line)
    return res


def main(argv: list[str]) -> int:
    wanted = argv or [*GRID, "setup-again", "setup-cold", "demo-cold", "demo-warm", "demo-perf", *MODULES]
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in wanted:
        if name == "setup-again":
            res = measured(["make", "-s", "setup"])
        elif name == "setup-cold":
            res = setup_cold()
        elif name == "demo-cold":
            res = demo(cold=True)
        elif name == "demo-warm":
            # Warm means the demo's own checkpoints are cached (other sweeps' do not count).
            if not _COLD_CACHE:  # no demo-cold before it in this call: warm the default cache first
                demo(cold=False)
            res = demo(cold=False)
        elif name == "demo-perf":
            res = demo_perf()
        elif name in GRID or name in MODULES:
            res = grid(name)
        else:
            print(
                f"bench: unknown benchmark {name!r} (known: "
                f"{', '.join((*GRID, *MODULES, 'setup-again', 'setup-cold', 'demo-cold', 'demo-warm', 'demo-perf'))})",
                file=sys.stderr,
            )
            return 2
        res.pop("last_json", None)
        res["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
        res["host"] = host()
        results[name] = res
        summary = {k: v for k, v in res.items() if k not in ("tail", "engine", "figures")}
        print(f"{name}: {json.dumps(summary)}")
        for k, v in (res.get("figures") or {}).items():
            print(f"  {k}: {json.dumps(v)}")
        if res["rc"] != 0:
            print(res["tail"][-1500:])
        for k, v in (res.get("engine") or {}).items():
            print(f"  {k}: {v}")
        OUT.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
