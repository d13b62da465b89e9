"""Score stage: one lm-eval `simple_evaluate` call per task on a ready LM object.

Tasks come from lm-eval's own registry (TaskManager with include_path=workers/tasks). Subsets
are lm-eval's `samples=` (doc indices), chosen here deterministically from the task's docs, so
every run of a sweep scores the same items and doc ids stay those of the full dataset.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from typing import Any

from quantgrid.runtime import TASKS_DIR
from quantgrid.types import SampleRecord, TaskSpec

_TASK_MANAGERS: dict[bool, Any] = {}


def task_manager(builtin: bool = False):
    """Our task folders, plus lm-eval's own registry only when a task needs it (`registry:
    lm_eval`): indexing its ~14k built-in YAMLs costs seconds per process."""
    if builtin not in _TASK_MANAGERS:
        from lm_eval.tasks import TaskManager

        _TASK_MANAGERS[builtin] = TaskManager(include_path=str(TASKS_DIR), include_defaults=builtin)
    return _TASK_MANAGERS[builtin]


def leaf_tasks(task_dict: dict) -> dict[str, Any]:
    """{subtask name: Task} of a get_task_dict() result, through nested groups."""
    out: dict[str, Any] = {}
    for key, value in task_dict.items():
        if isinstance(value, dict):
            out.update(leaf_tasks(value))
        else:
            out[key if isinstance(key, str) else getattr(key, "group_name", str(key))] = value
    return out


# A group's documents are numbered per subtask: doc ids stay unique (and paired across formats)
# as subtask index x GROUP_DOC_STRIDE + the subtask's own doc id.
GROUP_DOC_STRIDE = 10_000_000


def select_subset(docs: list[dict[str, Any]], subset: dict[str, Any] | None) -> list[int] | None:
    """Doc indices to score. {size, seed}: seeded sample; {per_group, group_field, seed}: stratified."""
    if not subset:
        return None
    rng = random.Random(int(subset.get("seed", 0)))
    if "per_group" in subset:
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, d in enumerate(docs):
            groups[d[subset["group_field"]]].append(i)
        names = sorted(groups)
        if "max_groups" in subset:
            names = sorted(rng.sample(names, min(int(subset["max_groups"]), len(names))))
        picked = [
            i for g in names for i in sorted(rng.sample(groups[g], min(int(subset["per_group"]), len(groups[g]))))
        ]
        return sorted(picked)
    n = min(int(subset["size"]), len(docs))
    return sorted(rng.sample(range(len(docs)), n))


def _per_sample_metrics(sample: dict[str, Any], metric_names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in metric_names:
        v = sample.get(name)
        if isinstance(v, (int, float, bool)):
            out[name] = float(v)
        elif isinstance(v, (tuple, list)) and len(v) == 2:
            # Corpus-level metrics (perplexities) log (loglikelihood, units) per doc: keep the
            # per-document value so paired per-sample comparisons work.
            ll, units = float(v[0]), float(v[1])
            if name == "bits_per_byte":
                out[name] = -ll / (units * math.log(2))
            elif "perplexity" in name:
                out[name] = math.exp(-ll / units)
            else:
                out[name] = ll
    return out


def _first(x: Any) -> str:
    """A response as text: generation tasks log a list per request (repeats: n samples per doc,
    of which the first is kept as the document's text)."""
    if isinstance(x, (list, tuple)):
        x = x[0] if x else ""
    return x if isinstance(x, str) else str(x)


def _record(sample: dict[str, Any], output_type: str, metric_names: list[str]) -> SampleRecord:
    resps = sample.get("resps") or []
    logprobs = None
    filtered = sample.get("filtered_resps") or [""]
    if output_type in ("multiple_choice", "loglikelihood"):
        logprobs = [float(r[0][0]) for r in resps]
        response = str(max(range(len(logprobs)), key=logprobs.__getitem__)) if logprobs else ""
        filtered_text = response
    elif output_type == "loglikelihood_rolling":
        logprobs = [float(r[0]) if not isinstance(r[0], (tuple, list)) else float(r[0][0]) for r in resps]
        response = filtered_text = ""
    else:
        # The raw generation, before any filter: a filter's output is an extracted answer (GSM8K's
        # number), which says nothing about how close two formats' texts are (lm-eval
        # evaluator.py logs both `resps` and, per filter, `filtered_resps`).
        response = _first(resps[0]) if resps else ""
        filtered_text = _first(filtered[0])
    # Corpus metrics (perplexities): keep (loglikelihood, units) so a paired bootstrap can
    # re-aggregate exp(-sum ll / sum units) per resample instead of averaging per-doc values.
    corpus = {
        n: [float(v[0]), float(v[1])]
        for n in metric_names
        if isinstance(v := sample.get(n), (tuple, list)) and len(v) == 2
    }
    return SampleRecord(
        doc_id=int(sample["doc_id"]),
        target=str(sample.get("target", "")),
        response=response,
        metrics=_per_sample_metrics(sample, metric_names),
        logprobs=logprobs,
        extra={"corpus": corpus} if corpus else {},
        filter=str(sample.get("filter") or "none"),
        filtered=filtered_text,
    )


def evaluate_task(lm, task: TaskSpec, limit_docs: list[int] | None = None) -> dict[str, Any]:
    """Score one task (or lm-eval group) on a ready LM object. Returns metrics, per-sample
    records and counts."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import get_task_dict

    tm = task_manager(builtin=task.registry == "lm_eval")
    t0 = time.perf_counter()
    # Build the task (and load its dataset) once: the subset is chosen from its docs and the same
    # objects are handed to simple_evaluate, which accepts prepared Task objects.
    leaves = leaf_tasks(get_task_dict([task.name], tm))
    group = set(leaves) != {task.name}
    index = {n: i for i, n in enumerate(sorted(leaves))}  # a group's subtask -> its doc id stride
    samples = None
    tasks: list[Any] = [task.name] if group else [leaves[task.name]]
    if limit_docs is not None:
        # Doc ids as this function returns them (a group's: subtask index x GROUP_DOC_STRIDE + own
        # id), e.g. one batch of an adaptive cell: each subtask gets its own, and only the
        # subtasks with documents in the batch are scored (lm-eval scores all of a subtask left out).
        samples = {
            n: sorted(d % GROUP_DOC_STRIDE for d in limit_docs if d // GROUP_DOC_STRIDE == index[n]) for n in leaves
        }
        samples = {n: ids for n, ids in samples.items() if ids}
        tasks = [leaves[n] for n in sorted(samples)] if group else tasks
    elif task.subset:
        samples = {n: select_subset(list(t.eval_docs), task.subset) for n, t in leaves.items()}
    out = simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=task.num_fewshot,
        apply_chat_template=task.apply_chat_template,
        fewshot_as_multiturn=task.fewshot_as_multiturn,
        gen_kwargs=dict(task.gen_kwargs) if task.gen_kwargs else None,
        samples=samples,
        log_samples=True,
        task_manager=tm,
        bootstrap_iters=1000,
        confirm_run_unsafe_code=True,  # humaneval_local executes code, inside our sandbox
        random_seed=0,
        numpy_random_seed=1234,
        torch_random_seed=1234,
        fewshot_random_seed=1234,
    )
    records: list[SampleRecord] = []
    for name in sorted(out["samples"]):
        cfg = out["configs"][name]
        metric_names = [m["metric"] for m in cfg.get("metric_list", []) if isinstance(m.get("metric"), str)]
        for s in out["samples"][name]:
            r = _record(s, cfg.get("output_type", ""), metric_names)
            if group:
                r.doc_id += index.get(name, 0) * GROUP_DOC_STRIDE
                r.extra["subtask"] = name
            records.append(r)
    metrics = {
        k: float(v)
        for k, v in out["results"].get(task.name, {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if group and task.metric not in metrics:
        metrics.update(_group_mean(out, task.metric, sorted(out["samples"])))
    return {
        "metrics": metrics,
        "samples": records,
        "num_samples": len({r.doc_id for r in records}),  # documents; records are per (doc, filter)
        "seconds": time.perf_counter() - t0,
        "lm_eval_version": out.get("versions", {}).get(task.name),
        "n_shot": out.get("n-shot", {}).get(task.name)
        if not group
        else {n: out.get("n-shot", {}).get(n) for n in sorted(out["samples"])},
    }


def _group_mean(out: dict[str, Any], metric: str, subtasks: list[str]) -> dict[str, float]:
    """A group without an aggregate for `metric`: the mean over its documents (each subtask
    weighted by its size), as lm-eval's weight_by_size aggregate would report it."""
    pairs = [
        (out["results"][n][metric], len(out["samples"][n]))
        for n in subtasks
        if isinstance(out["results"].get(n, {}).get(metric), (int, float))
    ]
    total = sum(w for _, w in pairs)
    return {metric: sum(v * w for v, w in pairs) / total} if total else {}
