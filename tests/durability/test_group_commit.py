"""The group commit on a real SQLite store: one bad operation fails alone, a lost transaction fails its
whole batch and the worker goes on, a lock conflict is retried whole, the journal pruner runs through it."""
from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from consent_store.durability import WalSync
from consent_store.store import Store
from consent_store.tables import journal
from engine.commit import GroupCommit, JournalPruner, StoreUnavailable
from engine.domain import Period

NOW = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)


class Immediate:
    """Stands in for the reactor: the worker's callbacks run on its own thread, which the test waits on."""

    def callFromThread(self, f, *args):
        f(*args)


@pytest.fixture
def sqlite_store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    s.upgrade()
    yield s
    s.dispose()


def outcome(d, timeout=30):
    done, box = threading.Event(), {}

    def ok(v):
        box["ok"] = v
        done.set()

    def bad(f):
        box["error"] = f.value
        done.set()
    d.addCallbacks(ok, bad)
    assert done.wait(timeout), "the operation never finished"
    return box


def journal_op(cid, received_at=NOW):
    return lambda uow: uow.journal(received_at=received_at, app="A", facility="F", control_id=cid, event="A01",
                                   ack_code="AA", error=None, raw=b"x", applied=True)


def submit_together(gc, works):
    """Hold the worker on a gate so that `works` land in one batch."""
    gate = threading.Event()
    first = gc.submit(lambda uow: gate.wait(10))
    ds = [gc.submit(w) for w in works]
    gate.set()
    outcome(first)
    return ds


def count(store):
    with store.transaction() as uow:
        return uow.conn.execute(select(func.count()).select_from(journal)).scalar()


def test_one_failing_operation_fails_alone(sqlite_store):
    gc = GroupCommit(sqlite_store, Immediate())
    try:
        def broken(uow):
            journal_op("half")(uow)
            raise ValueError("a bug in one operation")
        ds = submit_together(gc, [journal_op("1"), broken, journal_op("2")])
        results = [outcome(d) for d in ds]
        assert "ok" in results[0] and "ok" in results[2]
        assert isinstance(results[1]["error"], ValueError)
        with sqlite_store.transaction() as uow:
            assert uow.already_applied("A", "F", "1") and uow.already_applied("A", "F", "2")
            assert not uow.already_applied("A", "F", "half")       # its savepoint was rolled back
    finally:
        gc.stop()


def test_a_lost_transaction_fails_the_batch_and_the_worker_goes_on(sqlite_store):
    gc = GroupCommit(sqlite_store, Immediate())
    try:
        def connection_lost(uow):
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        ds = submit_together(gc, [journal_op("1"), connection_lost, journal_op("2")])
        assert all(isinstance(outcome(d).get("error"), StoreUnavailable) for d in ds)
        assert count(sqlite_store) == 0                           # nothing of that batch holds
        assert "ok" in outcome(gc.submit(journal_op("3")))        # the next batch commits
        assert count(sqlite_store) == 1
    finally:
        gc.stop()


def test_a_lock_conflict_runs_the_batch_again(sqlite_store):
    gc = GroupCommit(sqlite_store, Immediate())
    tries = []
    try:
        def deadlocked_once(uow):
            tries.append(1)
            if len(tries) == 1:
                raise OperationalError("SELECT", {}, psycopg.errors.DeadlockDetected("deadlock detected"))
            return "done"
        ds = submit_together(gc, [journal_op("1"), deadlocked_once])
        assert [outcome(d).get("ok") is not None for d in ds] == [True, True]
        assert len(tries) == 2 and count(sqlite_store) == 1       # the retry did not apply "1" twice
    finally:
        gc.stop()


def test_a_store_that_does_not_wait_for_the_disk_answers_once_the_wal_is_synced(tmp_path):
    deferred = Store(f"sqlite:///{tmp_path / 'store.db'}", deferred_sync=True)
    deferred.upgrade()
    gc = GroupCommit(deferred, Immediate())
    try:
        ds = submit_together(gc, [journal_op(str(i)) for i in range(5)])
        assert all("ok" in outcome(d) for d in ds)
        assert count(deferred) == 5
        assert gc._durable is not None and gc._durable.sync.wal.fd() is not None    # answered through a WalSync
    finally:
        gc.stop()
        deferred.dispose()


def test_when_the_wal_cannot_be_synced_nothing_is_answered_as_done_from_then_on(tmp_path):
    deferred = Store(f"sqlite:///{tmp_path / 'store.db'}", deferred_sync=True)
    deferred.upgrade()
    gc = GroupCommit(deferred, Immediate())
    # a WAL that the kernel cannot sync (a FIFO: fdatasync fails with EINVAL), as a disk that fails would
    os.mkfifo(tmp_path / "broken-wal")
    gc._durable.sync.close()
    gc._durable.sync = WalSync(str(tmp_path / "broken"), gc._answer, on_failure=gc._lost)
    try:
        first = outcome(gc.submit(journal_op("1")))
        later = outcome(gc.submit(journal_op("2")))
        assert isinstance(first.get("error"), StoreUnavailable) and "disk" in str(first["error"])
        assert isinstance(later.get("error"), StoreUnavailable), "no answer is trusted after a failed sync"
    finally:
        gc.stop()
        deferred.dispose()


def test_the_pruner_cuts_back_by_the_retention_in_chunks(sqlite_store):
    from twisted.internet import task
    gc = GroupCommit(sqlite_store, Immediate())
    clock = task.Clock()
    try:
        for i in range(12):
            outcome(gc.submit(journal_op(f"old{i}", NOW - timedelta(days=40, minutes=i))))
        outcome(gc.submit(journal_op("new", NOW - timedelta(days=20))))
        pruner = JournalPruner(gc, Period(months=1), clock, every=3600, now=lambda: NOW)
        assert pruner.cutoff() == datetime(2024, 12, 6, 9, 0, tzinfo=timezone.utc)
        pruner.CHUNK = 5
        done = outcome(pruner.prune())
        assert done["ok"] == 12 and count(sqlite_store) == 1
        with sqlite_store.transaction() as uow:
            assert uow.already_applied("A", "F", "old0")
            assert uow.conn.execute(text("SELECT control_id FROM journal")).scalar() == "new"
    finally:
        gc.stop()
