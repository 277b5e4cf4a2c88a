"""Fewer pages written per message (bench/wal_frames.py): event ids are time-ordered UUIDs, so each joins the
outbox's unique index at its right edge; ix_consent_fact_item, which no query read, goes (migration
0012_fewer_pages). Event ids and audit ids given before the upgrade are still found, through an index."""
from __future__ import annotations

import sqlite3
import time
import uuid
from datetime import datetime, timezone

import pytest
from alembic import command
from sqlalchemy import inspect, select

from consent_store.migrate import config, upgrade
from consent_store.store import Store
from consent_store.tables import outbox
from engine.pipeline import event_id
from tests.stores import pg_database

NOW = datetime(2026, 1, 6, 9, 0, tzinfo=timezone.utc)
ROUTES = {"downstream": ["*"]}


def test_an_event_id_is_a_uuid7_of_the_time_it_was_made():
    before = time.time_ns() // 1_000_000
    made = uuid.UUID(event_id())
    after = time.time_ns() // 1_000_000
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after
    assert str(made) == str(uuid.UUID(str(made)))   # the canonical form, as uuid4 ids were


def test_event_ids_strictly_increase_even_within_a_millisecond():
    ids = [event_id() for _ in range(20000)]        # many share a millisecond
    assert len({uuid.UUID(i).int >> 80 for i in ids}) < len(ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids)


@pytest.fixture(params=["sqlite", "postgresql"])
def bare_url(request, tmp_path):
    """A store not migrated yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pages.db'}"
    else:
        with pg_database() as url:
            yield url


def _event(uow, eid: str) -> None:
    uow.enqueue([{"id": eid, "type": "consent.changed", "patient_key": "H|1", "patient": {"id": "1"},
                  "data": {}}], ROUTES, NOW)


def _indexes(store: Store) -> set[str]:
    return {ix["name"] for ix in inspect(store.engine).get_indexes("consent_fact")}


def test_ids_given_before_the_upgrade_are_still_found(bare_url):
    store = Store(bare_url)
    try:
        upgrade(store.engine, "0011_visits_at")
        assert "ix_consent_fact_item" in _indexes(store)
        old_event = str(uuid.uuid4())
        with store.transaction() as uow:
            _event(uow, old_event)
            old_audit = uow.audit(at=NOW, patient_id=None, kind="test", payload={"i": 1})
        upgrade(store.engine)
        assert "ix_consent_fact_item" not in _indexes(store)
        new_events = [event_id(), event_id()]
        with store.transaction() as uow:
            for e in new_events:
                _event(uow, e)
            new_audit = uow.audit(at=NOW, patient_id=None, kind="test", payload={"i": 2})
        with store.transaction() as uow:
            for eid in (old_event, *new_events):
                assert [d["event_id"] for d in uow.deliveries(event_ref=eid)] == [eid]
            for aid, i in ((old_audit, 1), (new_audit, 2)):
                assert [(e["audit_id"], e["payload"]["i"]) for e in uow.audit_entries(audit_id=aid)] == [(aid, i)]
            assert uow.verify_audit() == (2, None, None)
            # the new ids follow one another in the unique index as in the outbox
            ids = [r.event_id for r in uow.conn.execute(select(outbox.c.event_id).order_by(outbox.c.seq))]
            assert ids[1:] == sorted(ids[1:]) == new_events
        command.downgrade(config(store.engine), "0011_visits_at")
        assert "ix_consent_fact_item" in _indexes(store)
        upgrade(store.engine)
        assert "ix_consent_fact_item" not in _indexes(store)
    finally:
        store.dispose()


def test_the_lookups_by_id_are_index_probes(tmp_path):
    path = tmp_path / "plans.db"
    Store(f"sqlite:///{path}").upgrade()
    db = sqlite3.connect(path)
    for sql, index in (("SELECT * FROM outbox WHERE event_id = ?", "sqlite_autoindex_outbox_1"),
                       ("SELECT * FROM audit WHERE hash = ? ORDER BY seq", "sqlite_autoindex_audit_1")):
        plan = " ".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", ("x",)))
        assert f"USING INDEX {index} (" in plan, plan
    db.close()
