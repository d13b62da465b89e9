"""Bad input: one clear line on stderr, exit != 0, before any quantization work (no traceback)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def quantgrid(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("quantgrid: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(
    "override,needles",
    [
        ("sweep.models=[llama-9000]", ("unknown model 'llama-9000'", "tiny-llama")),
        ("sweep.formats=[fp4]", ("unknown format 'fp4'", "w4a16")),
        ("sweep.tasks=[arc_local]", ("unknown task 'arc_local'", "mmlu_local")),
        ("sweep=nope", ("unknown sweep 'nope'", "demo")),
        ("+sweep.calibration.path=/nonexistent/calib.txt", ("missing calibration data", "/nonexistent/calib.txt")),
        ("+engine.flash=1", ("unknown key(s) flash",)),
        ("sweep.seeds=[abc]", ("sweep.seeds must be integers",)),
        ("sweep.formats=[fp8,fp8]", ("sweep.formats lists fp8 more than once",)),
        ("sweep.task_settings.mmlu_local.num_fewshot=-1", ("num_fewshot must be >= 0",)),
        ("+sweep.task_settings.ppl_local.apply_chat_template=maybe", ("apply_chat_template must be bool",)),
        ("engine.batch_size=lots", ("batch_size must be a positive integer",)),
        ("sweep.calibration.num_samples=0", ("calibration.num_samples must be > 0",)),
        ("sweep.similarity.tasks=[mmlu_local]", ("'mmlu_local' is a multiple_choice task", "generate_until")),
        ("sweep.similarity.tasks=[arc_local]", ("sweep.similarity.tasks: unknown task 'arc_local'",)),
        ("sweep.similarity.encoder=/no/such/encoder", ("similarity encoder '/no/such/encoder'", "all-minilm-l6-v2")),
        # every section refuses a key it does not know, the sweep's own and the root's included
        ("+sweep.bogus_key=1", ("sweep.bogus_key: unknown setting", "models")),
        ("+sweep.calibraton.num_samples=4", ("sweep.calibraton: unknown setting",)),
        ("+sweep.calibration.num_samplez=4", ("sweep.calibration.num_samplez: unknown setting", "num_samples")),
        ("+sweep.resources.lease=5", ("sweep.resources.lease: unknown setting", "lease_s")),
        ("+run_dri=/tmp/x", ("run_dri: unknown setting", "run_dir")),
    ],
)
def test_unknown_names_and_missing_data(tmp_path, override, needles):
    proc = quantgrid("run", "sweep=tiny", override, f"run_dir={tmp_path}")
    assert_one_line_error(proc, *needles)
    assert not any(tmp_path.iterdir()), "nothing may run before validation passes"


def test_group_size_that_does_not_divide_names_valid_sizes(tmp_path):
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    text = (ROOT / "conf/model/tiny-llama.yaml").read_text().replace("name: tiny-llama", "name: tiny-g96")
    (conf / "tiny-g96.yaml").write_text(text + "format_overrides:\n  w4a16: {group_size: 96}\n")
    proc = quantgrid(
        "run",
        "--conf-dir",
        str(tmp_path / "conf"),
        "sweep=tiny",
        "sweep.models=[tiny-g96]",
        f"run_dir={tmp_path / 'runs'}",
    )
    assert_one_line_error(
        proc, "group_size 96 does not divide", "hidden_size 128", "valid group sizes: 16, 32, 64, 128"
    )


def test_gguf_model_dims_checked_against_group_size():
    from orchestrator.config import ConfigError, check_group_size
    from quantgrid.types import FormatSpec

    fmt = FormatSpec(
        "w4a16", "W4A16", recipe={"m": {"GPTQModifier": {"config_groups": {"g": {"weights": {"group_size": 128}}}}}}
    )
    with pytest.raises(ConfigError, match="valid group sizes: 16, 32, 64"):
        check_group_size(
            fmt, "smollm2-135m", {"hidden_size": 576, "intermediate_size": 1536, "num_heads*head_dim": 576}
        )


def _local_model_conf(tmp_path, ckpt: Path) -> Path:
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "mine.yaml").write_text(
        f"name: mine\nsource: {{kind: local, path: {ckpt}}}\nmax_model_len: 512\n"
    )
    return conf


def test_truncated_checkpoint(tmp_path, tiny_llama):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_llama.path, ckpt)
    weights = next(ckpt.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    proc = quantgrid(
        "run",
        "--conf-dir",
        str(_local_model_conf(tmp_path, ckpt)),
        "sweep=tiny",
        "sweep.models=[mine]",
        f"run_dir={tmp_path / 'runs'}",
    )
    assert_one_line_error(proc, "truncated checkpoint file", weights.name)


def test_corrupted_checkpoint_config(tmp_path, tiny_llama):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_llama.path, ckpt)
    (ckpt / "config.json").write_text("{not json")
    proc = quantgrid(
        "run",
        "--conf-dir",
        str(_local_model_conf(tmp_path, ckpt)),
        "sweep=tiny",
        "sweep.models=[mine]",
        f"run_dir={tmp_path / 'runs'}",
    )
    assert_one_line_error(proc, "corrupted checkpoint", "config.json does not parse")


@pytest.mark.parametrize("where", ["sweep", "model", "format"])
def test_malformed_yaml(tmp_path, where):
    conf = tmp_path / "conf" / where
    conf.mkdir(parents=True)
    name = {"sweep": "broken", "model": "tiny-llama", "format": "fp8"}[where]
    (conf / f"{name}.yaml").write_text("name: [unclosed\n  models: {\n")
    args = ["sweep=broken"] if where == "sweep" else ["sweep=tiny"]
    proc = quantgrid("run", "--conf-dir", str(tmp_path / "conf"), *args, f"run_dir={tmp_path / 'runs'}")
    assert_one_line_error(proc, "malformed YAML")


def test_unwritable_run_dir(tmp_path):
    proc = quantgrid("run", "sweep=tiny", "run_dir=/proc/quantgrid-cannot-write")
    assert_one_line_error(proc, "run_dir: cannot write")


@pytest.mark.parametrize("args", [[], ["run", "--bogus"], ["frobnicate"]])
def test_cli_usage_errors_are_one_line(args):
    assert_one_line_error(quantgrid(*args))


def test_resume_refuses_overrides_that_change_cells(tmp_path):
    from orchestrator.store.ledger import Ledger

    Ledger(tmp_path / "tiny" / "ledger.db").open_sweep("tiny", ["sweep=tiny"], [], [])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "resume",
            "tiny",
            "--run-dir",
            str(tmp_path),
            "sweep.tasks=[ppl_local]",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 2 and "resume takes only resources.*" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "override,needles",
    [
        (
            "sweep.perf.scenarios=[long_document_summarization]",
            (
                "conf/perf/long_document_summarization.yaml: prompt_tokens 4096 + output_tokens 512 = 4608 "
                "exceeds max_model_len 1024",
            ),
        ),
        ("sweep.perf.scenarios=[nope]", ("unknown perf 'nope'", "demo_chat")),
        ("sweep.perf.load.streams=[2,4]", ("sweep.perf.load.streams must include 1",)),
        ("sweep.perf.load.max_requests=1", ("sweep.perf.load.max_requests (1) must exceed warmup_requests + 1",)),
        ("sweep.perf.server.port=70000", ("sweep.perf.server.port must be 0",)),
        ("+sweep.perf.latency_limits.ttft_ms_p42=5", ("unknown key ttft_ms_p42",)),
    ],
)
def test_malformed_perf_section_fails_before_any_server_starts(tmp_path, override, needles):
    proc = quantgrid("run", "sweep=tiny_perf", override, f"run_dir={tmp_path}")
    assert_one_line_error(proc, *needles)
    assert not any(tmp_path.iterdir())


def test_negative_scenario_tokens_named(tmp_path):
    conf = tmp_path / "conf" / "perf"
    conf.mkdir(parents=True)
    (conf / "bad.yaml").write_text("name: bad\nprompt_tokens: -5\noutput_tokens: 8\n")
    proc = quantgrid(
        "run",
        "--conf-dir",
        str(tmp_path / "conf"),
        "sweep=tiny_perf",
        "sweep.perf.scenarios=[bad]",
        f"run_dir={tmp_path / 'runs'}",
    )
    assert_one_line_error(proc, "conf/perf/bad.yaml: prompt_tokens must be >= 1, got -5")


@pytest.mark.parametrize("override,key", [("run_dir=runs", "run_dir"), ("logs_dir=logs", "logs_dir")])
def test_submit_refuses_a_relative_run_or_logs_dir_before_reaching_the_cluster(tmp_path, override, key):
    # Nothing listens on port 9: the refusal must come before any call to the job API.
    args = [f"run_dir={tmp_path}", override] if key == "logs_dir" else [override]
    proc = quantgrid("submit", "sweep=tiny", *args, "--address", "http://127.0.0.1:9", cwd=tmp_path)
    assert_one_line_error(proc, f"submit needs an absolute {key} on the cluster", "Ray deletes")
