"""The durable ledger: SQLite in WAL mode, written only by the driver.

Sweeps, cells, stage attempts (each attempt id is a fencing token), states and result pointers.
A task result is committed the moment it arrives and only if its attempt still holds the lease:
a late result from an attempt that was given up (lease expired, actor presumed dead, sweep
cancelled) is rejected and counted, never recorded twice. `resume` reads done cells from here,
never from MLflow.

WAL needs a local filesystem: on a cluster keep the ledger on a persistent volume local to the
head node (see README, "Resuming a sweep whose head died").
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from quantgrid.types import Cell, TaskResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
  name TEXT PRIMARY KEY, created REAL, overrides TEXT, conf_dirs TEXT, state TEXT, updated REAL, host TEXT);
CREATE TABLE IF NOT EXISTS cells (
  sweep TEXT, cell_key TEXT, model TEXT, format TEXT, task TEXT, seed INTEGER,
  state TEXT, attempts INTEGER DEFAULT 0, failure_class TEXT, failure TEXT, updated REAL,
  started REAL, seconds REAL, execution TEXT,
  PRIMARY KEY (sweep, cell_key));
CREATE TABLE IF NOT EXISTS attempts (
  token INTEGER PRIMARY KEY AUTOINCREMENT, sweep TEXT, stage TEXT, cells TEXT, state TEXT,
  lease_expires REAL, started REAL, finished REAL, failure_class TEXT, failure TEXT, worker_pid INTEGER,
  node TEXT, fallback TEXT, log_path TEXT);
CREATE TABLE IF NOT EXISTS results (
  sweep TEXT, cell_key TEXT, token INTEGER, committed REAL, metrics TEXT, record TEXT,
  PRIMARY KEY (sweep, cell_key));
CREATE TABLE IF NOT EXISTS rejected (
  sweep TEXT, cell_key TEXT, token INTEGER, reason TEXT, at REAL);
CREATE TABLE IF NOT EXISTS withdrawn (
  sweep TEXT, cell_key TEXT, token INTEGER, reason TEXT, at REAL, record TEXT);
CREATE TABLE IF NOT EXISTS artifacts (
  sweep TEXT, stage TEXT, path TEXT, content_hash TEXT, at REAL, PRIMARY KEY (sweep, stage));
CREATE INDEX IF NOT EXISTS cells_state ON cells (sweep, state);
CREATE TABLE IF NOT EXISTS batches (
  sweep TEXT, cell_key TEXT, batch INTEGER, token INTEGER, committed REAL, documents TEXT, samples TEXT,
  verdict TEXT, PRIMARY KEY (sweep, cell_key, batch));
CREATE TABLE IF NOT EXISTS exports (
  sweep TEXT, target TEXT, cell_key TEXT, at REAL, PRIMARY KEY (sweep, target, cell_key));
"""

CELL_STATES = ("pending", "leased", "running", "done", "failed")


def execution_of(cell: Any) -> str:
    """native | emulated, as the plan resolved it (a comparison inherits its quantized cell's)."""
    engine = getattr(cell, "engine", None) or getattr(getattr(cell, "cell", None), "engine", None)
    return getattr(engine, "execution", "") if engine is not None and getattr(engine, "host", "") else "native"


class Ledger:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so every commit is explicit.
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        self.db.executescript(SCHEMA)
        # Ledgers written by an older quantgrid gain the columns added since.
        for table, col, typ in (
            ("attempts", "worker_pid", "INTEGER"),
            ("attempts", "node", "TEXT"),
            ("attempts", "fallback", "TEXT"),
            ("attempts", "log_path", "TEXT"),
            ("cells", "started", "REAL"),
            ("cells", "seconds", "REAL"),
            ("cells", "execution", "TEXT"),
            ("sweeps", "host", "TEXT"),
            ("cells", "adaptive", "TEXT"),
        ):
            if col not in {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {typ}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    # -- sweeps and cells ------------------------------------------------------------------------
    def open_sweep(
        self,
        name: str,
        overrides: list[str],
        conf_dirs: list[str],
        cells: list[Cell],
        host: dict[str, Any] | None = None,
    ) -> None:
        """Register a sweep and its cells; cells already known keep their state (resume)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO sweeps VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                "overrides=excluded.overrides, conf_dirs=excluded.conf_dirs, state='running', "
                "updated=excluded.updated, "
                "host=excluded.host",
                (
                    name,
                    now,
                    json.dumps(overrides),
                    json.dumps(conf_dirs),
                    "running",
                    now,
                    json.dumps(host) if host else None,
                ),
            )
            db.executemany(
                "INSERT OR IGNORE INTO cells (sweep, cell_key, model, format, task, seed, state, updated, execution) "
                "VALUES (?,?,?,?,?,?,'pending',?,?)",
                [(name, c.key, c.model.name, c.format.name, c.task.name, c.seed, now, execution_of(c)) for c in cells],
            )
            # A crashed driver leaves leases behind: they belong to nobody now.
            db.execute(
                "UPDATE attempts SET state='abandoned', finished=? WHERE sweep=? AND state='leased'", (now, name)
            )
            db.execute(
                "UPDATE cells SET state='pending', updated=? WHERE sweep=? AND state IN ('leased','running')",
                (now, name),
            )

    def sweep_info(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT name, created, overrides, conf_dirs, state, host FROM sweeps WHERE name=?", (name,)
        ).fetchone()
        if row is None:
            return None
        return {
            "name": row[0],
            "created": row[1],
            "overrides": json.loads(row[2]),
            "conf_dirs": json.loads(row[3]),
            "state": row[4],
            "host": json.loads(row[5]) if row[5] else None,
        }

    def set_sweep_state(self, name: str, state: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE sweeps SET state=?, updated=? WHERE name=?", (state, time.time(), name))
            if state == "cancelled":
                db.execute(
                    "UPDATE attempts SET state='cancelled', finished=? WHERE sweep=? AND state='leased'",
                    (time.time(), name),
                )
                db.execute(
                    "UPDATE cells SET state='pending', updated=? WHERE sweep=? AND state IN ('leased','running')",
                    (time.time(), name),
                )

    def done_keys(self, sweep: str) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT cell_key FROM cells WHERE sweep=? AND state='done'", (sweep,))}

    def counts(self, sweep: str) -> dict[str, int]:
        out = {s: 0 for s in CELL_STATES}
        out.update(
            dict(self.db.execute("SELECT state, COUNT(*) FROM cells WHERE sweep=? GROUP BY state", (sweep,)).fetchall())
        )
        out["rejected"] = self.db.execute("SELECT COUNT(*) FROM rejected WHERE sweep=?", (sweep,)).fetchone()[0]
        return out

    def cells(self, sweep: str) -> list[dict[str, Any]]:
        cols = (
            "cell_key",
            "model",
            "format",
            "task",
            "seed",
            "state",
            "attempts",
            "failure_class",
            "failure",
            "updated",
        )
        rows = self.db.execute(
            f"SELECT {', '.join(cols)} FROM cells WHERE sweep=? ORDER BY model, format, task, seed", (sweep,)
        )
        return [dict(zip(cols, r)) for r in rows]

    # -- leases and results ----------------------------------------------------------------------
    def lease(
        self,
        sweep: str,
        stage: str,
        cell_keys: list[str],
        ttl_s: float,
        worker_pid: int | None = None,
        node: str = "",
        fallback: dict | None = None,
        log_path: str = "",
    ) -> int:
        """Start an attempt on `cell_keys`; the returned token fences every result it sends."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO attempts (sweep, stage, cells, state, lease_expires, started, worker_pid, node, "
                "fallback, log_path) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    sweep,
                    stage,
                    json.dumps(cell_keys),
                    "leased",
                    now + ttl_s,
                    now,
                    worker_pid,
                    node,
                    json.dumps(fallback) if fallback else None,
                    log_path,
                ),
            )
            db.executemany(
                "UPDATE cells SET state='leased', attempts=attempts+1, updated=? WHERE sweep=? AND cell_key=? "
                "AND state!='done'",
                [(now, sweep, k) for k in cell_keys],
            )
            return int(cur.lastrowid)

    def start_cell(self, sweep: str, cell_key: str) -> None:
        """The attempt holding this cell's lease has started scoring it (state running)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE cells SET state='running', started=?, updated=? WHERE sweep=? AND cell_key=? AND "
                "state='leased'",
                (now, now, sweep, cell_key),
            )

    def record_artifact(self, sweep: str, stage: str, path: str, content_hash: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?)", (sweep, stage, path, content_hash, time.time())
            )

    def artifact_paths(self) -> set[str]:
        return {p for (p,) in self.db.execute("SELECT path FROM artifacts")}

    def attempts(self, sweep: str, cell_key: str | None = None) -> list[dict[str, Any]]:
        cols = (
            "token",
            "stage",
            "cells",
            "state",
            "started",
            "finished",
            "failure_class",
            "failure",
            "worker_pid",
            "node",
            "fallback",
            "log_path",
        )
        rows = [
            dict(zip(cols, r))
            for r in self.db.execute(f"SELECT {', '.join(cols)} FROM attempts WHERE sweep=? ORDER BY token", (sweep,))
        ]
        for r in rows:
            r["cells"] = json.loads(r["cells"])
            r["fallback"] = json.loads(r["fallback"]) if r["fallback"] else None
        return [r for r in rows if cell_key is None or any(k.startswith(cell_key) for k in r["cells"])]

    def rates(self, sweep: str) -> list[dict[str, Any]]:
        """Per (model, format): done / total cells, first start and last commit (status ETA)."""
        rows = self.db.execute(
            "SELECT model, format, COUNT(*), SUM(state='done'), SUM(state='failed'), SUM(state IN "
            "('leased','running')), "
            "MIN(CASE WHEN state='done' THEN started END), MAX(CASE WHEN state='done' THEN updated END), "
            "SUM(CASE WHEN state='done' THEN seconds END), GROUP_CONCAT(DISTINCT COALESCE(execution, 'native')) "
            "FROM cells WHERE sweep=? GROUP BY model, format ORDER BY model, format",
            (sweep,),
        )
        cols = (
            "model",
            "format",
            "total",
            "done",
            "failed",
            "running",
            "first_start",
            "last_done",
            "cell_seconds",
            "execution",
        )
        return [dict(zip(cols, r)) for r in rows]

    def renew(self, token: int, ttl_s: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE attempts SET lease_expires=? WHERE token=? AND state='leased'", (time.time() + ttl_s, token)
            )
            return cur.rowcount == 1

    def give_up(self, token: int, failure_class: str, message: str) -> None:
        """The attempt is presumed lost (timeout, dead actor): its late results will be rejected."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET state='given_up', finished=?, failure_class=?, failure=? WHERE token=? AND "
                "state='leased'",
                (now, failure_class, message, token),
            )
            keys = json.loads(db.execute("SELECT cells FROM attempts WHERE token=?", (token,)).fetchone()[0])
            db.executemany(
                "UPDATE cells SET state='pending', updated=? WHERE sweep=(SELECT sweep FROM attempts WHERE token=?) "
                "AND cell_key=? AND state IN ('leased', 'running')",
                [(now, token, k) for k in keys],
            )

    def finish(self, token: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET state='finished', finished=? WHERE token=? AND state='leased'",
                (time.time(), token),
            )

    @staticmethod
    def _reject_reason(db: sqlite3.Connection, sweep: str, token: int, cell_key: str, now: float) -> str | None:
        row = db.execute(
            "SELECT state, lease_expires, cells FROM attempts WHERE token=? AND sweep=?", (token, sweep)
        ).fetchone()
        if row is None:
            return "unknown attempt"
        if row[0] != "leased":
            return f"attempt {row[0]}"
        if row[1] < now:
            return "lease expired"
        if cell_key not in json.loads(row[2]):
            return "cell not leased by this attempt"
        if db.execute("SELECT 1 FROM results WHERE sweep=? AND cell_key=?", (sweep, cell_key)).fetchone():
            return "duplicate"
        return None

    @classmethod
    def _fence(cls, db: sqlite3.Connection, sweep: str, token: int, cell_key: str, now: float) -> str | None:
        """Why this attempt may not write for the cell (recorded as a rejection), or None."""
        reason = cls._reject_reason(db, sweep, token, cell_key, now)
        if reason:
            db.execute("INSERT INTO rejected VALUES (?,?,?,?,?)", (sweep, cell_key, token, reason, now))
        return reason

    def reject_if_fenced(self, sweep: str, token: int, cell_key: str) -> str | None:
        """Before a result's files are written: why this attempt may not commit (recorded as a
        rejection), or None. The driver is the ledger's only writer, so the answer holds until
        its commit_result."""
        now = time.time()
        with self._tx() as db:
            return self._fence(db, sweep, token, cell_key, now)

    def commit_result(self, sweep: str, token: int, result: TaskResult, record: dict[str, Any] | None = None) -> bool:
        """Record a result exactly once, only from the live attempt. False = rejected (and counted).
        The record carries its samples file's path, size and SHA-256 (written before this call)."""
        now = time.time()
        with self._tx() as db:
            if self._fence(db, sweep, token, result.cell_key, now):
                return False
            rec = (
                record
                if record is not None
                else {k: v for k, v in asdict(result).items() if k not in ("samples", "attachments")}
            )
            db.execute(
                "INSERT INTO results VALUES (?,?,?,?,?,?)",
                (sweep, result.cell_key, token, now, json.dumps(result.metrics), json.dumps(rec, default=str)),
            )
            db.execute(
                "UPDATE cells SET state='done', failure_class=NULL, failure=NULL, updated=?, seconds=?, "
                "started=COALESCE(started, ?) WHERE sweep=? AND cell_key=?",
                (now, result.seconds, now - result.seconds, sweep, result.cell_key),
            )
            return True

    # -- adaptive cells: one row per scored batch (orchestrator/execution/adaptive.py) --------------
    def commit_batch(
        self,
        sweep: str,
        token: int,
        cell_key: str,
        batch: int,
        documents: list[int],
        samples: list[dict[str, Any]],
        verdict: dict[str, Any],
    ) -> str | None:
        """Record one batch of an adaptive cell, fenced like a result (None = recorded, else why
        not, counted as a rejection). The batch's per-sample records ride in the same transaction,
        so a resumed cell continues from its last batch with nothing to re-read but this table;
        the cell's `adaptive` column holds the verdict so far (status reads it)."""
        now = time.time()
        with self._tx() as db:
            reason = self._fence(db, sweep, token, cell_key, now)
            if reason:
                return reason
            db.execute(
                # REPLACE: a batch scored again by the live attempt (its first scoring's attempt was
                # lost, or the driver stopped before the decided cell's result) supersedes the row
                "INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?,?,?)",
                (sweep, cell_key, batch, token, now, json.dumps(documents), json.dumps(samples), json.dumps(verdict)),
            )
            db.execute(
                "UPDATE cells SET adaptive=?, updated=? WHERE sweep=? AND cell_key=?",
                (json.dumps(verdict), now, sweep, cell_key),
            )
            return None

    def batches(self, sweep: str, cell_key: str) -> list[dict[str, Any]]:
        """A cell's committed batches in order: {batch, documents, samples, verdict}."""
        rows = self.db.execute(
            "SELECT batch, documents, samples, verdict FROM batches WHERE sweep=? AND cell_key=? ORDER BY batch",
            (sweep, cell_key),
        )
        return [
            {"batch": b, "documents": json.loads(d), "samples": json.loads(s) if s else [], "verdict": json.loads(v)}
            for b, d, s, v in rows
        ]

    def drop_batch_samples(self, sweep: str, cell_key: str) -> None:
        """After the merged result is committed (its samples file holds every record): keep each
        batch's documents and verdict, not its records (the ledger stays at the grid's scale)."""
        with self._tx() as db:
            db.execute("UPDATE batches SET samples=NULL WHERE sweep=? AND cell_key=?", (sweep, cell_key))

    def adaptive(self, sweep: str) -> list[dict[str, Any]]:
        """Every adaptive cell's verdict so far (or final): model, format, task, state + the verdict."""
        rows = self.db.execute(
            "SELECT model, format, task, state, adaptive FROM cells WHERE sweep=? AND adaptive IS NOT NULL "
            "ORDER BY model, format, task",
            (sweep,),
        )
        return [{"model": m, "format": f, "task": t, "state": st, **json.loads(a)} for m, f, t, st, a in rows]

    def done_records(self, sweep: str) -> list[dict[str, Any]]:
        """Every done cell's committed record (resume checks their samples files)."""
        return [
            json.loads(r)
            for (r,) in self.db.execute(
                "SELECT r.record FROM results r JOIN cells c ON c.sweep=r.sweep AND c.cell_key=r.cell_key "
                "WHERE r.sweep=? AND c.state='done'",
                (sweep,),
            )
        ]

    def reopen(self, sweep: str, reasons: dict[str, str]) -> None:
        """Done cells whose result cannot be trusted any more (its samples file is missing or bad):
        the result is withdrawn (kept in `withdrawn` with the reason) and the cell is pending again."""
        now = time.time()
        with self._tx() as db:
            for key, why in reasons.items():
                row = db.execute(
                    "SELECT token, record FROM results WHERE sweep=? AND cell_key=?", (sweep, key)
                ).fetchone()
                db.execute(
                    "INSERT INTO withdrawn VALUES (?,?,?,?,?,?)",
                    (sweep, key, row[0] if row else None, why, now, row[1] if row else None),
                )
                db.execute("DELETE FROM results WHERE sweep=? AND cell_key=?", (sweep, key))
                # an adaptive cell is rescored from its first batch (its batches' records were dropped)
                db.execute("DELETE FROM batches WHERE sweep=? AND cell_key=?", (sweep, key))
                db.execute("UPDATE cells SET adaptive=NULL WHERE sweep=? AND cell_key=?", (sweep, key))
                db.execute("DELETE FROM exports WHERE sweep=? AND cell_key=?", (sweep, key))
                db.execute(
                    "UPDATE cells SET state='pending', failure_class='samples_lost', failure=?, updated=? "
                    "WHERE sweep=? AND cell_key=?",
                    (why[:2000], now, sweep, key),
                )

    def withdrawn(self, sweep: str) -> list[dict[str, Any]]:
        return [
            {"cell_key": k, "reason": r, "at": t}
            for k, r, t in self.db.execute(
                "SELECT cell_key, reason, at FROM withdrawn WHERE sweep=? ORDER BY at", (sweep,)
            )
        ]

    def not_terminal(self, sweep: str, keys: set[str]) -> list[dict[str, Any]]:
        """Cells of `keys` neither done nor failed (a run that leaves any must not say done)."""
        return [c for c in self.cells(sweep) if c["cell_key"] in keys and c["state"] not in ("done", "failed")]

    def fail_cells(self, sweep: str, cell_keys: list[str], failure_class: str, message: str) -> None:
        now = time.time()
        with self._tx() as db:
            # The first cause sticks: a downstream "dependency_failed" never hides why quantize failed.
            db.executemany(
                "UPDATE cells SET state='failed', failure_class=?, failure=?, updated=? WHERE sweep=? AND cell_key=? "
                "AND state NOT IN ('done', 'failed')",
                [(failure_class, message[:2000], now, sweep, k) for k in cell_keys],
            )

    def unexported(self, sweep: str, target: str, limit: int) -> list[tuple[str, float, dict[str, Any]]]:
        """Results the tracking `target` has not acknowledged: (cell_key, commit time, record+seed)."""
        rows = self.db.execute(
            "SELECT r.cell_key, r.committed, r.record, c.seed FROM results r JOIN cells c ON c.sweep=r.sweep "
            "AND c.cell_key=r.cell_key "
            "WHERE r.sweep=? AND NOT EXISTS (SELECT 1 FROM exports e WHERE e.sweep=r.sweep AND e.target=? AND "
            "e.cell_key=r.cell_key) "
            "ORDER BY r.committed LIMIT ?",
            (sweep, target, limit),
        ).fetchall()
        return [(k, t, {**json.loads(rec), "seed": seed}) for k, t, rec, seed in rows]

    def mark_exported(self, sweep: str, target: str, cell_keys: list[str]) -> None:
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO exports VALUES (?,?,?,?)", [(sweep, target, k, now) for k in cell_keys]
            )

    def forget_exports(self, sweep: str, target: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM exports WHERE sweep=? AND target=?", (sweep, target))

    def export_counts(self, sweep: str, target: str) -> tuple[int, int]:
        """(results, results acknowledged by target)."""
        total = self.db.execute("SELECT COUNT(*) FROM results WHERE sweep=?", (sweep,)).fetchone()[0]
        done = self.db.execute("SELECT COUNT(*) FROM exports WHERE sweep=? AND target=?", (sweep, target)).fetchone()[0]
        return total, done

    def results(self, sweep: str) -> list[dict[str, Any]]:
        return [
            json.loads(r)
            for (r,) in self.db.execute("SELECT record FROM results WHERE sweep=? ORDER BY committed", (sweep,))
        ]
