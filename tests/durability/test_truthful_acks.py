"""Every ACK tells the truth (issue 11, the store's side), through a real `pamgate serve` and a real socket,
on SQLite and on PostgreSQL where the store matters:

- each message of a group commit gets its own verdict, whatever fails and wherever (at the end of its
  savepoint, when its rows are written);
- a value longer than its column is refused (AE 102 naming the field), never cut;
- a message that can never succeed (a date the rules cannot use) gets a final AE 102, never 207;
- frames the listener answers AR by itself are journaled;
- a resend under an applied MSH-3/4/10 with other content is AA, journaled, logged and counted.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, inspect, text

from consent_store import tables
from consent_store.migrate import upgrade
from consent_store.store import Store
from mllp.frame import frame
from tests.builders import adt, zfa_2111
from tests.durability.support import Connection, msa, wait_until
from tests.serving import Server
from tests.stores import pg_database

V200 = "V" * 200


def err(ack: str) -> tuple[str, str]:
    """(ERR-2, ERR-3 code) of an ACK's first ERR."""
    for seg in ack.split("\r"):
        if seg.startswith("ERR|"):
            f = seg.split("|")
            return f[2], f[3].split("^")[0]
    raise AssertionError(f"no ERR in {ack!r}")


def admission(ipp: str, cid: str, visit: str = "V0001", consult: str = "IC", when: str = "20250106090000") -> str:
    """An A01 whose NDA (PID-18) stays short whatever the visit number."""
    m = adt("A01", ipp=ipp, visit=visit, control_id=cid, movement=f"M{cid[:6]}", zfa=zfa_2111("INO", consult, when))
    return m.replace(f"NDA{visit}^", "NDA1^")


def without_pid(cid: str) -> str:
    return "\r".join(s for s in adt("A01", ipp="900002", control_id=cid).split("\r") if not s.startswith("PID"))


def journal(url: str) -> dict:
    """MSH-10 (or the raw bytes when there is none) -> [(ACK code, error)] of the journal."""
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            out: dict = {}
            for cid, code, error, raw in c.execute(text("SELECT control_id, ack_code, error, raw FROM journal "
                                                        "ORDER BY id")):
                out.setdefault(cid if cid is not None else bytes(raw), []).append((code, error))
            return out
    finally:
        eng.dispose()


def consent_of(server: Server, ipp: str):
    status, body = server.http("GET", f"/v1/patients/HOSP-T/{ipp}/consent")
    assert status == 200, body
    return body


@pytest.fixture
def server(store_url, tmp_path):
    s = Server(tmp_path, store_url=store_url).start()
    s.url = store_url
    yield s
    s.stop()


@pytest.fixture
def sqlite_server(tmp_path):
    s = Server(tmp_path).start()
    s.url = f"sqlite:///{tmp_path / 'store.db'}"
    yield s
    s.stop()


# --- group commit: one verdict per message ----------------------------------------------------------------

def test_each_message_of_a_batch_gets_its_own_verdict(server):
    assert msa(server.send(admission("900001", "B0", visit=V200)))[0] == "AA"
    batch = [
        # 1: its visit number does not fit its column; cut, it would collide with the visit stored above
        admission("900001", "B1", visit=V200 + "X", consult="INC", when="20250106100000"),
        # 2: no PID
        without_pid("B2"),
        # 3: valid, another patient
        admission("900003", "B3"),
    ]
    c = Connection(server.mllp_port)
    try:
        c.sock.sendall(b"".join(frame(m.encode() + b"\r") for m in batch))   # one write: one commit
        acks = [c.read_ack() for _ in batch]
    finally:
        c.close()
    assert [msa(a) for a in acks] == [("AE", "B1"), ("AE", "B2"), ("AA", "B3")], acks
    assert err(acks[0]) == ("PV1^1^19^^1", "102"), acks[0]
    assert "PV1-19" in acks[0] and "at most 200" in acks[0]
    assert err(acks[1])[0].startswith("PID") and err(acks[1])[1] != "207", acks[1]
    # 1 was not applied: the consent stays the one given with B0; 3 was
    assert consent_of(server, "900001")["consent"]["code"] == "IC"
    assert [e["visit"] for e in consent_of(server, "900001")["episodes"]] == [V200]
    assert consent_of(server, "900003")["consent"]["code"] == "IC"
    # every message is journaled with the ACK it got, the refused ones too
    j = journal(server.url)
    assert [code for code, _ in j["B1"]] == ["AE"] and "PV1-19" in j["B1"][0][1]
    assert [code for code, _ in j["B2"]] == ["AE"]
    assert [code for code, _ in j["B3"]] == ["AA"]
    # and a clean message afterwards is answered for itself
    assert msa(server.send(admission("900004", "B4"))) == ("AA", "B4")


def test_a_value_longer_than_its_column_is_refused_never_cut(server):
    assert msa(server.send(admission("900011", "L0", visit=V200))) == ("AA", "L0")
    ack = server.send(admission("900011", "L1", visit=V200 + "Y", consult="INC", when="20250106100000"))
    assert msa(ack)[0] == "AE" and err(ack) == ("PV1^1^19^^1", "102"), ack
    ack = server.send(admission("1" * 201, "L2"))
    assert msa(ack)[0] == "AE" and err(ack) == ("PID^1^3^^1", "102"), ack
    ack = server.send(admission("900013", "X" * 201))
    assert msa(ack)[0] == "AE" and err(ack) == ("MSH^1^10", "102"), ack
    assert [e["visit"] for e in consent_of(server, "900011")["episodes"]] == [V200]
    assert consent_of(server, "900011")["consent"]["code"] == "IC"
    # the journal keeps the refused messages whole: MSH-10 too long for its column is left empty there
    j = journal(server.url)
    assert j["L1"][0][0] == "AE" and j["L2"][0][0] == "AE"
    refused = [rows for key, rows in j.items() if isinstance(key, bytes) and b"X" * 201 in key]
    assert refused and refused[0][0][0] == "AE" and "MSH-10" in refused[0][0][1]


def test_too_long_reads_the_limits_of_the_tables():
    assert tables.LIMITS["episode.visit"] == 200
    assert tables.too_long("episode.visit", V200) is None
    assert tables.too_long("episode.visit", V200 + "X") == 200
    assert tables.too_long("journal.event", "A" * 21) == 20
    assert tables.too_long("patient.state", "x" * 10_000) is None   # Text: no limit
    assert tables.unstorable("identifier.value", "a\x00b")
    with pytest.raises(tables.NotStorable):
        tables.storable("identifier.value", "1" * 201)


# --- 207 only for a store that failed ---------------------------------------------------------------------

DATES = [
    ("EVN^1^2", adt("A01", ipp="900021", control_id="D1").replace(
        "EVN||20250106090000||||20250106090000", "EVN||00010101000000||||00010101000000")),     # year 1
    ("ZFA^1^12", admission("900022", "D2").replace("|IC|20250106090000", "|IC|00010101000000")),
    ("ZFA^1^12", admission("900023", "D3").replace("|IC|20250106090000", "|IC|99991231235959")),  # + 6 months
    ("EVN^1^2", adt("A01", ipp="900024", control_id="D4").replace(                             # past 9999 in UTC
        "EVN||20250106090000||||20250106090000", "EVN||99991231235959-1400||||20250106090000")),
]


def test_a_date_the_rules_cannot_use_gets_a_final_AE_102(sqlite_server):
    for where, message in DATES:
        ack = sqlite_server.send(message)
        assert msa(ack)[0] == "AE" and err(ack) == (where, "102"), ack
        cid = message.split("\r")[0].split("|")[9]
        assert journal(sqlite_server.url)[cid][0][0] == "AE"
    assert "Traceback" not in sqlite_server.stderr()


# --- the journal keeps every message ----------------------------------------------------------------------

def test_a_frame_without_msh_is_answered_AR_and_journaled(server):
    c = Connection(server.mllp_port)
    try:
        c.sock.sendall(frame(b"PID|1||900031^^^HOSP-T^PI\r"))
        ack = c.read_ack()
    finally:
        c.close()
    assert msa(ack)[0] == "AR"
    rows = wait_until(lambda: journal(server.url).get(b"PID|1||900031^^^HOSP-T^PI\r"), 10,
                      what="the frame without MSH in the journal")
    assert rows[0][0] == "AR" and "MSH" in rows[0][1]


def test_a_resend_with_other_content_is_AA_journaled_logged_and_counted(server):
    first = admission("900041", "R1")
    assert msa(server.send(first)) == ("AA", "R1")
    assert msa(server.send(first)) == ("AA", "R1")                                   # a true duplicate
    other = admission("900042", "R1", consult="INC")                                 # the same MSH-10 reused
    assert msa(server.send(other)) == ("AA", "R1")
    assert msa(server.send(first)) == ("AA", "R1")
    rows = journal(server.url)["R1"]
    assert [code for code, _ in rows] == ["AA"] * 4
    assert rows[1][1] == "duplicate: already applied" and rows[3][1] == "duplicate: already applied"
    assert "different content" in rows[2][1]
    # applied once: the second patient does not exist
    assert server.http("GET", "/v1/patients/HOSP-T/900042/consent")[0] == 404
    metrics = server.http("GET", "/metrics")[1].decode()
    assert "pamgate_duplicates_conflicting_total 1.0" in metrics
    log = wait_until(lambda: [line for line in server.stderr().splitlines() if "duplicate_conflicting" in line], 5,
                     what="the warning")
    assert "warning" in log[0] and "900042" not in log[0]


# --- the migration that keeps the hash --------------------------------------------------------------------

def _migrate_from_0004(url: str) -> None:
    store = Store(url)
    try:
        upgrade(store.engine, "0004")
        with store.engine.begin() as c:
            c.execute(text("INSERT INTO applied_message (sender_application, sender_facility, control_id, "
                           "journal_id) VALUES ('GAM-T', 'HOSP-T', 'OLD1', 1)"))
        store.upgrade()
        assert "content_hash" in {c["name"] for c in inspect(store.engine).get_columns("applied_message")}
        with store.transaction() as uow:
            assert uow.applied_hash("GAM-T", "HOSP-T", "OLD1") == ""      # applied before: hash unknown
            assert uow.applied_hash("GAM-T", "HOSP-T", "NEW1") is None
            uow.journal(received_at=datetime.now(timezone.utc),
                        app="GAM-T", facility="HOSP-T", control_id="NEW1", event="A01", ack_code="AA", error=None,
                        raw=b"x", applied=True, content_hash="ab" * 32)
        with store.transaction() as uow:
            assert uow.applied_hash("GAM-T", "HOSP-T", "NEW1") == "ab" * 32
    finally:
        store.dispose()


def test_migration_0005_on_sqlite(tmp_path):
    _migrate_from_0004(f"sqlite:///{tmp_path / 'm.db'}")


def test_migration_0005_on_postgresql():
    with pg_database() as url:
        _migrate_from_0004(url)


def test_a_clean_message_after_a_hostile_batch_gets_its_own_verdict(server):
    hostile = [admission("900051", "H1").replace("EVN||20250106090000", "EVN||99999999999999+9999"),
               admission("1" * 300, "H2"), without_pid("H3"), admission("900054", "H4", visit="Z" * 250),
               admission("900055", "H5").replace("|IC|20250106090000", "|IC|00010101000000")]
    clean = admission("900056", "H6")
    c = Connection(server.mllp_port)
    try:
        c.sock.sendall(b"".join(frame(m.encode() + b"\r") for m in hostile + [clean]))
        acks = [c.read_ack() for _ in range(len(hostile) + 1)]
    finally:
        c.close()
    assert [msa(a) for a in acks] == [("AE", f"H{i}") for i in range(1, 6)] + [("AA", "H6")], acks
    assert all(err(a)[1] != "207" for a in acks[:-1]), acks
    assert consent_of(server, "900056")["consent"]["code"] == "IC"


# --- the group commit's contract, on each store -----------------------------------------------------------

def test_run_batch_gives_one_result_per_operation_whatever_fails_where(store):
    from engine.commit import run_batch

    def applied(cid):
        return lambda uow: uow.journal(received_at=datetime.now(timezone.utc), app="A", facility="F", control_id=cid,
                                       event="A01", ack_code="AA", error=None, raw=b"x", applied=True)

    assert run_batch(store, [(applied("K"), ())]) == ([(True, 1)], True)

    def broken(uow):
        raise ValueError("a bug in one operation")

    batch = [(applied("K"), ()),                                  # its applied row is refused as it is written
             (broken, ()),
             (applied("K2"), ())]
    results, committed = run_batch(store, batch)
    assert committed and len(results) == len(batch), results
    assert [ok for ok, _ in results] == [False, False, True]
    assert type(results[1][1]) is ValueError
    # an operation given its `refused` answer: that answer is its result, written in a savepoint of its own
    results, committed = run_batch(store, [(applied("K"), (), lambda uow, e: f"refused: {type(e).__name__}"),
                                           (applied("K3"), ())])
    assert committed and [r[1] for r in results][0] == "refused: IntegrityError" and results[1][0]
    with store.transaction() as uow:
        assert uow.applied_hash("A", "F", "K2") is not None and uow.applied_hash("A", "F", "K3") is not None
