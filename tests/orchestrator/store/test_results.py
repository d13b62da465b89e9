"""The run store: files written atomically before the commit, and checked before they are trusted."""

import pandas as pd

from orchestrator.store.results import RunStore, check_samples, file_digest, write_atomic
from quantgrid.types import SampleRecord, TaskResult


def _result(n=3):
    return TaskResult(
        cell_key="k" * 16,
        model="m",
        format="f",
        task="t",
        metrics={"acc,none": 0.5},
        samples=[SampleRecord(doc_id=i, target="a", response="b", metrics={"acc": 1.0}) for i in range(n)],
        num_samples=n,
        seconds=0.1,
        provenance={},
    )


def test_samples_are_written_whole_with_their_size_and_hash_in_the_provenance(tmp_path):
    store = RunStore(tmp_path)
    r = _result()
    store.write_files(r)
    path = tmp_path / "samples" / "model=m" / "format=f" / "task=t" / f"{r.cell_key}.parquet"
    assert r.provenance["samples_path"] == str(path) and len(pd.read_parquet(path)) == 3
    assert (r.provenance["samples_file"]["bytes"], r.provenance["samples_file"]["sha256"]) == file_digest(path)
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temp file left behind
    record = {
        "cell_key": r.cell_key,
        "model": "m",
        "format": "f",
        "task": "t",
        "num_samples": 3,
        "provenance": r.provenance,
    }
    assert check_samples(tmp_path, record, full=True) is None
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    assert "bytes" in check_samples(tmp_path, record)  # truncated: the cheap check sees it
    path.write_bytes(data[:20] + bytes([data[20] ^ 1]) + data[21:])
    assert check_samples(tmp_path, record) is None  # same size, same magic ...
    assert "SHA-256" in check_samples(tmp_path, record, full=True)  # ... only the hash tells
    path.unlink()
    assert "missing" in check_samples(tmp_path, record)
    old = {k: v for k, v in record.items() if k != "provenance"}  # a record from before sizes were kept
    assert "missing" in check_samples(tmp_path, old)


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "x" / "f.txt"
    write_atomic(path, lambda tmp: tmp.write_text("old"))

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    try:
        write_atomic(path, broken)
    except OSError:
        pass
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["f.txt"]
