"""The audit chain's verification: walked on a snapshot that holds no writer back, recorded as an entry of the
chain, the last one read through ix_audit_kind (migration 0010_audit_verification)."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, text

from consent_store.store import Q_LAST_VERIFICATION
from consent_store.tables import audit

NOW = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)


def _entries(store, n: int, start: int = 0) -> None:
    with store.transaction() as uow:
        for i in range(start, start + n):
            uow.audit(at=NOW, patient_id=None, kind="test", payload={"i": i})


def test_a_writer_commits_while_a_snapshot_reads_and_the_snapshot_stays_as_it_began(store):
    _entries(store, 3)
    with store.snapshot() as reader:
        assert reader.conn.execute(select(func.count()).select_from(audit)).scalar() == 3
        # on SQLite a write lock held by the reader would make this wait (busy timeout), then fail
        wrote = threading.Event()
        writer = threading.Thread(target=lambda: (_entries(store, 2, 3), wrote.set()))
        writer.start()
        writer.join(20)
        assert wrote.is_set(), "the writer waited for the snapshot"
        # the snapshot still sees the chain as it was: its walk ends where its head was
        assert reader.conn.execute(select(func.count()).select_from(audit)).scalar() == 3
        assert reader.verify_audit() == (3, None, None)
    with store.transaction() as uow:
        assert uow.verify_audit() == (5, None, None)


def test_a_verification_is_recorded_in_the_chain_and_the_last_one_read_back(store):
    with store.transaction() as uow:
        assert uow.last_audit_verification() is None
    _entries(store, 4)
    first = store.verify_audit()
    assert (first["entries"], first["ok"], first["broken_at"], first["why"]) == (4, True, None, None)
    with store.transaction() as uow:
        uow.record_audit_verification(first, NOW - timedelta(days=1), by="ops", via="cli")
    second = store.verify_audit()
    assert second["entries"] == 5 and second["through"] == first["through"] + 1
    with store.transaction() as uow:
        uow.record_audit_verification(second, NOW, by="alice", via="console", role="operator")
    with store.transaction() as uow:
        last = uow.last_audit_verification()
        assert uow.verify_audit() == (6, None, None)      # the records are links of the chain like any entry
    assert last["at"] == NOW and last["entries"] == 5 and last["ok"] is True
    assert (last["by"], last["via"], last["role"]) == ("alice", "console", "operator")


def test_the_last_verification_is_one_index_probe(tmp_path):
    from consent_store.store import Store
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.upgrade()
    try:
        with store.transaction() as uow:
            query = Q_LAST_VERIFICATION.compile(uow.conn, compile_kwargs={"literal_binds": True})
            plan = " ".join(str(r[-1]) for r in uow.conn.execute(text(f"EXPLAIN QUERY PLAN {query}")))
        assert "ix_audit_kind" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        store.dispose()
