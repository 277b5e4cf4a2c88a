"""The clients: one message at a time, ACKs matched in order, timeouts, lost connections."""

from __future__ import annotations

import socket
import threading

import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mllp.ack import build_ack
from mllp.client import AckTimeout, BlockingMLLPClient, MLLPClientProtocol, MLLPError, encode_message
from tests.mllp.support import adt, framed, msa, split_frames


def connected(**kwargs):
    clock = task.Clock()
    proto = MLLPClientProtocol(clock=clock, **kwargs)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


def test_sends_the_next_message_only_after_the_previous_ack():
    proto, transport, _ = connected()
    first, second = proto.send(adt("A1")), proto.send(adt("A2", newline="\n"))
    assert [f.split(b"\r")[0].split(b"|")[9] for f in split_frames(transport.value())] == [b"A1"]
    proto.dataReceived(b"\x00" + framed(build_ack(adt("A1"), "AA").encode()))
    assert msa(first.result) == ("AA", "A1") and not second.called
    sent = split_frames(transport.value())
    assert len(sent) == 2 and b"\n" not in sent[1] and sent[1].endswith(b"\r")
    proto.dataReceived(framed(build_ack(adt("A2"), "AE").encode()))
    assert msa(second.result) == ("AE", "A2")


def test_no_ack_in_time_fails_and_drops_the_connection():
    proto, transport, clock = connected(timeout=5)
    d = proto.send(adt())
    queued = proto.send(adt("NEXT"))
    clock.advance(5)
    assert isinstance(d.result, Failure) and d.result.check(AckTimeout)
    assert queued.result.check(AckTimeout)
    assert transport.disconnecting
    d.addErrback(lambda _: None)
    queued.addErrback(lambda _: None)


def test_lost_connection_fails_what_is_pending_and_later_sends():
    proto, _, _ = connected()
    d = proto.send(adt())
    proto.connectionLost(Failure(ConnectionResetError("reset")))
    later = proto.send(adt())
    assert d.result.check(MLLPError) and later.result.check(MLLPError)
    d.addErrback(lambda _: None)
    later.addErrback(lambda _: None)


def test_ack_is_decoded_with_its_own_charset():
    proto, _, _ = connected(encoding="utf-8")
    d = proto.send(adt())
    ack = build_ack(adt(charset="8859/1"), "AA") + "\rZZZ|Hélène"
    proto.dataReceived(framed(ack.encode("latin-1")))
    assert d.result.endswith("ZZZ|Hélène")


def test_encode_message():
    assert encode_message("MSH|a\nPID|b\n\n") == b"MSH|a\rPID|b\r"
    assert encode_message(b"raw\n") == b"raw\n"


def _one_shot_server(reply: bytes):
    """A bare socket server that reads one frame and answers ``reply`` (then closes)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def serve():
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\x1c\r" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            for i in range(0, len(reply), 3):  # trickle the reply in small pieces
                conn.sendall(reply[i : i + 3])
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], thread


def test_blocking_client_skips_garbage_and_reads_a_split_reply():
    ack = build_ack(adt("S1"), "AA").encode()
    port, thread = _one_shot_server(b"\n\x00" + framed(ack))
    with BlockingMLLPClient("127.0.0.1", port, timeout=10) as client:
        assert msa(client.send(adt("S1"))) == ("AA", "S1")
    thread.join(10)


def test_blocking_client_reports_a_close_without_ack():
    port, thread = _one_shot_server(b"")
    with BlockingMLLPClient("127.0.0.1", port, timeout=10) as client:
        with pytest.raises(MLLPError):
            client.send(adt())
    thread.join(10)
