"""Ledger: exactly-once results behind fencing tokens, crash recovery of leases."""

import time

import pytest

from orchestrator.config import compose, load_sweep
from orchestrator.store.ledger import Ledger
from orchestrator.planning.plan import expand
from quantgrid.types import TaskResult


@pytest.fixture()
def setup(tmp_path):
    plan = expand(load_sweep(compose(["sweep=tiny", "sweep.formats=[bf16]", "sweep.tasks=[ppl_local,mmlu_local]"])))
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.open_sweep("tiny", ["sweep=tiny"], [], plan.cells)
    return ledger, plan.cells


def result(cell):
    return TaskResult(
        cell_key=cell.key,
        model=cell.model.name,
        format=cell.format.name,
        task=cell.task.name,
        metrics={"acc,none": 0.5},
        samples=[],
        num_samples=1,
        seconds=0.1,
        provenance={},
    )


def test_wal_and_one_commit_per_cell(setup):
    ledger, cells = setup
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    token = ledger.lease("tiny", "evaluate", [c.key for c in cells], ttl_s=60)
    assert ledger.commit_result("tiny", token, result(cells[0]))
    assert not ledger.commit_result("tiny", token, result(cells[0]))  # duplicate: rejected, counted
    assert ledger.counts("tiny")["done"] == 1 and ledger.counts("tiny")["rejected"] == 1


def test_late_result_of_given_up_attempt_is_rejected(setup):
    ledger, cells = setup
    old = ledger.lease("tiny", "evaluate", [cells[0].key], ttl_s=60)
    ledger.give_up(old, "timeout", "hung")
    new = ledger.lease("tiny", "evaluate", [cells[0].key], ttl_s=60)
    assert not ledger.commit_result("tiny", old, result(cells[0]))  # the paused actor woke up late
    assert ledger.commit_result("tiny", new, result(cells[0]))
    assert ledger.results("tiny")[0]["cell_key"] == cells[0].key and len(ledger.results("tiny")) == 1


def test_expired_lease_and_cancelled_sweep_reject(setup):
    ledger, cells = setup
    token = ledger.lease("tiny", "evaluate", [cells[0].key], ttl_s=0.01)
    time.sleep(0.05)
    assert not ledger.commit_result("tiny", token, result(cells[0]))
    token = ledger.lease("tiny", "evaluate", [cells[1].key], ttl_s=60)
    ledger.set_sweep_state("tiny", "cancelled")
    assert not ledger.commit_result("tiny", token, result(cells[1]))
    assert ledger.counts("tiny")["done"] == 0 and ledger.counts("tiny")["leased"] == 0


def test_reopen_after_driver_crash_frees_leases_and_keeps_done(setup, tmp_path):
    ledger, cells = setup
    token = ledger.lease("tiny", "evaluate", [c.key for c in cells], ttl_s=60)
    ledger.commit_result("tiny", token, result(cells[0]))
    ledger.close()  # the driver dies here
    again = Ledger(tmp_path / "ledger.db")
    again.open_sweep("tiny", ["sweep=tiny"], [], cells)
    assert again.done_keys("tiny") == {cells[0].key}
    assert again.counts("tiny")["leased"] == 0 and again.counts("tiny")["pending"] == len(cells) - 1
    assert not again.commit_result("tiny", token, result(cells[1]))  # the dead driver's attempt is fenced off


def test_first_failure_cause_sticks_and_resume_can_retry_it(setup):
    ledger, cells = setup
    ledger.fail_cells("tiny", [cells[0].key], "error", "oneshot crashed")
    ledger.fail_cells("tiny", [cells[0].key], "dependency_failed", "no checkpoint")
    (row,) = [c for c in ledger.cells("tiny") if c["cell_key"] == cells[0].key]
    assert (row["failure_class"], row["failure"]) == ("error", "oneshot crashed")
    token = ledger.lease("tiny", "evaluate", [cells[0].key], ttl_s=60)  # a resume retries failed cells
    assert ledger.commit_result("tiny", token, result(cells[0]))
    assert ledger.counts("tiny")["failed"] == 0


def test_a_fenced_attempt_is_refused_before_it_writes_files_and_the_refusal_is_counted(setup):
    ledger, cells = setup
    old = ledger.lease("tiny", "evaluate", [cells[0].key], ttl_s=60)
    assert ledger.reject_if_fenced("tiny", old, cells[0].key) is None  # live: may write, then commit
    ledger.give_up(old, "lease_expired", "silent")
    assert ledger.reject_if_fenced("tiny", old, cells[0].key) == "attempt given_up"
    assert ledger.reject_if_fenced("tiny", old, cells[1].key) == "attempt given_up"
    assert ledger.counts("tiny")["rejected"] == 2 and ledger.counts("tiny")["done"] == 0


def test_a_withdrawn_result_makes_its_cell_pending_and_is_kept_with_its_reason(setup):
    ledger, cells = setup
    token = ledger.lease("tiny", "evaluate", [c.key for c in cells], ttl_s=60)
    for c in cells:
        assert ledger.commit_result("tiny", token, result(c))
    ledger.mark_exported("tiny", "uri", [c.key for c in cells])
    assert {r["cell_key"] for r in ledger.done_records("tiny")} == {c.key for c in cells}
    ledger.reopen("tiny", {cells[0].key: "samples file x is missing"})
    assert ledger.done_keys("tiny") == {cells[1].key}
    assert ledger.export_counts("tiny", "uri") == (1, 1)  # its result and acknowledgement are gone
    assert [w["reason"] for w in ledger.withdrawn("tiny")] == ["samples file x is missing"]
    assert [c["cell_key"] for c in ledger.not_terminal("tiny", {c.key for c in cells})] == [cells[0].key]
    token = ledger.lease("tiny", "evaluate", [cells[0].key], ttl_s=60)
    assert ledger.commit_result("tiny", token, result(cells[0]))  # scored again: committed once more
    assert ledger.not_terminal("tiny", {c.key for c in cells}) == [] and ledger.counts("tiny")["rejected"] == 0
