"""Held-out word-perplexity text: gensim's Lee news corpus test file (lee.cor).

lee_background.cor is the quantization calibration corpus, so any eval document
that also occurs in it is dropped. gensim is never imported (only its files read).
"""

import logging
from importlib.util import find_spec
from pathlib import Path

import datasets

log = logging.getLogger(__name__)


def _test_data_dir():
    # find_spec locates the package without running gensim/__init__ (slow, heavy).
    spec = find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'gensim' is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data"


def _read_lines(name):
    # lee.cor is Latin-1 (it has a "£"); one document per line.
    text = (_test_data_dir() / name).read_text(encoding="latin-1")
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def build_docs():
    """(kept docs, number dropped for overlapping the calibration corpus)."""
    background = _read_lines("lee_background.cor")
    joined = "\n".join(background)
    docs, dropped = [], 0
    for i, text in enumerate(_read_lines("lee.cor")):
        # exact line match or containment in a background doc both count as leakage
        if text in joined:
            dropped += 1
            continue
        docs.append({"text": text, "doc_index": i})
    return docs, dropped


def load_dataset(**kwargs):
    """custom_dataset hook: lm-eval passes metadata/dataset_kwargs, which we ignore."""
    docs, dropped = build_docs()
    if dropped:
        log.warning("ppl_local: dropped %d lee.cor docs found in lee_background.cor", dropped)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})
