"""docker/: the image, the `ray up` cluster, the KubeRay RayJob and the MLflow server, checked
statically (no Docker engine or Kubernetes here): required fields, and image tag, versions,
resources and paths consistent with pyproject.toml, the locks and conf/."""

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pin(extra: str, package: str) -> str:
    deps = PYPROJECT["project"]["optional-dependencies"][extra] if extra else PYPROJECT["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(rf"{re.escape(package)}(\[.*\])?==", d)]
    return spec.split("==")[1]


VLLM = _pin("gpu", "vllm")
IMAGE = f"quantgrid:{PYPROJECT['project']['version']}-vllm{VLLM}"


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_dockerfile_is_hadolint_clean_on_the_official_vllm_base():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(rf"^FROM vllm/vllm-openai:v{re.escape(VLLM)}$", text, re.M)
    assert IMAGE in text and "requirements/gpu.lock" in text and "requirements/gpu-quantize.lock" in text
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "hadolint"), str(DOCKER / "Dockerfile")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gpu_locks_pin_what_pyproject_pins():
    for extra, lock in (("gpu", "gpu.lock"), ("gpu-quantize", "gpu-quantize.lock")):
        pins = dict(
            line.split("==")
            for line in (ROOT / "requirements" / lock).read_text().splitlines()
            if "==" in line and not line.startswith(("#", " "))
        )
        for dep in PYPROJECT["project"]["optional-dependencies"][extra] + PYPROJECT["project"]["dependencies"]:
            if "==" in dep:
                name, version = re.sub(r"\[.*\]", "", dep).split("==")
                assert pins.get(name) == version, f"{lock}: {name} {pins.get(name)} != pyproject {version}"
    # the reason there are two: vLLM and llmcompressor need different compressed-tensors
    assert _lock_pin("gpu.lock", "compressed-tensors") != _lock_pin("gpu-quantize.lock", "compressed-tensors")


def _lock_pin(lock: str, name: str) -> str:
    (v,) = re.findall(rf"^{re.escape(name)}==(\S+)$", (ROOT / "requirements" / lock).read_text(), re.M)
    return v


def test_ray_cluster_yaml():
    c = yaml.safe_load((DOCKER / "cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "docker"):
        assert key in c, key
    assert c["docker"]["image"] == IMAGE
    assert any("/shared:/shared" in o for o in c["docker"]["run_options"])
    head = c["available_node_types"][c["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the driver's node takes no GPU work
    assert any("--num-cpus=0" in cmd for cmd in c["head_start_ray_commands"])


def test_rayjob_manifest_token_from_secret_only():
    job = yaml.safe_load((DOCKER / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == _pin("", "ray[default]")
    entry = spec["entrypoint"]
    sweep = re.search(r"sweep=(\S+)", entry).group(1)
    assert (ROOT / "conf" / "sweep" / f"{sweep}.yaml").exists()
    run_dir = re.search(r"run_dir=(\S+)", entry).group(1)
    logs_dir = re.search(r"logs_dir=(\S+)", entry).group(1)
    containers = [c for n in _walk(spec) for c in n.get("containers", [])]
    assert len(containers) == 2 and all(c["image"] == IMAGE for c in containers)
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (head_c,) = head["containers"]
    # The ledger on the head's own volume (never the shared filesystem: WAL and the driver lock
    # need a local disk); the attempt logs, written by workers on every node, on the shared one.
    (run_mount,) = [m for m in head_c["volumeMounts"] if run_dir.startswith(m["mountPath"] + "/")]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in head["volumes"]}
    assert claims[run_mount["name"]] != "quantgrid-shared"
    for c in containers:
        shared = {m["mountPath"] for m in c["volumeMounts"] if m["name"] == "shared"}
        assert any(logs_dir.startswith(m + "/") for m in shared), (logs_dir, shared)
        (tok,) = [e for e in c["env"] if e["name"] == "HF_TOKEN"]
        assert tok["valueFrom"]["secretKeyRef"]["name"] == "hf-token" and "value" not in tok
        (judge,) = [e for e in c["env"] if e["name"] == "OPENAI_API_KEY"]  # conf/task/arena_hard.yaml's api_key_env
        assert judge["valueFrom"]["secretKeyRef"]["name"] == "judge-api-key" and "value" not in judge
    text = (DOCKER / "rayjob.yaml").read_text()
    assert "HF_TOKEN" not in entry and "runtimeEnvYAML" not in spec
    assert not re.search(r"hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9]{20,}", text)  # no literal token anywhere
    assert "OPENAI_API_KEY" in (ROOT / "conf" / "task" / "arena_hard.yaml").read_text()
    assert "HF_TOKEN" not in yaml.safe_dump(job["metadata"])
    # Workers hold whole 8-GPU nodes; 405B BF16 needs two of them (TP8 x PP2 in conf/model).
    (worker,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    gpus = int(worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    model = yaml.safe_load((ROOT / "conf" / "model" / "llama-3.1-405b-instruct.yaml").read_text())
    pp = model["format_overrides"]["bf16"]["parallel"]
    assert gpus >= pp["tensor_parallel_size"] and worker["maxReplicas"] >= pp["pipeline_parallel_size"]
    assert "tracking_uri=http://mlflow:5000" in entry


def test_mlflow_server_example():
    docs = list(yaml.safe_load_all((DOCKER / "mlflow.yaml").read_text()))
    dep = next(d for d in docs if d["kind"] == "Deployment")
    svc = next(d for d in docs if d["kind"] == "Service")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"].endswith(f"mlflow:v{_pin('', 'mlflow')}")
    args = " ".join(c["args"])
    assert "--backend-store-uri" in args and "--artifacts-destination s3://" in args
    assert all("secretKeyRef" in e["valueFrom"] for e in c["env"])  # no credentials inline
    assert svc["metadata"]["name"] == "mlflow" and svc["spec"]["ports"][0]["port"] == 5000
