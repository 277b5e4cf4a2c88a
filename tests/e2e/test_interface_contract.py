"""The outer interface as ../shared/docs/interface.md words it, read through a real `pamgate serve`: a decision's
`triggers` are events (the envelope the outbox delivers, times in UTC), an event names the patient as the caller
did when no IPP is known, and every value of a patient's consent view carries its collection date and source."""
from __future__ import annotations

import json
import time

from tests.builders import adt, zfa_2111
from tests.serving import ack_code

ENVELOPE = {"id", "type", "time", "patient", "episode", "data", "source"}
IPP = {"id": "770001", "authority": "HOSP-I"}


def delivered(path, want, timeout=20):
    """The events the file destination has written, once `want(events)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        events = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if want(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def test_triggers_are_the_events_delivered_and_unknown_ins_is_named_as_asked(tmp_path):
    from tests.serving import Server
    out = tmp_path / "events.jsonl"
    server = Server(tmp_path, {"destinations": [{"name": "f", "type": "file", "path": str(out),
                                                 "events": ["*"]}]}).start()
    try:
        assert ack_code(server.send(adt("A01", ipp=IPP["id"], authority=IPP["authority"],
                                        zfa=zfa_2111("INO", "IC")))) == "AA"
        status, answer = server.decide(IPP, "consult", mode="bris_de_glace", reason="arrêt cardiaque")
        assert status == 200 and answer["decision"] == "permit", answer
        assert {t["type"] for t in answer["triggers"]} >= {"break_glass.used"}
        for t in answer["triggers"]:
            assert set(t) == ENVELOPE, t
            assert t["patient"] == IPP and t["source"] == {"msh10": None, "sender": "api"}
            assert t["episode"] == answer["episode"]

        # asked at a past instant with an offset, the events still carry their time in UTC
        status, past = server.decide(IPP, "consult", at="2025-01-06T10:00:00+01:00", user="doc2")
        assert status == 200 and past["decision"] == "permit" and past["triggers"], past
        assert {t["time"] for t in past["triggers"]} == {"2025-01-06T09:00:00+00:00"}

        ins = {"ins": "1990199123456", "oid": "1.2.250.1.213.1.4.8"}
        status, unknown = server.decide(ins, "consult")
        assert status == 200 and unknown["reasons"] == ["patient.unknown"]

        ids = {t["id"] for t in answer["triggers"] + past["triggers"]}   # kept in order per patient: the
        # decision.made written before each trigger is delivered before it
        events = delivered(out, lambda es: ids <= {e["id"] for e in es}
                           and any(e["patient"] == ins for e in es))
        by_id = {e["id"]: e for e in events}
        for t in answer["triggers"]:     # the answer's trigger is the very event delivered, same id and content
            assert by_id[t["id"]] == t
        assert {e["time"] for e in events if e["data"].get("request", {}).get("user") == "doc2"} \
            == {"2025-01-06T09:00:00+00:00"}
        made = [e for e in events if e["type"] == "decision.made" and e["data"]["reasons"] == ["patient.unknown"]]
        assert [e["patient"] for e in made] == [ins]

        status, view = server.http("GET", f"/v1/patients/{IPP['authority']}/{IPP['id']}/consent")
        assert status == 200
        for key in ("consent", "feed_opposition", "dmp_status"):
            assert {"collected_at", "source"} <= set(view[key]), key
        [request] = view["break_glass_requests"]
        assert request["reason"] == "arrêt cardiaque" and request["collected_at"] == request["at"]
        assert request["source"] == {"api": True, "user": "doc1"}
    finally:
        server.stop()
