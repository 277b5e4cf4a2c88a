"""A store that a real `pamgate serve` filled through its MLLP socket, then stopped: what the read-only
commands read (journal, outbox, audit)."""
from __future__ import annotations

from datetime import datetime, timedelta

from tests.builders import adt, zfa_2111
from tests.serving import Server, ack_code


def now_hl7(minutes_ago: int = 5) -> str:
    return (datetime.now() - timedelta(minutes=minutes_ago)).strftime("%Y%m%d%H%M%S")


def fill(tmp_path, config=None, messages=None):
    """Serve on a store in `tmp_path`, send `messages` (default: an admission with consent, one refused,
    one duplicate), stop; the server and the ACKs it sent."""
    when = now_hl7()
    messages = messages or [
        adt("A01", ipp="J-IPP-1", visit="J-VIS-1", zfa=zfa_2111("NA", "IC", when), when=when, control_id="J-1",
            name="SECRETNAME^ALICE"),
        adt("A01", ipp="", zfa=zfa_2111("NA", "IC", when), when=when, control_id="J-2"),
        adt("A01", ipp="J-IPP-1", visit="J-VIS-1", zfa=zfa_2111("NA", "IC", when), when=when, control_id="J-1",
            name="SECRETNAME^ALICE"),
    ]
    server = Server(tmp_path, config=config).start()
    try:
        acks = [server.send(m) for m in messages]
    finally:
        server.stop()
    return server, acks, [ack_code(a) for a in acks]
