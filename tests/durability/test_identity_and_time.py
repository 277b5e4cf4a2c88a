"""End to end over MLLP and HTTP: merges (A40) and identifier changes (A47) keep every fact and audit entry
reachable from the surviving identity, and `?at=` reads the state as it was."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest

from tests.builders import adt, zfa_2111
from tests.serving import Server, ack_code

H = "HOSP-I"
OID = "1.2.250.1.213.1.4.10"
BASE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=5)   # consents last 6 months


def ts(minutes: int) -> str:
    """An HL7 time with its offset, so that the test does not depend on the configured zone."""
    return (BASE + timedelta(minutes=minutes)).strftime("%Y%m%d%H%M%S+0000")


def iso(minutes: int) -> str:
    return quote((BASE + timedelta(minutes=minutes)).isoformat())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("identity")).start()
    yield s
    s.stop()


def send(server, message):
    ack = server.send(message)
    assert ack_code(ack) == "AA", ack


def consent(server, ipp, at=None):
    status, body = server.http("GET", f"/v1/patients/{H}/{ipp}/consent" + (f"?at={at}" if at else ""))
    assert status == 200, body
    return body


def audit(server, ipp):
    status, body = server.http("GET", f"/v1/audit?authority={H}&id={ipp}")
    assert status == 200, body
    return body["entries"]


def test_point_in_time_reads_answer_the_state_as_it_was(server):
    p = {"id": "500", "authority": H}
    send(server, adt("A01", ipp="500", authority=H, facility=H, visit="V500", when=ts(0), control_id="t-1",
                     zfa=zfa_2111("INO", "IC", ts(0))))
    send(server, adt("A31", ipp="500", authority=H, facility=H, when=ts(60), control_id="t-2",
                     zfa=zfa_2111("NA", "INC", ts(60))))
    send(server, adt("A31", ipp="500", authority=H, facility=H, when=ts(120), control_id="t-3",
                     zfa=zfa_2111("IO", "NA", ts(120))))
    send(server, adt("A01", ipp="500", authority=H, facility=H, visit="V501", when=ts(180), control_id="t-4",
                     movement="M2", zfa=zfa_2111("NA", "IC", ts(180))))

    before = consent(server, "500", iso(-10))
    assert before["consent"] is None and before["episodes"] == [] and before["history"] == []
    assert before["gate"]["consult"] == "deny" and before["gate"]["reasons"] == ["consent.not_collected"]

    first = consent(server, "500", iso(30))
    assert first["consent"]["code"] == "IC" and first["consent"]["source"]["msh10"] == "t-1"
    assert first["gate"]["consult"] == "permit" and first["gate"]["feed"] == "permit"
    assert [e["visit"] for e in first["episodes"]] == ["V500"] and first["current_episode"] == "V500"

    refused = consent(server, "500", iso(90))
    assert refused["consent"]["code"] == "INC" and refused["gate"]["reasons"] == ["consent.refused"]
    assert refused["feed_opposition"]["code"] == "INO"

    opposed = consent(server, "500", iso(150))
    assert opposed["feed_opposition"]["code"] == "IO" and opposed["gate"]["feed"] == "deny"
    assert [h["source"]["msh10"] for h in opposed["history"] if h["item"] in ("consult", "feed")] == [
        "t-1", "t-1", "t-2", "t-3"]

    now = consent(server, "500")
    assert now["consent"]["code"] == "IC" and now["current_episode"] == "V501"
    assert {e["visit"] for e in now["episodes"]} == {"V500", "V501"}

    # a decision asked at a past instant answers as it would have then
    status, d = server.decide(p, "consult", at=(BASE + timedelta(minutes=30)).isoformat())
    assert status == 200 and d["decision"] == "permit"
    status, d = server.decide(p, "consult", at=(BASE + timedelta(minutes=90)).isoformat())
    assert status == 200 and (d["decision"], d["reasons"]) == ("deny", ["consent.refused"])


def test_a40_merge_keeps_the_absorbed_patients_history_and_audit(server):
    send(server, adt("A01", ipp="600", authority=H, facility=H, visit="V600", when=ts(0), control_id="s-1",
                     zfa=zfa_2111("INO", "IC", ts(0))))
    send(server, adt("A01", ipp="601", authority=H, facility=H, visit="V601", when=ts(10), control_id="a-1",
                     zfa=zfa_2111("IO", "NA", ts(10))))
    send(server, adt("A31", ipp="601", authority=H, facility=H, when=ts(20), control_id="a-2",
                     zfa=zfa_2111("NA", "INC", ts(20))))
    status, d = server.decide({"id": "601", "authority": H}, "consult")
    assert status == 200 and d["decision"] == "deny"
    absorbed_audit = audit(server, "601")
    assert len(absorbed_audit) == 3

    send(server, adt("A40", ipp="600", authority=H, facility=H, prior_ipp="601", when=ts(30), control_id="m-1"))

    survivor = consent(server, "600")
    sources = {h["source"]["msh10"] for h in survivor["history"]}
    assert {"s-1", "a-1", "a-2"} <= sources
    assert {e["visit"] for e in survivor["episodes"]} == {"V600", "V601"}
    # the latest collection wins across both records: the absorbed patient's refusal and opposition
    assert survivor["consent"]["code"] == "INC" and survivor["feed_opposition"]["code"] == "IO"

    entries = audit(server, "600")
    hashes = {e["hash"] for e in entries}
    assert {e["hash"] for e in absorbed_audit} <= hashes            # every entry of the absorbed patient
    assert [e["payload"].get("msh10") for e in entries if e["kind"] == "message"] == ["s-1", "a-1", "a-2", "m-1"]
    assert any(e["kind"] == "decision" for e in entries)

    # the absorbed IPP now leads to the survivor: same state, same decisions
    via_absorbed = consent(server, "601")
    assert via_absorbed["history"] == survivor["history"]
    assert {(i["kind"], i["value"]) for i in via_absorbed["identities"]} >= {("PI", "600"), ("PI", "601")}
    assert audit(server, "601") == entries
    s1, d1 = server.decide({"id": "601", "authority": H}, "feed")
    s2, d2 = server.decide({"id": "600", "authority": H}, "feed")
    assert (d1["decision"], d1["reasons"]) == (d2["decision"], d2["reasons"]) == ("deny", ["feed.opposed"])


def test_a47_ipp_change_keeps_the_old_ipps_facts(server):
    send(server, adt("A01", ipp="700", authority=H, facility=H, visit="V700", when=ts(0), control_id="o-1",
                     zfa=zfa_2111("INO", "IC", ts(0))))
    send(server, adt("A47", ipp="701", authority=H, facility=H, prior_ipp="700", when=ts(5), control_id="o-2"))

    new = consent(server, "701")
    assert new["consent"]["code"] == "IC" and new["consent"]["source"]["msh10"] == "o-1"
    assert new["gate"]["consult"] == "permit"
    assert ("PI", "701", True) in {(i["kind"], i["value"], i["active"]) for i in new["identities"]}
    assert [e["payload"].get("msh10") for e in audit(server, "701")] == ["o-1", "o-2"]
    # the old IPP still leads to the same patient, so late messages and requests under it are not lost
    assert consent(server, "700")["history"] == new["history"]
    status, d = server.decide({"id": "701", "authority": H}, "consult")
    assert status == 200 and d["decision"] == "permit"


def test_a47_deletes_an_ins_with_an_explicit_null(server):
    ins = "2800175123456"
    send(server, adt("A01", ipp="800", authority=H, facility=H, visit="V800", when=ts(0), control_id="i-1",
                     ins=ins, zfa=zfa_2111("INO", "IC", ts(0))))
    by_ins = {"ins": ins, "oid": OID}
    status, d = server.decide(by_ins, "consult")
    assert status == 200 and d["decision"] == "permit"

    deletion = adt("A47", ipp="800", authority=H, facility=H, when=ts(5), control_id="i-2", ins='""')
    deletion += f"\rMRG|{ins}^^^ASIP-SANTE-INS-NIR&{OID}&ISO^INS"
    send(server, deletion)

    status, d = server.decide(by_ins, "consult")
    assert status == 200 and (d["decision"], d["reasons"]) == ("deny", ["patient.unknown"])
    view = consent(server, "800")
    assert ("INS", ins, False) in {(i["kind"], i["value"], i["active"]) for i in view["identities"]}
    assert view["consent"]["code"] == "IC"                          # the facts stay with the patient
    assert [e["payload"].get("msh10") for e in audit(server, "800") if e["kind"] == "message"] == ["i-1", "i-2"]
