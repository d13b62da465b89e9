"""`make bench BENCH=judge-vllm`: the Arena-Hard scorer against a real OpenAI-compatible server.

The tests use a stand-in judge; this runs the protocol against `vllm serve` itself: the demo
model (SmolLM2-135M-Instruct, on this CPU) is served as the judge, and a sweep of the demo model
in BF16 and W4A16 answers 12 prompts through its engine, judged against written reference answers
with Arena-Hard's rules (two games per prompt, swapped). It measures what the plumbing costs and
how often a judge this small gives a usable verdict label; the scores of a 135M judge mean
nothing. Prompts and reference answers are written here (Arena-Hard's own data is on the Hub,
which this machine cannot reach).

  python -m bench.judge [--free]   (prints one JSON line; bench/run.py stores it)

The judge is constrained by vLLM's structured outputs to end with a verdict label
(`judge.extra_body`); `--free` leaves it unconstrained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

PROMPTS = {
    "p01": ("Name the capital of France.", "The capital of France is Paris."),
    "p02": ("What is 12 times 12?", "12 x 12 = 144."),
    "p03": ("Give a synonym for 'happy'.", "Joyful."),
    "p04": ("Write a Python function that returns the square of a number.", "def square(x):\n    return x * x"),
    "p05": ("What colour do you get by mixing blue and yellow?", "Green."),
    "p06": ("How many days are in a leap year?", "366 days."),
    "p07": ("Translate 'thank you' into Spanish.", "Gracias."),
    "p08": ("What is the boiling point of water at sea level in Celsius?", "100 degrees Celsius."),
    "p09": ("Name one planet of the solar system larger than Earth.", "Jupiter."),
    "p10": (
        "Give a one-sentence definition of photosynthesis.",
        "Photosynthesis is how plants turn light, water and carbon dioxide into sugar and oxygen.",
    ),
    "p11": ("What is the opposite of 'cold'?", "Hot."),
    "p12": ("List three primary colours.", "Red, blue and yellow."),
}
SYSTEM = (
    "You are an impartial judge. Compare the two assistants' answers to the user prompt for correctness "
    "and helpfulness. Explain briefly, then end with exactly one verdict label: [[A>>B]] (A much better), "
    "[[A>B]], [[A=B]] (tie), [[B>A]] or [[B>>A]] (B much better)."
)
# vLLM structured outputs: a short explanation, then one verdict label (a 135M judge left free
# never writes one: measured, 0 of 24 games).
CONSTRAINED = r"[A-Za-z0-9 ,.']{0,200} \[\[(A>>B|A>B|A=B|B>A|B>>A)\]\]"
TEMPLATE = (
    "<|User Prompt|>\n{question_1}\n\n<|The Start of Assistant A's Answer|>\n{answer_1}\n"
    "<|The End of Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{answer_2}\n"
    "<|The End of Assistant B's Answer|>"
)


def main(constrained: bool = True) -> int:
    from orchestrator.config import load_format, load_model
    from quantgrid.types import EngineSettings
    from workers.stages.assets import build_model
    from workers.stages.perf import Server

    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-judge-"))
    model = load_model("smollm2-135m")
    base = build_model(model)  # cached after `make demo`
    conf = tmp / "conf"
    (conf / "task").mkdir(parents=True)
    (conf / "sweep").mkdir()
    (tmp / "q.jsonl").write_text(
        "".join(json.dumps({"question_id": k, "turns": [{"content": q}]}) + "\n" for k, (q, _) in PROMPTS.items())
    )
    (tmp / "a.jsonl").write_text(
        "".join(
            json.dumps({"question_id": k, "choices": [{"turns": [{"content": a}]}]}) + "\n"
            for k, (_, a) in PROMPTS.items()
        )
    )
    t0 = time.perf_counter()
    with Server(
        base.path,
        model,
        load_format("bf16", model, None),
        EngineSettings(),
        start_timeout_s=600,
        log_path=tmp / "judge-serve.log",
    ) as judge:
        serve_s = time.perf_counter() - t0
        (conf / "task" / "arena_bench.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": "arena_bench",
                    "metric": "score,none",
                    "apply_chat_template": True,
                    "scorer": {
                        "kind": "arena_hard",
                        "questions": {"path": str(tmp / "q.jsonl")},
                        "baseline": {"name": "reference", "path": str(tmp / "a.jsonl")},
                        "judge": {
                            "base_url": f"{judge.url}/v1",
                            "model": judge.served_name,
                            "system_prompt": SYSTEM,
                            "prompt_template": TEMPLATE,
                            "max_tokens": 160,
                            "attempts": 2,
                            "concurrency": 4,
                            "retries": 2,
                            **({"extra_body": {"structured_outputs": {"regex": CONSTRAINED}}} if constrained else {}),
                        },
                        "generation": {"max_gen_toks": 96, "temperature": 0},
                    },
                    "cost": {"samples": len(PROMPTS), "prompt_tokens": 30, "output_tokens": 96},
                }
            )
        )
        (conf / "sweep" / "judge_bench.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": "judge_bench",
                    "models": ["smollm2-135m"],
                    "formats": ["bf16", "w4a16"],
                    "tasks": ["arena_bench"],
                    "seeds": [1234],
                    "baseline": "bf16",
                }
            )
        )
        t1 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "run",
                "--conf-dir",
                str(conf),
                "sweep=judge_bench",
                f"run_dir={tmp / 'runs'}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        )
        sweep_s = time.perf_counter() - t1
    figures: dict = {
        "judge_server_start_s": round(serve_s, 1),
        "sweep_s": round(sweep_s, 1),
        "sweep_rc": proc.returncode,
    }
    out = tmp / "runs" / "judge_bench"
    for line in (out / "results.jsonl").read_text().splitlines() if (out / "results.jsonl").exists() else []:
        r = json.loads(line)
        m = {k.split(",")[0]: v for k, v in r["metrics"].items()}
        figures[r["format"]] = {
            "score": round(m["score"], 3),
            "valid_games": 2 * len(PROMPTS) - int(m["invalid_games"]),
            "games": 2 * len(PROMPTS),
            "judge_prompt_tokens": int(m["judge_prompt_tokens"]),
            "judge_completion_tokens": int(m["judge_completion_tokens"]),
            "generation_s": round(m["generation_seconds"], 1),
            "cell_s": round(r["seconds"], 1),
        }
    if (out / "ledger.db").exists():
        import sqlite3

        for fmt, cls, msg in sqlite3.connect(out / "ledger.db").execute(
            "SELECT format, failure_class, failure FROM cells WHERE state = 'failed'"
        ):
            figures[fmt] = {"failed": cls, "message": (msg or "")[:240]}
    figures["cli_last_lines"] = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(constrained="--free" not in sys.argv))
