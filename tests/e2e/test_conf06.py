"""DMP/CONF.06, all 15 steps, end to end: ADT over a real MLLP socket, decisions over HTTP."""
from datetime import datetime, timedelta

from tests.builders import adt, zfa_2111
from tests.serving import ack_code

BASE = datetime.now() - timedelta(hours=3)   # recent: a consent lasts 6 months from its collection


def ts(minutes: int) -> str:
    return (BASE + timedelta(minutes=minutes)).strftime("%Y%m%d%H%M%S")

P = {"id": "100001", "authority": "HOSP-T"}


def test_conf06_end_to_end(server):
    def step(action, mode="normal", reason=None, at=None):
        body = {"mode": mode}
        if reason:
            body["reason"] = reason
        status, d = server.decide(P, action, **body)
        assert status == 200, d
        return d["decision"], d["reasons"]

    # 1–3: nothing collected
    assert ack_code(server.send(adt("A01", zfa=zfa_2111("NA", "NA", ts(0)), when=ts(0)))) == "AA"
    assert step("consult") == ("deny", ["consent.not_collected"])
    assert step("consult") == ("deny", ["consent.not_collected"])
    assert step("feed") == ("permit", [])
    # 4–6: consent recorded (a Z99 updating the admission, carrying the new ZFA)
    upd = adt("Z99", zfa=zfa_2111("NA", "IC", ts(10)), zbe_action="UPDATE", original="A01",
              when=ts(10))
    assert ack_code(server.send(upd)) == "AA"
    assert step("consult") == ("permit", [])
    assert step("consult") == ("permit", [])
    assert step("feed") == ("permit", [])
    # 7–9: refusal of consent
    upd = adt("Z99", zfa=zfa_2111("NA", "INC", ts(20)), zbe_action="UPDATE", original="A01",
              when=ts(20))
    assert ack_code(server.send(upd)) == "AA"
    assert step("consult") == ("deny", ["consent.refused"])
    assert step("consult") == ("deny", ["consent.refused"])
    assert step("feed") == ("permit", [])
    # 10–12: opposition to feeding
    upd = adt("Z99", zfa=zfa_2111("IO", "NA", ts(30)), zbe_action="UPDATE", original="A01",
              when=ts(30))
    assert ack_code(server.send(upd)) == "AA"
    assert step("consult") == ("deny", ["consent.refused"])
    assert step("feed") == ("deny", ["feed.opposed"])
    assert step("feed") == ("deny", ["feed.opposed"])
    # 13–15: break-glass requested and recorded
    assert step("consult", mode="bris_de_glace") == ("deny", ["break_glass.reason_missing"])
    assert step("consult", mode="bris_de_glace", reason="arrêt cardiaque, patient inconscient") == \
        ("permit", ["break_glass"])
    status, view = server.http("GET", "/v1/patients/HOSP-T/100001/consent")
    assert status == 200
    assert [b["reason"] for b in view["break_glass_requests"]] == ["arrêt cardiaque, patient inconscient"]
    assert view["consent"]["code"] == "INC" and view["feed_opposition"]["code"] == "IO"
    status, audit = server.http("GET", "/v1/audit?authority=HOSP-T&id=100001")
    kinds = [e["kind"] for e in audit["entries"]]
    assert kinds.count("message") == 4 and kinds.count("decision") == 14


def test_duplicate_is_acknowledged_and_applied_once(server):
    m = adt("A01", zfa=zfa_2111("NA", "IC"), control_id="DUP-1")
    assert ack_code(server.send(m)) == "AA"
    assert ack_code(server.send(m)) == "AA"
    status, audit = server.http("GET", "/v1/audit?authority=HOSP-T&id=100001")
    assert [e["kind"] for e in audit["entries"]] == ["message"]


def test_bad_body_gets_400_with_code(server):
    status, body = server.http("POST", "/v1/decisions", {"patient": P, "action": "read", "user": {"id": "u"}})
    assert status == 400 and body["error"] == "field.invalid" and body["detail"].startswith("action")
    status, body = server.decide({"id": "nobody", "authority": "HOSP-T"}, "consult")
    assert status == 200 and body["decision"] == "deny" and body["reasons"] == ["patient.unknown"]
