"""A hostile or careless MLLP sender against a real `pamgate serve` (issue 11): every frame gets one
well-formed ACK with a final code, the connection and the feed go on, and logs stay clean."""
from __future__ import annotations

import re
import socket

import pytest

from tests.builders import adt
from tests.serving import Server, ack_code

VT, END = b"\x0b", b"\x1c\r"


def framed(payload: bytes) -> bytes:
    return VT + payload + END


def acks_of(stream: bytes) -> list[str]:
    return [m.decode("utf-8", "replace") for m in re.findall(rb"\x0b(.*?)\x1c\r", stream, re.DOTALL)]


def segment(ack: str, name: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith(name + "|")).split("|")


def exchange(port: int, payload: bytes, count: int, *, half_close=False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while len(acks_of(received)) < count or half_close:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


@pytest.fixture
def small_frames(tmp_path):
    s = Server(tmp_path, {"limits": {"max_frame_bytes": 4096}}).start()
    yield s
    s.stop()


def test_lying_charsets_get_a_final_ar_203_and_the_connection_serves_on(small_frames):
    server = small_frames
    msg = adt("A01", ipp="300001", visit="VH1", control_id="OK1")
    payload = (framed(adt(control_id="IDNA1", charset="IDNA").encode("utf-8"))  # É in PID-5
               + framed(adt(control_id="NUL1", charset="UNI\x00CODE").encode())
               + framed(adt(control_id="BIG1", charset="IDNA", name="X" * 6000).encode())
               + framed(adt(control_id="VER1", version="2.5\x1c\n").encode())  # MSH-12 breaks framing
               + framed(msg.encode()))
    received = exchange(server.mllp_port, payload, 5)
    acks = acks_of(received)
    assert received.count(b"\x1c") == 5 and received.count(b"\x0b") == 5
    assert [segment(a, "MSA")[1:3] for a in acks] == [
        ["AR", "IDNA1"], ["AR", "NUL1"], ["AR", "BIG1"], [segment(acks[3], "MSA")[1], "VER1"], ["AA", "OK1"]]
    for refused in acks[:2]:
        assert segment(refused, "ERR")[2] == "MSH^1^18" and segment(refused, "ERR")[3].startswith("203^")
    assert segment(acks[2], "ERR")[3].startswith("102^")  # too large: final, and not 207
    assert not any("207^" in a for a in acks)
    status, body = server.http("GET", "/v1/patients/HOSP-T/300001/consent")
    assert status == 200  # the message behind them was applied
    log = server.stderr()
    assert "Unhandled" not in log and "Traceback" not in log


def test_a_half_closed_sender_gets_its_ack_and_metrics_count_it(tmp_path):
    server = Server(tmp_path).start()
    try:
        msg = adt("A01", ipp="300002", visit="VH2", control_id="HALF1")
        received = exchange(server.mllp_port, framed(msg.encode()), 1, half_close=True)
        [ack] = acks_of(received)
        assert segment(ack, "MSA")[1:3] == ["AA", "HALF1"]
        _, metrics = server.http("GET", "/metrics")
        assert b'pamgate_messages_total{ack="AA",event="A01"} 1.0' in metrics
        assert b"pamgate_acks_undelivered_total 0.0" in metrics
    finally:
        server.stop()


def test_what_a_sender_wrote_reaches_no_log_line_raw(tmp_path):
    server = Server(tmp_path).start()
    hostile = "GAM\x1b[2J\x00\x07"
    try:
        refused = adt("A01", ipp="300003", visit="VH3", app=hostile, facility="H\x1bOSP", zbe_action="BOGUS")
        assert ack_code(server.send(refused)) == "AE"
        charset_ack = server.send(adt("A01", control_id="CS1", charset="8859/1\x1b[1m"))
        assert ack_code(server.send(adt("A01", control_id="LONG1", app="G" * 5000, zbe_action="BOGUS"))) == "AE"
    finally:
        server.stop()
    log = server.stderr()
    assert "message.answered" in log and "ack=AE" in log
    assert not any(c in log for c in "\x1b\x00\x07"), [line for line in log.splitlines() if "\x1b" in line]
    assert "G" * 300 not in log  # bounded
    assert ack_code(charset_ack) == "AR" and "\x1b" not in charset_ack
