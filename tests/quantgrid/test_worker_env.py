"""A worker's environment keeps torch inductor's compiled kernels across processes.

vLLM torch.compiles its prompt-logprobs ranking (vllm/v1/sample/ops/logprobs.py) even under
enforce_eager; every attempt runs under a TMPDIR of its own (orchestrator/execution/scheduler.py), where
inductor keeps its cache and precompiled headers by default. Two processes with different
TMPDIRs: the second must load the kernel the first compiled (an FX-graph cache hit) and build
nothing under its TMPDIR.
"""

import json
import subprocess
import sys

CODE = r"""
import json, os, sys, time
from quantgrid.runtime import apply_worker_env
apply_worker_env(kv_cache_gb=1)
import torch
from torch._dynamo.utils import counters
from vllm.v1.sample.ops.logprobs import batched_count_greater_than
x = torch.randn(5, 64)
v = x[:, :1].clone()
torch._dynamo.decorators.mark_unbacked(x, 0)
torch._dynamo.decorators.mark_unbacked(v, 0)
t = time.perf_counter()
out = batched_count_greater_than(x, v)
print(json.dumps({"seconds": time.perf_counter() - t, "hit": counters["inductor"]["fxgraph_cache_hit"],
                  "ranks": out.tolist(), "expected": (x >= v).sum(-1).tolist(),
                  "tmp": sorted(os.listdir(os.environ["TMPDIR"]))}))
"""


def _run(tmp, cache):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "QUANTGRID_CACHE": str(cache), "TMPDIR": str(tmp)}
    proc = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_compiled_logprobs_kernel(tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _run(tmp_path / "a", cache)
    second = _run(tmp_path / "b", cache)
    print(f"compile {first['seconds']:.1f}s, then load {second['seconds']:.1f}s")
    assert first["ranks"] == first["expected"] and second["ranks"] == second["expected"]
    assert first["hit"] == 0 and second["hit"] == 1
    assert (cache / "torchinductor" / "fxgraph").is_dir()
    assert not [f for f in second["tmp"] if f.startswith("torchinductor")], second["tmp"]
