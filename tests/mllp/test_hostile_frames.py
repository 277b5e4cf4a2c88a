"""Frames a hostile or broken sender writes, over real loopback sockets: none may end the connection,
leave a frame unanswered, or break the framing of its ACK (issue 11)."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from mllp.ack import build_ack
from mllp.listener import ListenerSettings, MLLPServerFactory
from tests.mllp.support import adt, fields, framed, msa, split_frames


def accept_all(frame):
    return defer.succeed(build_ack(frame.text, "AA"))


def factory(handler=accept_all, on_ack=None, **settings):
    return MLLPServerFactory(handler, settings=ListenerSettings(**settings), on_ack=on_ack)


def err3(ack: str) -> str:
    return fields(ack, "ERR")[3].split("^")[0]


@pytest_twisted.ensureDeferred
async def test_idna_nul_and_lying_charsets_do_not_take_the_connection_down(loopback):
    # Old code: IDNA + a non-ASCII byte, NUL in MSH-18 and an over-long IDNA frame raised in the
    # reactor; the connection closed and the frames behind got no ACK.
    port = await loopback.listen(factory(max_frame_bytes=4096))
    peer = await loopback.connect(port)
    peer.transport.write(
        framed(adt("IDNA1", charset="IDNA").encode("latin-1") + "É".encode("latin-1"))
        + framed(adt("NUL1", charset="UNI\x00CODE\x00").encode())
        + framed(adt("BIG1", charset="IDNA", family="É" * 9000).encode("latin-1"))
        + framed(adt("ROT1", charset="rot13").encode())
        + framed(adt("OK1").encode())
    )
    answers = [a.decode("utf-8", "replace") for a in await peer.wait_frames(5)]
    assert [msa(a) for a in answers] == [("AR", "IDNA1"), ("AR", "NUL1"), ("AR", "BIG1"),
                                         ("AR", "ROT1"), ("AA", "OK1")]
    for charset_refused in (answers[0], answers[1], answers[3]):
        assert fields(charset_refused, "ERR")[2] == "MSH^1^18"
        assert err3(charset_refused) == "203"  # final: never 207, which the sender retries forever
    peer.transport.write(framed(adt("AFTER").encode()))
    answers = await peer.wait_frames(6)
    assert msa(answers[5].decode()) == ("AA", "AFTER")
    assert peer.transport.connected


@pytest_twisted.ensureDeferred
async def test_frame_too_large_is_answered_102_not_207(loopback):
    port = await loopback.listen(factory(max_frame_bytes=4096))
    peer = await loopback.connect(port)
    peer.transport.write(framed(adt("BIG", family="X" * 10_000).encode()))
    [ack] = await peer.wait_frames(1)
    ack = ack.decode()
    assert msa(ack) == ("AR", "BIG")
    assert fields(ack, "ERR")[3] == "102^Data type error^HL70357"
    assert "exceeds the limit of 4096 bytes" in fields(ack, "ERR")[8]


CONTROLS = ["\x1c\n", "\x1c", "\x0b", "\x00", "\x7f", "\x1f", "\x1c\x0b"]  # (0x1C 0x0D ends the inbound frame)


@pytest.mark.parametrize("control", CONTROLS)
@pytest_twisted.ensureDeferred
async def test_an_ack_never_breaks_its_own_framing(loopback, control):
    # Old code: a 0x1C 0x0A inside MSH-12 was echoed into the ACK: the sender read a truncated ACK.
    def echo_version(text, control_id):
        head, rest = text.split("\r", 1)
        msh = head.split("|")
        msh[9] = control_id
        msh[11] = "2.5" + control
        inline = control.strip("\r\n") or "\x1c"  # a line break there would end MSH before MSH-10
        msh[2] = "GAM" + inline  # MSH-3, swapped into MSH-5
        msh[3] = "CHU" + inline  # MSH-4
        return "|".join(msh) + "\r" + rest

    port = await loopback.listen(factory(max_frame_bytes=4096))
    peer = await loopback.connect(port)
    messages = [echo_version(adt(), "C1"),  # accepted
                echo_version(adt(charset="IDNA"), "C2"),  # rejected by the listener itself
                echo_version(adt(family="X" * 5000), "C3")]  # too long
    peer.transport.write(b"".join(framed(m.encode()) for m in messages) + framed(adt("C4").encode()))
    await peer.wait_frames(4)
    await task.deferLater(reactor, 0.05, lambda: None)
    raw_acks = split_frames(peer.received)
    assert len(raw_acks) == 4 and peer.received.count(b"\x0b") == 4
    assert peer.received.count(b"\x1c") == 4  # one end pair per ACK, no stray 0x1C
    for raw in raw_acks:
        body = raw.decode("utf-8")
        assert not any(ch < " " and ch != "\r" for ch in body), body
        assert body.endswith("\r") and "\r\r" not in body
    assert [msa(raw.decode())[1] for raw in raw_acks] == ["C1", "C2", "C3", "C4"]
    codes = [msa(raw.decode())[0] for raw in raw_acks]
    assert codes[0] == codes[3] == "AA" and codes[2] == "AR"  # (C2's MSH-18 is cut off by a line break)
    first = raw_acks[0].decode()
    assert fields(first, "MSH")[4].startswith("GAM\\X")  # HL7 hex escape of the control byte


def _send_then_half_close(port: int, payload: bytes) -> bytes:
    """A blocking sender that writes, shuts down its write side (nc -q1, SHUT_WR), reads to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest_twisted.ensureDeferred
async def test_a_half_closed_sender_still_gets_every_ack(loopback):
    # Old code: the EOF closed the connection at once; ACKs still owed were dropped.
    def slow(frame):
        return task.deferLater(reactor, 0.2, build_ack, frame.text, "AA")

    written = []
    port = await loopback.listen(factory(slow, on_ack=lambda text, ok: written.append(ok)))
    payload = b"".join(framed(adt(f"H{i}").encode()) for i in range(3))
    received = await threads.deferToThread(_send_then_half_close, port, payload)
    assert [msa(a.decode())[1] for a in split_frames(received)] == ["H0", "H1", "H2"]
    assert written == [True, True, True]


@pytest_twisted.ensureDeferred
async def test_an_ack_for_a_vanished_peer_is_counted_as_not_written(loopback):
    gate = defer.Deferred()
    reports = []
    served = factory(lambda frame: gate.addCallback(lambda _: build_ack(frame.text, "AA")),
                     on_ack=lambda text, ok: reports.append((msa(text)[1], ok)))
    port = await loopback.listen(served)
    peer = await loopback.connect(port)
    peer.transport.write(framed(adt("GONE").encode()))
    while served.inFlight == 0:
        await task.deferLater(reactor, 0.01, lambda: None)
    peer.transport.abortConnection()
    while served.connections:
        await task.deferLater(reactor, 0.01, lambda: None)
    gate.callback(None)
    assert reports == [("GONE", False)]
