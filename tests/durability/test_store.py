"""The store on SQLite and PostgreSQL: the history rows with their provenance,
journal retention, identifiers after A47, and the lock order between instances."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from consent_store.migrate import upgrade
from consent_store.store import Store
from engine.config import Config
from engine.assembly import build_pipeline
from tests.builders import adt, zfa_2111
from tests.stores import pg_database

NOW = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
H = "HOSP-S"


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(Config())


def apply(store, pipeline, *messages):
    outcomes = []
    with store.transaction() as uow:
        for m in messages:
            work = pipeline.prepare(m, m.encode(), NOW)
            uow.lock_keys(work.keys())
            with uow.savepoint():
                outcomes.append(work.run(uow))
    assert [o.code for o in outcomes] == ["AA"] * len(messages), [o.errors for o in outcomes]
    return outcomes


def test_projections_carry_facts_with_provenance_and_follow_each_change(store, pipeline):
    apply(store, pipeline,
          adt("A01", ipp="1", authority=H, facility=H, visit="V1", when="20250106090000", control_id="c1",
              zfa=zfa_2111("INO", "IC", "20250106090000")),
          adt("A31", ipp="1", authority=H, facility=H, when="20250106100000", control_id="c2",
              zfa=zfa_2111("IO", "INC", "20250106100000")))
    with store.transaction() as uow:
        facts = uow.conn.execute(text(
            "SELECT item, value, code, visit, source_msh10, source_sender, source_mapping FROM consent_fact "
            "ORDER BY seq, item")).all()
        episodes = uow.conn.execute(text("SELECT visit, uf, cancelled FROM episode")).all()
        moves = uow.conn.execute(text("SELECT visit, movement_id, event, action FROM movement")).all()
    assert [tuple(f) for f in facts] == [
        ("consult", "consent", "IC", "V1", "c1", "GAM-T|HOSP-S", "pamfr-2.11.1"),
        ("dmp_status", "ACTIF", None, "V1", "c1", "GAM-T|HOSP-S", "pamfr-2.11.1"),
        ("feed", "no_opposition", "INO", "V1", "c1", "GAM-T|HOSP-S", "pamfr-2.11.1"),
        ("consult", "refused", "INC", None, "c2", "GAM-T|HOSP-S", "pamfr-2.11.1"),
        ("dmp_status", "ACTIF", None, None, "c2", "GAM-T|HOSP-S", "pamfr-2.11.1"),
        ("feed", "opposed", "IO", None, "c2", "GAM-T|HOSP-S", "pamfr-2.11.1"),
    ]
    assert [tuple(e) for e in episodes] == [("V1", "URG1", False)]
    assert [tuple(m) for m in moves] == [("V1", "M1", "A01", "INSERT")]

    # A11 cancels the admission: the episode and the consent collected on it are marked, not removed
    apply(store, pipeline, adt("A11", ipp="1", authority=H, facility=H, visit="V1", when="20250106110000",
                               control_id="c3", zbe_action="CANCEL", original="A01"))
    with store.transaction() as uow:
        assert uow.conn.execute(text("SELECT cancelled FROM episode")).scalar() in (True, 1)
        assert uow.conn.execute(text(
            "SELECT cancelled FROM consent_fact WHERE source_msh10 = 'c1' AND item = 'consult'")).scalar() in (True, 1)


def test_api_consent_keeps_its_collector(store, pipeline):
    with store.transaction() as uow:
        pipeline.record_consent(uow, {"id": "7", "authority": H}, {"consult": "consent", "consult.code": "IC"},
                                None, NOW, {"id": "rpps-9", "name": "Dr X"}, NOW)
    with store.transaction() as uow:
        row = uow.conn.execute(text("SELECT item, code, source_mapping, collected_by FROM consent_fact")).one()
    assert row[:3] == ("consult", "IC", "api")
    assert json.loads(row[3]) == {"id": "rpps-9", "name": "Dr X"}


def test_merge_moves_the_projection_to_the_survivor(store, pipeline):
    apply(store, pipeline,
          adt("A01", ipp="10", authority=H, facility=H, visit="V10", control_id="m1",
              zfa=zfa_2111("NA", "IC")),
          adt("A01", ipp="11", authority=H, facility=H, visit="V11", control_id="m2",
              zfa=zfa_2111("IO", "NA")),
          adt("A40", ipp="10", authority=H, facility=H, prior_ipp="11", control_id="m3"))
    with store.transaction() as uow:
        survivor = uow.find_patient("PI", H, "10")
        assert uow.find_patient("PI", H, "11") == survivor
        owners = {r[0] for r in uow.conn.execute(text("SELECT patient_id FROM consent_fact"))}
        visits = {r[0] for r in uow.conn.execute(text("SELECT visit FROM episode WHERE patient_id = :p"),
                                                 {"p": survivor})}
        msh10s = {r[0] for r in uow.conn.execute(text("SELECT source_msh10 FROM consent_fact"))}
    assert owners == {survivor} and visits == {"V10", "V11"} and msh10s == {"m1", "m2"}


def test_migration_backfills_a_store_written_before_it(store_url):
    """A store at 0002 with a patient in it: 0003 seeds the chain's head, 0005 derives that patient's rows."""
    store = Store(store_url)
    try:
        with store.engine.begin() as c:
            for t in ("consent_fact", "movement", "episode", "sender_sequence", "dmp_result",
                      "break_glass_request"):   # the tables after 0002
                c.execute(text(f"DROP TABLE {t}"))
            c.execute(text("DELETE FROM audit_head"))
            c.execute(text("ALTER TABLE applied_message DROP COLUMN content_hash"))   # 0005
            for ix in ("ix_journal_control_id", "ix_journal_patient_time", "ix_journal_sender_time",
                       "ix_journal_ack_time"):   # 0007_console
                c.execute(text(f"DROP INDEX {ix}"))
            c.execute(text("DROP INDEX ix_audit_user"))                                 # 0009
            c.execute(text("DROP INDEX ix_audit_at"))
            c.execute(text("ALTER TABLE audit DROP COLUMN user_id"))
            for index in ("ix_journal_patient_ipp", "ix_journal_visit"):   # 0008
                c.execute(text(f"DROP INDEX {index}"))
            for column in ("ack", "patient_ipp", "visit"):
                c.execute(text(f"ALTER TABLE journal DROP COLUMN {column}"))
            c.execute(text("DROP INDEX ix_audit_kind"))                                 # 0010
            c.execute(text("ALTER TABLE patient DROP COLUMN longest_visit"))            # 0011_visits_at
            c.execute(text("UPDATE alembic_version SET version_num = '0002'"))
        doc = {"identifiers": [["PI", H, "5"]], "next_seq": 2, "break_glass": [], "dmp_results": [],
               "facts": [{"item": "consult", "value": "consent", "collected_at": NOW.isoformat(), "seq": 1,
                          "visit": "V5", "code": "IC", "source": {"msh10": "old-1", "sender": "GAM|H"},
                          "cancelled": False}],
               "visits": [{"number": "V5", "nda": None, "patient_class": "I", "uf": "U", "cancelled": False,
                           "admitted_at": NOW.isoformat(), "discharged_at": None, "movements": []}]}
        with store.engine.begin() as c:
            c.execute(text("INSERT INTO patient (state, version, updated_at) VALUES (:s, 1, :t)"),
                      {"s": json.dumps(doc), "t": NOW})
        upgrade(store.engine)
        with store.transaction() as uow:
            assert uow.conn.execute(text("SELECT source_msh10, code FROM consent_fact")).one() == ("old-1", "IC")
            assert uow.conn.execute(text("SELECT visit FROM episode")).scalar() == "V5"
            assert uow.conn.execute(text("SELECT hash FROM audit_head WHERE id = 1")).scalar() == "0" * 64
            assert uow.conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head(store)
    finally:
        store.dispose()


def _head(store) -> str:
    from alembic.script import ScriptDirectory

    from consent_store.migrate import config
    return ScriptDirectory.from_config(config(store.engine)).get_current_head()


def test_journal_pruning_keeps_duplicates_known_and_the_audit_whole(store):
    old, recent = NOW - timedelta(days=100), NOW - timedelta(days=1)
    with store.transaction() as uow:
        for i in range(7):
            uow.journal(received_at=old + timedelta(minutes=i), app="A", facility="F", control_id=f"old{i}",
                        event="A01", ack_code="AA", error=None, raw=b"x", applied=True)
            uow.audit(at=old, patient_id=None, kind="message", payload={"n": i})
        uow.journal(received_at=recent, app="A", facility="F", control_id="new", event="A01", ack_code="AA",
                    error=None, raw=b"y", applied=True)
    with store.transaction() as uow:
        assert uow.prune_journal(NOW - timedelta(days=90), limit=5) == 5      # oldest first, in chunks
    with store.transaction() as uow:
        assert uow.prune_journal(NOW - timedelta(days=90), limit=5) == 2
        assert uow.prune_journal(NOW - timedelta(days=90), limit=5) == 0
    with store.transaction() as uow:
        left = [r[0] for r in uow.conn.execute(text("SELECT control_id FROM journal"))]
        assert left == ["new"]
        assert all(uow.already_applied("A", "F", f"old{i}") for i in range(7))
        assert uow.verify_audit() == (7, None, None)


def test_a_deleted_ins_leads_nowhere_but_an_old_ipp_still_does(store):
    with store.transaction() as uow:
        p = uow.create_patient({}, NOW)
        uow.set_identifiers(p, [("PI", H, "1"), ("INS", "1.2.250.1.213.1.4.10", "255")])
        uow.set_identifiers(p, [("PI", H, "2")])           # A47: new IPP, INS deleted with ""
    with store.transaction() as uow:
        assert uow.find_patient("INS", "1.2.250.1.213.1.4.10", "255") is None
        assert uow.find_patient("PI", H, "1") == p
        assert uow.find_patient("PI", H, "2") == p
        uow.set_identifiers(p, [("PI", H, "2"), ("INS", "1.2.250.1.213.1.4.10", "255")])   # given back
    with store.transaction() as uow:
        assert uow.find_patient("INS", "1.2.250.1.213.1.4.10", "255") == p


@pytest.fixture
def pg_url():
    with pg_database() as url:
        Store(url).upgrade()
        yield url


def test_two_instances_reaching_one_patient_by_different_identifiers_do_not_deadlock(pg_url):
    """PostgreSQL (SQLite has one writer). Instance A locks the patient by its IPP and holds the patient's
    row; instance B comes by the INS, writes an audit entry, then needs the same row. With the audit head
    taken after the advisory locks and before any row, B waits for A instead of holding the head that A
    needs: no deadlock."""
    a_store, b_store = Store(pg_url), Store(pg_url)
    with a_store.transaction() as uow:
        pid = uow.create_patient({}, NOW)
    a_holds_row, b_audited, errors = threading.Event(), threading.Event(), []

    def instance_a():
        try:
            with a_store.transaction() as uow:
                uow.conn.execute(text("SET LOCAL deadlock_timeout = '200ms'"))
                uow.lock_keys(["PI|H|1"])
                uow.patient_header(pid)
                a_holds_row.set()
                b_audited.wait(1.5)      # with the right lock order, B cannot get there: it waits for A
                uow.audit(at=NOW, patient_id=pid, kind="message", payload={"by": "a"})
        except Exception as e:  # noqa: BLE001
            errors.append(("a", type(e).__name__))

    def instance_b():
        try:
            a_holds_row.wait(10)
            with b_store.transaction() as uow:
                uow.conn.execute(text("SET LOCAL deadlock_timeout = '200ms'"))
                uow.lock_keys(["INS|O|9"])
                uow.audit(at=NOW, patient_id=pid, kind="decision", payload={"by": "b"})
                b_audited.set()
                uow.patient_header(pid)
        except Exception as e:  # noqa: BLE001
            errors.append(("b", type(e).__name__))

    threads = [threading.Thread(target=instance_a), threading.Thread(target=instance_b)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        with a_store.transaction() as uow:
            assert uow.verify_audit() == (2, None, None)
    finally:
        a_store.dispose()
        b_store.dispose()


def test_pruning_removes_delivered_events_only(store):
    old, recent = NOW - timedelta(days=100), NOW - timedelta(days=1)

    def env(i):
        return {"id": f"ev{i}", "type": "consent.changed", "patient_key": "PI|H|1", "data": {"n": i}}
    with store.transaction() as uow:
        uow.enqueue([env(i) for i in range(4)], {"dest": {"*"}}, old)
        uow.enqueue([env(9)], {"dest": {"*"}}, recent)
    with store.transaction() as uow:
        # ev0, ev1 delivered; ev2 dead; ev3 still pending
        uow.conn.execute(text("UPDATE delivery SET status = 'done' WHERE event_seq IN "
                              "(SELECT seq FROM outbox WHERE event_id IN ('ev0', 'ev1'))"))
        uow.conn.execute(text("UPDATE delivery SET status = 'dead' WHERE event_seq IN "
                              "(SELECT seq FROM outbox WHERE event_id = 'ev2')"))
    with store.transaction() as uow:
        uow.prune_journal(NOW - timedelta(days=90), limit=100)
    with store.transaction() as uow:
        left = sorted(r[0] for r in uow.conn.execute(text("SELECT event_id FROM outbox")))
        assert left == ["ev2", "ev3", "ev9"]
        assert uow.conn.execute(text("SELECT count(*) FROM delivery")).scalar() == 3
