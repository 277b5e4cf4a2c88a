"""WalSync (consent_store/durability.py) on a real SQLite file: the apply process's answers leave only
after an fdatasync of the WAL that began after their commit, in order; a failure delivers nothing more."""
from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone

from sqlalchemy import func, select, text

from consent_store.durability import WalCheckpoint, WalSync
from consent_store.store import Store
from consent_store.tables import journal

NOW = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)


def write_one(store, cid: str) -> None:
    with store.transaction() as uow:
        uow.journal(received_at=NOW, app="A", facility="F", control_id=cid, event="A01", ack_code="AA",
                    error=None, raw=b"x", applied=True)


def test_a_deferred_store_commits_without_waiting_and_only_the_apply_process_asks_for_it(tmp_path):
    deferred = Store(f"sqlite:///{tmp_path / 's.db'}", deferred_sync=True)
    deferred.upgrade()
    plain = Store(f"sqlite:///{tmp_path / 's.db'}")
    memory = Store("sqlite://", deferred_sync=True)
    try:
        with deferred.engine.connect() as c:
            assert c.execute(text("PRAGMA synchronous")).scalar() == 1      # NORMAL
        with plain.engine.connect() as c:
            assert c.execute(text("PRAGMA synchronous")).scalar() == 2      # FULL
        assert deferred.deferred_sync and not plain.deferred_sync
        assert not memory.deferred_sync, "a store in memory has no WAL to sync"
    finally:
        for s in (deferred, plain, memory):
            s.dispose()


def test_answers_are_delivered_in_order_after_a_sync_of_the_wal_that_holds_them(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}", deferred_sync=True)
    store.upgrade()
    delivered, synced_at = [], []
    done = threading.Event()

    def deliver(items):
        # what each delivery saw: the WAL file is open and synced, and every item's commit is in it
        synced_at.append(os.fstat(sync.wal.fd()).st_ino == os.stat(store.path + "-wal").st_ino)
        delivered.extend(items)
        if len(delivered) == 20:
            done.set()
    sync = WalSync(store.path, deliver)
    try:
        for i in range(20):
            write_one(store, f"c{i}")
            sync.after_sync(i)
        assert done.wait(10)
        assert delivered == list(range(20))
        assert all(synced_at) and len(synced_at) <= 20      # answers that piled up shared a sync
    finally:
        sync.close()
        store.dispose()
    again = Store(f"sqlite:///{tmp_path / 's.db'}")
    with again.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(journal)).scalar() == 20
    again.dispose()


def test_close_delivers_what_is_waiting_and_a_replaced_wal_is_opened_again(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}", deferred_sync=True)
    store.upgrade()
    delivered = []
    sync = WalSync(store.path, delivered.extend)
    write_one(store, "a")
    sync.sync()
    store.dispose()                 # the last connection: SQLite checkpoints and removes the WAL
    assert not os.path.exists(store.path + "-wal")
    sync.sync()                     # nothing to sync: every commit is in the database file
    write_one(store, "b")           # a new WAL file
    sync.sync()
    assert os.fstat(sync.wal.fd()).st_ino == os.stat(store.path + "-wal").st_ino
    sync.after_sync("b")
    sync.close()
    assert delivered == ["b"]
    store.dispose()


def test_after_a_failure_nothing_is_delivered_and_every_item_is_handed_back_once(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}", deferred_sync=True)
    store.upgrade()
    failures, delivered = [], []

    def deliver(items):
        if "bad" in items:
            raise BrokenPipeError("the server is gone")
        delivered.extend(items)
    reported = threading.Event()
    sync = WalSync(store.path, deliver, on_failure=lambda e, items: (failures.append((e, items)), reported.set()))
    write_one(store, "a")
    sync.after_sync("bad")
    assert reported.wait(10)
    write_one(store, "b")
    sync.after_sync("later")
    sync.close()
    assert isinstance(sync.failed, BrokenPipeError)
    assert [items for _, items in failures] == [["bad"], ["later"]], "each undelivered item is handed back once"
    assert all(e is sync.failed for e, _ in failures)
    assert delivered == [], "nothing is delivered after a failure"
    store.dispose()


def test_inline_delivers_on_the_callers_thread_after_what_was_handed_before(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}", deferred_sync=True)
    store.upgrade()
    delivered = []

    def deliver(items):
        delivered.extend((item, threading.current_thread().name) for item in items)
    sync = WalSync(store.path, deliver, name="syncer")
    try:
        for i in range(50):
            write_one(store, f"c{i}")
            sync.after_sync(i, inline=(i % 7 == 0))
            if i % 7 == 0:
                # returned only once delivered, with every item before it
                assert [item for item, _ in delivered][-1] == i
        sync.close()
        assert [item for item, _ in delivered] == list(range(50))
        # alone (nothing handed to the thread), an inline item is synced and delivered by its caller
        alone = WalSync(store.path, deliver, name="syncer")
        write_one(store, "alone")
        alone.after_sync("alone", inline=True)
        assert delivered[-1] == ("alone", threading.current_thread().name)
        alone.close()
    finally:
        store.dispose()


def test_a_writer_that_never_pauses_keeps_a_short_wal_through_the_checkpoint_thread(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}", deferred_sync=True)
    store.upgrade()
    with store.engine.connect() as c:
        assert c.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0     # not in the writer's commits
    checkpoints = WalCheckpoint(store.path, every=0.005)
    checkpoints.PENDING, checkpoints.LONGEST = 50, 400
    longest = 0
    try:
        for i in range(3000):
            write_one(store, f"c{i}")
            longest = max(longest, checkpoints.frames()[0])
            checkpoints.restart_if_long(store)      # as the apply process does between two batches
        deadline = time.monotonic() + 10
        while checkpoints.frames()[0] - checkpoints.frames()[1] >= checkpoints.PENDING and time.monotonic() < deadline:
            time.sleep(0.01)
        in_wal, copied = checkpoints.frames()
    finally:
        checkpoints.close()
    assert checkpoints.checkpoints > 0
    assert in_wal - copied < checkpoints.PENDING, "what the writer left is copied into the database"
    # without the thread the WAL would hold every frame of the 3,000 commits (several per commit)
    # (a restart refused by the other process's checkpoint is tried again after the next commit)
    assert longest < 3 * checkpoints.LONGEST, f"the WAL starts over: at most {longest} frames"
    with store.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(journal)).scalar() == 3000
    store.dispose()


def test_a_wal_that_cannot_start_over_is_said_not_raised(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}", deferred_sync=True)
    store.upgrade()
    write_one(store, "a")
    assert store.restart_wal() is None
    store.dispose()
    (tmp_path / "s.db").write_bytes(b"not a database at all" * 300)
    broken = Store(f"sqlite:///{tmp_path / 's.db'}", deferred_sync=True)
    said = broken.restart_wal()
    assert said and "DatabaseError" in said and "\n" not in said
    broken.dispose()
