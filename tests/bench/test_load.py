"""bench/load.py's driver against a small real loopback listener whose answers each test chooses: every
message sent once and answered, the ACKs that do not accept counted under their MSA-1, a closed connection
or a silent server an error that ends the run, not a hang; and its reader of HTTP answers (bench/decisions.py's client)."""
from __future__ import annotations

import socketserver
import threading
import time
from contextlib import contextmanager

import pytest

from bench.load import LoadError, drive, http_response, refusal
from mllp.ack import read_ack
from mllp.client import decode_ack


def ack(control_id: str, code: str = "AA", sep: str = "\r") -> bytes:
    return f"MSH|^~\\&|ACK|T|||20250101000000||ACK|X{control_id}|P|2.5{sep}MSA|{code}|{control_id}".encode()


def message(control_id: str) -> str:
    return f"MSH|^~\\&|APP|FAC|DPI|FAC|20250101000000||ADT^A01^ADT_A01|{control_id}|P|2.5\rPID|1||9000001"


@contextmanager
def listener(answer):
    """A threaded MLLP listener on an ephemeral loopback port: for each frame, `answer(control id)` gives the
    bytes to send back (a list: sent in pieces), or None to close the connection (b"": say nothing).
    Yields (port, the control ids received, in order, per connection)."""
    received: list[list[str]] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            mine: list[str] = []
            received.append(mine)
            buffer = b""
            while data := self.request.recv(65536):
                buffer += data
                while (end := buffer.find(b"\x1c\r")) >= 0:
                    frame, buffer = buffer[buffer.find(b"\x0b") + 1:end], buffer[end + 2:]
                    control_id = frame.split(b"\r")[0].split(b"|")[9].decode()
                    mine.append(control_id)
                    reply = answer(control_id)
                    if reply is None:
                        return
                    for i, piece in enumerate(reply if isinstance(reply, list) else [reply]):
                        if i:
                            time.sleep(0.02)       # the ACK's second piece in a later segment
                        self.request.sendall(piece)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


def framed(body: bytes) -> bytes:
    return b"\x0b" + body + b"\x1c\r"


def test_each_message_is_sent_once_and_the_acks_that_do_not_accept_are_counted_under_their_code():
    def answer(cid):
        kind = cid.split("-")[0]
        if kind == "AE":
            return framed(ack(cid, "AE"))
        if kind == "WRONG":                         # AA, but for another message
            return framed(ack(cid + "0"))
        if kind == "CA":
            return framed(ack(cid, "CA"))
        if kind == "LF":                            # segments split by LF: the full reader's case, accepted
            return framed(ack(cid, sep="\n"))
        if kind == "SPLIT":
            whole = framed(ack(cid))
            return [whole[:30], whole[30:]]
        return b"garbage" + framed(ack(cid))        # bytes before the start block are skipped
    kinds = ["AA"] * 6 + ["AE"] * 3 + ["WRONG"] * 2 + ["CA", "LF", "SPLIT", "SPLIT"]
    ids = [f"{kind}-{i}" for i, kind in enumerate(kinds)]
    with listener(answer) as (port, received):
        latencies, problems, elapsed = drive("127.0.0.1", port, [message(i) for i in ids], 3, timeout=10)
    assert problems == {"AE": 3, "AA": 2}
    assert len(latencies) == len(ids) and latencies == sorted(latencies) and latencies[-1] < elapsed
    assert latencies[-1] >= 0.02                    # the split ACK was waited for whole
    assert sorted(map(sorted, received)) == sorted(sorted(ids[c::3]) for c in range(3))
    for per_connection in received:                 # in the order given, one connection's share each
        assert per_connection == [i for i in ids if i in per_connection]


def test_a_connection_closed_by_the_server_ends_the_run_with_the_message_it_waited_for():
    with listener(lambda cid: None if cid == "C-3" else framed(ack(cid))) as (port, _):
        with pytest.raises(LoadError, match=r"closed by the server, waiting for the ACK of C-3 \(its 1 before"):
            drive("127.0.0.1", port, [message(f"C-{i}") for i in range(8)], 2, timeout=10)


def test_a_server_that_does_not_answer_ends_the_run_after_the_timeout():
    with listener(lambda cid: b"" if cid == "S-4" else framed(ack(cid))) as (port, _):
        started = time.monotonic()
        with pytest.raises(LoadError, match="no answer within 0.3 s, waiting for the ACK of S-4"):
            drive("127.0.0.1", port, [message(f"S-{i}") for i in range(8)], 2, timeout=0.3)
        assert time.monotonic() - started < 2


def test_nothing_listening_is_an_error_not_a_hang():
    with listener(lambda cid: b"") as (port, _):
        pass
    with pytest.raises(LoadError, match="cannot connect"):
        drive("127.0.0.1", port, [message("N-1")], 1, timeout=1)


@pytest.mark.parametrize("body, control_id", [
    (ack("F1-1"), "F1-1"),
    (ack("F1-1", "CA"), "F1-1"),
    (ack("F1-1", "AE"), "F1-1"),
    (ack("F1-1", "AR"), "F1-1"),
    (ack("F1-1", "CR"), "F1-1"),
    (ack("F1-10"), "F1-1"),                                     # MSA-2 longer than the id
    (ack("F1-1"), "F1-10"),                                     # shorter
    (ack("F1-1", "AA^x"), "F1-1"),                              # MSA-1 with a component
    (ack("F1-1") + b"|text|7", "F1-1"),                         # MSA-3 and -4
    (ack("F1-1") + b"\rERR|||207^x^HL70357|E", "F1-1"),
    (ack("F1-1", sep="\n"), "F1-1"),
    (b"MSH|^~\\&|ACK|T|||20250101000000||ACK|X|P|2.5\rMSA|AA", "F1-1"),         # no MSA-2
    (b"MSH|^~\\&|ACK|T|||20250101000000||ACK|X|P|2.5\rERR|||207", "F1-1"),      # no MSA
    (b"MSH#^~\\&#ACK#T###20250101000000##ACK#X#P#2.5\rMSA#AA#F1-1", "F1-1"),   # other separators
    (b"MSH|^~\\&|ACK|T|||20250101000000||ACK|X|P|2.5\rMSA|AE|F1-1\rMSA|AA|F1-1", "F1-1"),
    (b"MSH|^~\\&|ACK|T|||20250101000000||ACK|X|P|2.5\rERR|||207\rMSA|AA|F1-1", "F1-1"),
    ("MSH|^~\\&|ACK|T|||20250101000000||ACK|X|P|2.5||||||8859/1\rMSA|AA|Fé".encode("latin-1"), "Fé"),
    ("MSH|^~\\&|ACK|T|||20250101000000||ACK|X|P|2.5||||||8859/1\rMSA|AA|Fé".encode("utf-8"), "Fé"),
    (b"MSH|^~\\&|ACK|T|||20250101000000||ACK|X|P|2.5\nMSA|AE|F1-1\rMSA|AA|F1-1", "F1-1"),   # LF, then CR
    (b"", "F1-1"),
])
def test_the_quick_read_of_an_ack_agrees_with_mllp_ack(body, control_id):
    read = read_ack(decode_ack(body))
    assert refusal(body, control_id) == ((read.code or "?") if read.problem(control_id) else None)


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a\": \"b\"}",
    b"HTTP/1.1 404 Not Found\r\ncontent-length:0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nServer: pamgate\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\n{\"a\":\r\n4;x=y\r\n \"b\"\r\n1\r\n}\r\n0\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n",
])
def test_an_http_answer_is_whole_only_at_its_last_byte(response):
    status = response.split(b"\r\n", 1)[0]
    next_one = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert http_response(response + next_one) == (status, len(response))
    assert all(http_response(response[:n]) is None for n in range(len(response)))
