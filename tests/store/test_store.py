"""The store on SQLite and on PostgreSQL: migrations, duplicates, the audit chain, merges."""
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from consent_store.store import Store
from tests.stores import pg_database

NOW = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'store.db'}")
        s.upgrade()
        yield s
        s.dispose()
    else:
        with pg_database() as url:
            s = Store(url)
            s.upgrade()
            yield s
            s.dispose()


def test_upgrade_is_idempotent(store):
    store.upgrade()
    store.upgrade()
    with store.transaction() as uow:
        assert uow.conn.execute(text("SELECT count(*) FROM patient")).scalar() == 0


def test_duplicates_are_known_after_commit(store):
    with store.transaction() as uow:
        uow.journal(received_at=NOW, app="A", facility="F", control_id="1", event="A01", ack_code="AA",
                    error=None, raw=b"x", applied=True)
    with store.transaction() as uow:
        assert uow.already_applied("A", "F", "1")
        assert not uow.already_applied("A", "F", "2")
        assert not uow.already_applied("B", "F", "1")


def test_a_duplicate_in_the_same_transaction_is_known_and_keys_are_unique(store):
    # on SQLite the journal, applied and outbox rows wait for the flush: they must still be seen, and keyed once
    with store.transaction() as uow:
        ids = [uow.journal(received_at=NOW, app="A", facility="F", control_id=str(i), event="A01", ack_code="AA",
                           error=None, raw=b"x", applied=True) for i in range(3)]
        assert uow.already_applied("A", "F", "1") and not uow.already_applied("A", "F", "9")
        uow.enqueue([{"id": f"e{i}", "type": "consent.changed", "patient_key": "PI||1"} for i in range(3)],
                    {"d": ["*"]}, NOW)
    with store.transaction() as uow:
        ids.append(uow.journal(received_at=NOW, app="A", facility="F", control_id="3", event="A01",
                               ack_code="AA", error=None, raw=b"x", applied=True))
        assert len(set(ids)) == 4
        assert uow.conn.execute(text("SELECT count(*) FROM applied_message")).scalar() == 4
        assert uow.conn.execute(text("SELECT count(*) FROM journal")).scalar() == 4
        assert uow.conn.execute(text("SELECT count(DISTINCT event_seq) FROM delivery")).scalar() == 3


def test_audit_chain_verifies_and_a_tampered_row_is_found(store):
    with store.transaction() as uow:
        for i in range(5):
            uow.audit(at=NOW, patient_id=None, kind="decision", payload={"n": i})
    with store.transaction() as uow:
        assert uow.verify_audit() == (5, None, None)
        uow.conn.execute(text("UPDATE audit SET payload = :p WHERE seq = 3"), {"p": '{"n":99}'})
    with store.transaction() as uow:
        n, broken, why = uow.verify_audit()
        assert broken == 3 and "content" in why


def test_identifiers_follow_a_merge(store):
    with store.transaction() as uow:
        a = uow.create_patient({}, NOW)
        b = uow.create_patient({}, NOW)
        uow.set_identifiers(a, [("PI", "H", "1")])
        uow.set_identifiers(b, [("PI", "H", "2")])
        uow.audit(at=NOW, patient_id=b, kind="message", payload={})
        uow.merge_patient(b, a, 1, NOW)
    with store.transaction() as uow:
        assert uow.find_patient("PI", "H", "2") == a
        assert uow.patient_ids_merged_into(a) == [b]
        assert len(uow.audit_entries([a] + uow.patient_ids_merged_into(a))) == 1


def test_rollback_leaves_nothing(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as uow:
            uow.create_patient({}, NOW)
            raise RuntimeError("crash before commit")
    with store.transaction() as uow:
        assert uow.conn.execute(text("SELECT count(*) FROM patient")).scalar() == 0
