"""audit.user_id (migration 0009): entries written before it get their user from their payload, so the
auditors' search by user (GET /v1/audit?user=) finds them too; the hash chain is untouched."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from consent_store.migrate import upgrade
from consent_store.store import Store, chain_hash
from tests.stores import pg_database

GENESIS = "0" * 64


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_entries_before_the_migration_get_their_user(tmp_path, kind):
    if kind == "sqlite":
        run(f"sqlite:///{tmp_path / 'old.db'}")
    else:
        with pg_database() as url:
            run(url)


def run(url):
    store = Store(url)
    upgrade(store.engine, "0005")
    at = datetime(2025, 1, 6, 9, tzinfo=timezone.utc)
    entries = [("decision", {"request": {"user": "doc-1"}, "decision": "permit"}),
               ("consent", {"collected_by": {"id": "desk-2"}}),
               ("dmp.result", {"user": {"id": "doc-3"}}),
               ("message", {"sender": "GAM|H"})]
    prev = GENESIS
    with store.engine.begin() as c:
        for kind, payload in entries:
            body = json.dumps(payload)
            h = chain_hash(prev, at, None, kind, body)
            c.execute(text("INSERT INTO audit (at, patient_id, kind, payload, prev_hash, hash) "
                           "VALUES (:at, NULL, :kind, :payload, :prev, :hash)"),
                      {"at": at, "kind": kind, "payload": body, "prev": prev, "hash": h})
            prev = h
        c.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})
    store.upgrade()
    with store.transaction() as uow:
        assert [e["user"] for e in uow.audit_entries()] == ["doc-1", "desk-2", "doc-3", None]
        assert [e["kind"] for e in uow.audit_entries(user="desk-2")] == ["consent"]
        assert uow.verify_audit() == (4, None, None)
    store.dispose()
