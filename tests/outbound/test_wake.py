"""The dispatcher looks at the outbox as soon as a message or an API call has committed events, not at its
next poll: with `poll_interval` at 60 s, events still reach the destination within a second or two."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

from tests.builders import adt, zfa_2111
from tests.serving import Server, ack_code

WHEN = (datetime.now() - timedelta(hours=1)).strftime("%Y%m%d%H%M%S")


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def within(seconds, condition):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_events_leave_at_once_though_the_poll_is_a_minute(tmp_path):
    out = tmp_path / "events.jsonl"
    server = Server(tmp_path, config={"destinations": [
        {"name": "journal", "type": "file", "path": str(out), "poll_interval": 60}]}).start()
    try:
        assert within(10, lambda: "dispatch.started" in server.stderr())
        time.sleep(0.5)         # the dispatcher's first look is over: it now waits for its next poll
        assert ack_code(server.send(adt("A01", ipp="700001", when=WHEN, zfa=zfa_2111("INO", "IC", when=WHEN)))) \
            == "AA"
        assert within(5, lambda: any(e["patient"]["id"] == "700001" for e in lines(out))), \
            "the message's events waited for the poll"
        before = len(lines(out))
        status, _ = server.decide({"id": "700001", "authority": "HOSP-T"}, "consult")
        assert status == 200
        assert within(5, lambda: any(e["type"] == "decision.made" for e in lines(out)[before:])), \
            "the decision's event waited for the poll"
    finally:
        server.stop()
