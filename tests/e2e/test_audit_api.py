"""The API for the people who audit (issue 16): a patient's consent and audit trail by INS as by IPP; the
audit trail by user and time range, paged; the audit entry of a decision about an unknown patient."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from urllib.parse import quote

from tests.builders import adt, zfa_2111
from tests.serving import ack_code

INS, OID = "1800175123456", "1.2.250.1.213.1.4.10"
IPP = {"id": "840001", "authority": "HOSP-T"}


def now() -> str:
    return quote(datetime.now(timezone.utc).isoformat(), safe=":")


def test_auditors_read_by_ins_user_time_and_page(server):
    assert ack_code(server.send(adt("A01", ipp=IPP["id"], ins=INS, zfa=zfa_2111("INO", "IC")))) == "AA"
    by_ipp = server.http("GET", f"/v1/patients/HOSP-T/{IPP['id']}/consent")
    by_ins = server.http("GET", f"/v1/patients/ins/{OID}/{INS}/consent")
    assert by_ipp[0] == by_ins[0] == 200
    assert {k: v for k, v in by_ins[1].items() if k != "at"} == {k: v for k, v in by_ipp[1].items() if k != "at"}
    assert server.http("GET", f"/v1/patients/ins/{OID}/1800175999999/consent")[0] == 404

    first = server.decide(IPP, "consult", user="doc-a")[1]
    time.sleep(1.1)
    middle = now()
    time.sleep(0.1)
    second = server.decide({"ins": INS, "oid": OID}, "consult", user="doc-a")[1]
    server.decide(IPP, "consult", user="doc-b")

    status, trail = server.http("GET", f"/v1/audit?authority=HOSP-T&id={IPP['id']}")
    assert status == 200 and [e["kind"] for e in trail["entries"]] == ["message", "decision", "decision", "decision"]
    assert server.http("GET", f"/v1/audit?ins={INS}&oid={OID}") == (status, trail)

    status, mine = server.http("GET", "/v1/audit?user=doc-a")
    assert status == 200 and [e["audit_id"] for e in mine["entries"]] == [first["audit_id"], second["audit_id"]]
    assert {e["user"] for e in mine["entries"]} == {"doc-a"} and mine["next"] is None
    status, later = server.http("GET", f"/v1/audit?user=doc-a&since={middle}")
    assert [e["audit_id"] for e in later["entries"]] == [second["audit_id"]]
    status, earlier = server.http("GET", f"/v1/audit?authority=HOSP-T&id={IPP['id']}&until={middle}")
    assert [e["kind"] for e in earlier["entries"]] == ["message", "decision"]

    # paging: limit and the cursor give the whole trail, one entry at a time
    pages, after = [], ""
    while True:
        status, page = server.http("GET", f"/v1/audit?authority=HOSP-T&id={IPP['id']}&limit=1{after}")
        assert status == 200 and len(page["entries"]) <= 1
        pages += page["entries"]
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    assert pages == trail["entries"]

    for bad in ("limit=0", "limit=1001", "limit=x", "after=-1", "since=yesterday", "since=1700-01-01T00:00:00",
                "nope=1", "ins=1"):
        status, answer = server.http("GET", f"/v1/audit?{bad}")
        assert status == 400 and answer["error"] in ("query.invalid", "query.missing", "date.out_of_range"), bad


def test_a_decision_about_an_unknown_patient_has_a_readable_audit_entry(server):
    status, answer = server.decide({"id": "849999", "authority": "HOSP-T"}, "consult", user="doc-z")
    assert status == 200 and answer["decision"] == "deny" and answer["audit_id"]
    status, found = server.http("GET", f"/v1/audit?audit_id={answer['audit_id']}")
    assert status == 200 and len(found["entries"]) == 1
    entry = found["entries"][0]
    assert entry["kind"] == "decision" and entry["user"] == "doc-z" and entry["audit_id"] == answer["audit_id"]
    assert entry["payload"]["patient"] == {"id": "849999", "authority": "HOSP-T"}
    assert entry["payload"]["decision"] == "deny"
    assert server.http("GET", "/v1/audit?audit_id=" + "f" * 64) == (200, {"entries": [], "next": None})
