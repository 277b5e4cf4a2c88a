"""The HL7 sequence number protocol (MSH-13, v2.5 2.10.1) in the store and the pipeline, on SQLite and on
PostgreSQL: the number is checked and stored in the transaction that applies the message."""
from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from consent_store.store import Store
from engine.commit import run_batch
from engine.config import Config
from engine.assembly import build_pipeline
from tests.builders import adt, zfa_2111

NOW = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
APP, FAC = "GAM-S", "HOSP-S"


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(Config.model_validate(
        {"sequence_number_protocol": {"senders": [{"application": APP, "facility": FAC}]}}))


def numbered(message: str, number) -> str:
    """`message` with MSH-13 set."""
    msh, rest = message.split("\r", 1)
    fields = msh.split("|")
    fields[12] = str(number)
    return "|".join(fields) + "\r" + rest


def msg(number, cid, ipp=None, **kw) -> str:
    kw.setdefault("zfa", zfa_2111("INO", "IC", "20250106090000"))
    return numbered(adt("A31", ipp=ipp or f"S{cid}", app=APP, facility=FAC, control_id=cid, **kw), number)


def link_control(number, cid) -> str:
    """A message with no functional content: MSH alone, no event (2.10.1 f)."""
    return f"MSH|^~\\&|{APP}|{FAC}|DPI|{FAC}|20250106090000||^|{cid}|P|2.5|{number}"


def send(store, pipeline, *messages):
    """Each message in one group commit, as the apply process runs them: [(ACK code, MSA-4, errors)]."""
    works = [pipeline.prepare(m, m.encode(), NOW) for m in messages]
    results, committed = run_batch(store, [(w.run, w.keys()) for w in works])
    assert committed
    out = []
    for w, (ok, value) in zip(works, results):
        assert ok, value
        a = w.answered(value)
        out.append((a.code, a.expected_sequence, [(e[0], e[2], e[4]) for e in a.errors]))
    return out


def one(store, pipeline, message):
    return send(store, pipeline, message)[0]


def last(store):
    with store.transaction() as uow:
        return uow.last_sequence(APP, FAC)


def applied(store, ipp) -> int:
    """How many times messages of this patient were applied (its audit entries)."""
    with store.transaction() as uow:
        return uow.conn.execute(text(
            "SELECT count(*) FROM audit a JOIN identifier i ON i.patient_id = a.patient_id "
            "WHERE i.kind = 'PI' AND i.value = :v AND a.kind = 'message'"), {"v": ipp}).scalar()


# --- the store ----------------------------------------------------------------------------------------

def test_the_store_keeps_the_last_number_per_sender_and_reads_its_own_writes(store):
    with store.transaction() as uow:
        assert uow.last_sequence(APP, FAC) is None
        uow.set_sequence(APP, FAC, 3, NOW)
        assert uow.last_sequence(APP, FAC) == 3
        assert uow.last_sequence(APP, "OTHER") is None
    with store.transaction() as uow:
        assert uow.last_sequence(APP, FAC) == 3          # committed, read afresh
        uow.set_sequence(APP, FAC, 4, NOW)
        assert uow.conn.execute(text("SELECT last_accepted FROM sender_sequence")).scalar() == 4
    with store.transaction() as uow:
        uow.set_sequence(APP, FAC, None, NOW)               # resynchronised: the next number sets it
    with store.transaction() as uow:
        assert uow.last_sequence(APP, FAC) is None
        assert uow.conn.execute(text("SELECT count(*) FROM sender_sequence")).scalar() == 1


def test_a_rolled_back_savepoint_or_transaction_forgets_the_number(store):
    with store.transaction() as uow:
        uow.set_sequence(APP, FAC, 1, NOW)
        with pytest.raises(RuntimeError):
            with uow.savepoint():
                uow.set_sequence(APP, FAC, 2, NOW)
                raise RuntimeError("this operation fails")
        assert uow.last_sequence(APP, FAC) == 1
    with pytest.raises(RuntimeError):
        with store.transaction() as uow:
            uow.set_sequence(APP, FAC, 2, NOW)
            raise RuntimeError("crash before the commit")
    assert last(store) == 1


# --- the protocol, case by case ------------------------------------------------------------------------

def test_the_protocol_case_by_case(store, pipeline):
    # first start of the link: no number stored yet, so MSA-4 is -1 (the next number accepted sets it)
    assert one(store, pipeline, link_control(0, "start-1")) == ("AA", -1, [])
    assert one(store, pipeline, msg(1, "m1")) == ("AA", 2, [])
    assert one(store, pipeline, msg(2, "m2")) == ("AA", 3, [])
    assert one(store, pipeline, msg(3, "m3")) == ("AA", 4, [])
    assert last(store) == 3 and applied(store, "Sm3") == 1
    # the link restarts: MSA-4 is one greater than the last number accepted
    assert one(store, pipeline, link_control(0, "start-2")) == ("AA", 4, [])
    # a gap: refused, nothing applied, the number unchanged
    assert one(store, pipeline, msg(5, "m5")) == ("AR", 4, [("MSH", 13, 204)])
    assert applied(store, "Sm5") == 0 and last(store) == 3
    # a resend of 3 (the message applied before): AA, applied once
    assert one(store, pipeline, msg(3, "m3")) == ("AA", 4, [])
    assert applied(store, "Sm3") == 1
    # 3 again, but for another message: that number was taken
    assert one(store, pipeline, msg(3, "m3-bis")) == ("AR", 4, [("MSH", 13, 205)])
    assert applied(store, "Sm3-bis") == 0
    assert one(store, pipeline, msg(4, "m4")) == ("AA", 5, [])
    # -1 resynchronises: MSA-4 -1, and the next positive number is taken as it comes
    assert one(store, pipeline, link_control(-1, "resync")) == ("AA", -1, [])
    assert last(store) is None
    assert one(store, pipeline, msg(10, "m10")) == ("AA", 11, [])
    assert last(store) == 10
    # MSH-13 empty or not a number, from a sender that numbers its messages
    assert one(store, pipeline, msg("", "m-empty")) == ("AR", 11, [("MSH", 13, 101)])
    assert one(store, pipeline, msg("x1", "m-bad")) == ("AR", 11, [("MSH", 13, 102)])
    assert one(store, pipeline, msg(-2, "m-neg")) == ("AR", 11, [("MSH", 13, 102)])
    # a message refused for its content does not use up its number: fixed, it is sent again with it
    broken = msg(11, "m11-broken", zfa=None).replace("PID|1||S", "PID|1||")
    broken = broken.replace("^PI||", "^XX||")
    code, expected, errors = one(store, pipeline, broken)
    assert (code, expected) == ("AE", 11) and errors
    assert one(store, pipeline, msg(11, "m11")) == ("AA", 12, [])
    assert last(store) == 11
    # every message is journaled with the ACK code it got
    with store.transaction() as uow:
        codes = dict(uow.conn.execute(text("SELECT control_id, ack_code FROM journal WHERE control_id IN "
                                           "('start-1', 'm5', 'm3-bis', 'resync')")).all())
    assert codes == {"start-1": "AA", "m5": "AR", "m3-bis": "AR", "resync": "AA"}


def test_a_link_start_with_content_applies_nothing(store, pipeline):
    assert one(store, pipeline, msg(1, "c1")) == ("AA", 2, [])
    # MSH-13 = 0 on a full message: it has no functional content by definition
    assert one(store, pipeline, msg(0, "c0")) == ("AA", 2, [])
    assert applied(store, "Sc0") == 0


def test_messages_of_one_sender_in_one_batch_see_each_other(store, pipeline):
    assert send(store, pipeline, msg(1, "b1"), msg(2, "b2"), msg(2, "b2"), msg(4, "b4"), msg(3, "b3")) == [
        ("AA", 2, []), ("AA", 3, []), ("AA", 3, []), ("AR", 3, [("MSH", 13, 204)]), ("AA", 4, [])]
    assert last(store) == 3 and applied(store, "Sb2") == 1 and applied(store, "Sb4") == 0


def test_an_operation_failing_in_the_batch_leaves_the_numbers_right(store, pipeline):
    """A failing operation makes the batch run again, each operation in its own savepoint: the numbers
    stored by the others still hold, and read right after the rolled back savepoint."""
    works = [pipeline.prepare(m, m.encode(), NOW) for m in (msg(1, "f1"), msg(2, "f2"))]

    def failing(uow):
        uow.set_sequence(APP, FAC, 99, NOW)
        raise ValueError("a bad operation")

    results, committed = run_batch(store, [(works[0].run, works[0].keys()), (failing, ()),
                                           (works[1].run, works[1].keys())])
    assert committed and not results[1][0]
    assert [(r[1].code, r[1].expected_sequence) for r in (results[0], results[2])] == [("AA", 2), ("AA", 3)]
    assert last(store) == 2


def test_other_senders_keep_msh13_ignored_and_run_no_statement_more(store, pipeline, store_url):
    other = numbered(adt("A31", ipp="O1", app="OTHER", facility=FAC, control_id="o1",
                         zfa=zfa_2111("INO", "IC", "20250106090000")), 7)
    work = pipeline.prepare(other, other.encode(), NOW)
    assert "sequence" not in work.header and not any(k.startswith("SEQ|") for k in work.keys())
    assert one(store, pipeline, other) == ("AA", None, [])
    assert one(store, pipeline, numbered(other.replace("|o1|", "|o2|"), 1)) == ("AA", None, [])
    sequenced = pipeline.prepare(msg(1, "s1"), b"", NOW)
    assert sequenced.keys()[-1] == f"SEQ|{APP}|{FAC}"
    if not store_url.startswith("sqlite"):
        return
    # the statements of a message from a sender that does not use the protocol are those of a pipeline
    # where no sender does
    plain = build_pipeline(Config())

    def statements(pipe, message):
        seen = []
        with store.transaction() as uow:
            uow._conn.connection.dbapi_connection.set_trace_callback(seen.append)
            try:
                work = pipe.prepare(message, message.encode(), NOW)
                uow.lock_keys(work.keys())
                assert work.run(uow).code == "AA"
                uow.flush()
            finally:
                uow._conn.connection.dbapi_connection.set_trace_callback(None)
        return seen

    with_protocol = statements(pipeline, other.replace("|o1|", "|o3|").replace("O1^", "O3^"))
    without = statements(plain, other.replace("|o1|", "|o4|").replace("O1^", "O4^"))
    assert len(with_protocol) == len(without) > 5 and not any("sender_sequence" in s for s in with_protocol)


def test_two_instances_on_one_sender_take_its_messages_one_after_the_other(store_url, pipeline):
    """Two stores (two instances) race on one sender: each gets its own message for every number, in order.
    Taken one after the other (the sender's key is locked before the batch runs), exactly one message per
    number is accepted (AA) and the other finds the number taken (AR 205): never both applied, none lost."""
    stores = [Store(store_url), Store(store_url)]
    streams = [[msg(k, f"{side}{k}", ipp=f"{side}{k}") for k in range(1, 41)] for side in "AB"]
    answers, failures = [[], []], []
    start = threading.Barrier(2)

    def instance(i):
        try:
            start.wait()
            for m in streams[i]:
                answers[i].append(one(stores[i], pipeline, m))
        except Exception as e:  # noqa: BLE001 — reported below
            failures.append(repr(e))

    threads = [threading.Thread(target=instance, args=(i,)) for i in (0, 1)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures, failures
        for k in range(40):
            pair = sorted((answers[0][k][0], answers[1][k][0]))
            assert pair == ["AA", "AR"], (k + 1, answers[0][k], answers[1][k])
            assert applied(stores[0], f"A{k + 1}") + applied(stores[0], f"B{k + 1}") == 1
        assert last(stores[0]) == 40
    finally:
        for s in stores:
            s.dispose()
