"""Outbound through a real `pamgate serve`: ADT over MLLP and calls over HTTP in, a real HTTP receiver,
a real MLLP receiver and a file out. Receivers go down and come back; the server restarts."""
from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from consent_store.store import Store
from tests.builders import adt, zfa_2111
from tests.outbound.receivers import HttpReceiver, MllpReceiver, segment
from tests.serving import Server, ack_code

BASE = datetime.now() - timedelta(hours=3)     # recent: a consent lasts 6 months from its collection
FAST = {"backoff": 0.1, "max_backoff": 0.5, "timeout": 5, "poll_interval": 0.1, "max_attempts": 1000}
PARIS = ZoneInfo("Europe/Paris")            # the server's default time zone for HL7 timestamps
PRO = "801234567897"                          # PV1-7 of tests.builders.adt


def ts(minutes: int) -> str:
    return (BASE + timedelta(minutes=minutes)).strftime("%Y%m%d%H%M%S")


def wait_until(condition, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def counts(store) -> dict:
    with store.transaction() as uow:
        return uow.count_deliveries()


@pytest.fixture
def receivers():
    http, mllp = HttpReceiver().up(), MllpReceiver().up()
    yield http, mllp
    http.down()
    mllp.down()


def with_more_professionals(message: str) -> str:
    """The admitting doctor in PV1-17 and a ROL segment (ROL-4) besides the attending doctor of PV1-7."""
    segs = message.split("\r")
    i = next(n for n, s in enumerate(segs) if s.startswith("PV1|"))
    pv1 = segs[i].split("|")
    pv1[17] = "10000000001^DURAND^Marc^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS"
    segs[i] = "|".join(pv1)
    segs.insert(i + 1, "ROL|1|AD|ODRP^Prescripteur|10000000002^LEROY^Anne^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO"
                       "^D^^^RPPS")
    return "\r".join(segs)


def serve(tmp_path, http, mllp=None, **dest_overrides):
    dests = [{"name": "dpi-events", "type": "http", "url": http.url, **FAST, **dest_overrides},
             {"name": "journal", "type": "file", "path": str(tmp_path / "events.jsonl"),
              "events": ["dmp.access.verify", "dmp.access.authorize", "break_glass.used"], **FAST}]
    if mllp:
        dests.append({"name": "dpi-hl7", "type": "mllp", "endpoint": mllp.endpoint, "forward_adt": True, **FAST})
    return Server(tmp_path, config={"destinations": dests})


def test_receivers_down_and_back_and_a_restart_lose_nothing_and_keep_each_patients_order(tmp_path, receivers):
    http, mllp = receivers
    server = serve(tmp_path, http, mllp).start()
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    patients = [f"20000{i}" for i in range(4)]
    sent = defaultdict(list)                       # MSH-10 per patient, in the order sent

    def send(ipp, event, minute, zfa, **kw):
        m = adt(event, ipp=ipp, visit=f"V{ipp}", when=ts(minute), zfa=zfa, **kw)
        assert ack_code(server.send(m)) == "AA"
        sent[ipp].append(segment(m, "MSH")[9])

    def wave(start):
        for ipp in patients:
            # the first patient speaks PAM FR 2.10 (no consent field), the others 2.11.1
            old = {"version": "2.5^FRA^2.4", "profile": ""} if ipp == patients[0] else {}
            send(ipp, "A01" if start == 0 else "Z99", start, "ACTIF|" + ts(start) + "||N||N|N" if old else
                 zfa_2111("NA", "IC" if start % 20 == 0 else "INC", ts(start)),
                 **old, **({} if start == 0 else {"zbe_action": "UPDATE", "original": "A01"}))
            status, d = server.decide({"id": ipp, "authority": "HOSP-T"}, "consult", user=f"doc{start}")
            assert status == 200

    try:
        wave(0)
        server.http("POST", "/v1/consents", {"patient": {"id": patients[0], "authority": "HOSP-T"},
                                             "consult": "IC", "collected_at": (BASE + timedelta(minutes=5)).replace(tzinfo=PARIS).isoformat(),
                                             "visit": f"V{patients[0]}", "collected_by": {"id": "doc-desk"}})
        wave(10)
        wait_until(lambda: len(http.accepted) >= 4 and len(mllp.accepted) >= 4, what="first deliveries")
        http.down()
        mllp.down()
        wave(20)
        wave(30)
        time.sleep(1.0)
        with store.transaction() as uow:
            assert any(r["attempts"] > 0 for r in uow.deliveries(status="pending"))
        # a graceful restart while receivers are down: the outbox is in the store, not in memory
        server.stop()
        server = serve(tmp_path, http, mllp).start()       # the same store file
        wave(40)
        http.up()
        mllp.up()
        wait_until(lambda: counts(store).get("pending", 0) == 0 and counts(store).get("done", 0) > 0,
                   what=f"the outbox drained ({counts(store)})")
    finally:
        server.stop()
    assert counts(store) == {"done": counts(store)["done"]}
    with store.transaction() as uow:
        outbox = uow.outbox_events(limit=100000)
    expected = defaultdict(list)
    for e in outbox:
        if e["type"] != "adt.forward":
            expected[e["patient"]["id"]].append(e["id"])
    got = defaultdict(list)
    for e in http.accepted:
        got[e["patient"]["id"]].append(e["id"])
    ids = [e["id"] for e in http.accepted]
    assert len(ids) == len(set(ids))                                  # nothing twice under one id
    assert dict(got) == dict(expected)                                # nothing lost, each patient in order
    forwarded = defaultdict(list)
    for text in mllp.accepted:
        forwarded[segment(text, "PID")[3].split("^")[0]].append(segment(text, "MSH")[9])
    assert dict(forwarded) == dict(sent)                              # every ADT forwarded once, in order
    # the 2.10 sender's messages went out in the 2.11.1 layout, with the consent recorded through the API
    old = [t for t in mllp.accepted if segment(t, "PID")[3].startswith(patients[0])]
    assert all(segment(t, "MSH")[11] == "2.5^FRA^2.11" for t in old)
    assert segment(old[0], "ZFA")[9:12] == ["NA", "", "NA"]           # nothing collected yet: NA, not empty
    assert segment(old[1], "ZFA")[11:13] == ["IC", ts(5)]
    journal = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {e["type"] for e in journal} == {"dmp.access.verify"}
    assert len({e["id"] for e in journal}) == len(journal)


def test_conf16_verify_authorize_then_permitted_without_new_triggers(tmp_path, receivers):
    http, _ = receivers
    server = serve(tmp_path, http).start()
    patient = {"id": "300001", "authority": "HOSP-T"}
    pro = {"id": PRO, "profession": "10"}

    def events_of(type_):
        return [e for e in http.accepted if e["type"] == type_]

    try:
        # (a) consent given in the ADT: TD0.2 for each professional it names (PV1-7, PV1-17, ROL-4), with
        # no user action
        admission = with_more_professionals(adt("A01", ipp="300001", when=ts(0), zfa=zfa_2111("INO", "IC", ts(0))))
        assert ack_code(server.send(admission)) == "AA"
        wait_until(lambda: len(events_of("dmp.access.verify")) == 3, what="dmp.access.verify")
        assert [e["data"]["user"]["id"] for e in events_of("dmp.access.verify")] == [PRO, "10000000001",
                                                                                     "10000000002"]
        verify = events_of("dmp.access.verify")[0]
        assert verify["data"]["transaction"] == "TD0.2" and verify["data"]["user"]["id"] == PRO
        assert verify["data"]["cause"] == "consent.collected" and verify["patient"] == patient
        assert verify["source"]["msh10"] and verify["source"]["sender"] == "GAM-T|HOSP-T"
        # (c) the DMP connector reports NON_EXISTE: TD0.3 is asked for
        assert server.http("POST", "/v1/dmp/results", {"patient": patient, "user": pro, "transaction": "TD0.2",
                                                       "result": "NON_EXISTE"})[0] == 204
        wait_until(lambda: events_of("dmp.access.authorize"), what="dmp.access.authorize")
        (authorize,) = events_of("dmp.access.authorize")
        assert authorize["data"]["transaction"] == "TD0.3" and authorize["data"]["user"]["id"] == PRO
        assert authorize["data"]["cause"] == "NON_EXISTE"
        # TD0.3 done: the authorization is set, so the next consult needs neither TD0.2 nor TD0.3
        assert server.http("POST", "/v1/dmp/results", {"patient": patient, "user": pro, "transaction": "TD0.3",
                                                       "result": "OK"})[0] == 204
        status, d = server.decide(patient, "consult", user=PRO)
        assert status == 200 and d["decision"] == "permit" and d["triggers"] == []
        # (b) another user, never verified: the permitted consult asks for TD0.2 for that user
        status, other = server.decide(patient, "consult", user="doc-other")
        assert other["decision"] == "permit" and [t["type"] for t in other["triggers"]] == ["dmp.access.verify"]
        # (d) INTERDIT bars that user from then on
        assert server.http("POST", "/v1/dmp/results", {"patient": patient, "user": {"id": "doc-other"},
                                                       "transaction": "TD0.2", "result": "INTERDIT"})[0] == 204
        status, barred = server.decide(patient, "consult", user="doc-other")
        assert barred["decision"] == "deny" and barred["reasons"] == ["dmp.access_forbidden"]
        # break-glass: every permitted one is emitted, with its reason
        status, bg = server.decide(patient, "consult", user="doc-urg", mode="bris_de_glace",
                                   reason="patient inconscient, urgence vitale")
        assert bg["decision"] == "permit" and "break_glass.used" in [t["type"] for t in bg["triggers"]]
        store = Store(f"sqlite:///{tmp_path / 'store.db'}")
        wait_until(lambda: counts(store).get("pending", 0) == 0, what="the outbox drained")
        assert len(events_of("decision.made")) == 4
        (used,) = events_of("break_glass.used")
        assert used["data"]["reason"] == "patient inconscient, urgence vitale" and used["data"]["user"] == "doc-urg"
        assert len(events_of("dmp.access.authorize")) == 1                       # no new authorize
        assert [e["data"]["user"]["id"] for e in events_of("dmp.access.verify")] == [
            PRO, "10000000001", "10000000002", "doc-other", "doc-urg"]
        # every step is in the audit trail, with the events it caused
        status, audit = server.http("GET", "/v1/audit?authority=HOSP-T&id=300001")
        entries = audit["entries"]
        steps = [(e["kind"], [x["type"] for x in e["payload"].get("events", e["payload"].get("triggers", []))])
                 for e in entries]
        assert steps[:4] == [("message", ["consent.changed"] + ["dmp.access.verify"] * 3),
                             ("dmp.result", ["dmp.access.authorize"]), ("dmp.result", []), ("decision", [])]
        assert entries[1]["payload"]["result"] == "NON_EXISTE" and entries[2]["payload"]["result"] == "OK"
        assert steps[4] == ("decision", ["dmp.access.verify"])
        assert entries[6]["payload"]["reasons"] == ["dmp.access_forbidden"]
        assert steps[7] == ("decision", ["break_glass.used", "dmp.access.verify"])
        assert entries[7]["payload"]["request"]["reason"] == "patient inconscient, urgence vitale"
        # the metrics: deliveries by destination and result, and the outbox depth back to 0
        def metric(name):
            text = server.http("GET", "/metrics")[1].decode()
            return {m.group(1): float(m.group(2)) for m in re.finditer(rf"^{name}(\S*) (\S+)$", text, re.M)}
        wait_until(lambda: metric("pamgate_outbox_depth") == {"": 0.0}, timeout=10, what="outbox depth 0")
        assert metric("pamgate_deliveries_total") == {'{destination="dpi-events",result="done"}': 12.0,
                                                       '{destination="journal",result="done"}': 7.0}
    finally:
        server.stop()
    journal = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in journal] == ["dmp.access.verify"] * 3 + [
        "dmp.access.authorize", "dmp.access.verify", "break_glass.used", "dmp.access.verify"]


def test_a_bad_destination_stops_the_start_with_one_line(tmp_path):
    server = Server(tmp_path, config={"destinations": [{"name": "x", "type": "mllp", "endpoint": "h:1"}]})
    with pytest.raises(RuntimeError):
        server.start()
    err = server.stderr()
    assert err.count("\n") == 1 and "destinations.0: an mllp destination carries the forwarded ADT" in err
    assert "Traceback" not in err
