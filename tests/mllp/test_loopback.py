"""The listener over real loopback sockets (pytest-twisted runs the reactor)."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from mllp.ack import build_ack
from mllp.client import BlockingMLLPClient
from mllp.listener import ListenerSettings, MLLPServerFactory
from tests.mllp.support import adt, fields, framed, msa


def accept_all(received: list | None = None):
    def handler(frame):
        if received is not None:
            received.append(frame)
        return defer.succeed(build_ack(frame.text, "AA"))

    return handler


def factory(handler=None, **settings):
    return MLLPServerFactory(handler or accept_all(), settings=ListenerSettings(**settings))


def control_ids(peer, encoding="utf-8"):
    return [msa(raw.decode(encoding))[1] for raw in peer.frames()]


async def pause(seconds=0.02):
    await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_several_frames_in_one_write(loopback):
    port = await loopback.listen(factory())
    peer = await loopback.connect(port)
    peer.transport.write(b"".join(framed(adt(f"M{i}").encode()) for i in range(5)))
    await peer.wait_frames(5)
    assert control_ids(peer) == [f"M{i}" for i in range(5)]


@pytest_twisted.ensureDeferred
async def test_frames_split_across_writes(loopback):
    port = await loopback.listen(factory())
    peer = await loopback.connect(port)
    stream = framed(adt("S1").encode()) + framed(adt("S2").encode())
    for cut in range(0, len(stream), 97):
        peer.transport.write(stream[cut : cut + 97])
        await pause(0.005)
    await peer.wait_frames(2)
    assert control_ids(peer) == ["S1", "S2"]


@pytest_twisted.ensureDeferred
async def test_garbage_before_the_start_byte_is_skipped(loopback):
    port = await loopback.listen(factory())
    peer = await loopback.connect(port)
    peer.transport.write(b"\x00\x00\x00GET / HTTP/1.0\r\n\r\n" + framed(adt("G1").encode()))
    await peer.wait_frames(1)
    assert control_ids(peer) == ["G1"]


@pytest_twisted.ensureDeferred
async def test_too_long_frame_is_rejected_and_serving_goes_on(loopback):
    received = []
    port = await loopback.listen(factory(accept_all(received), max_frame_bytes=4096))
    big = await loopback.connect(port)
    other = await loopback.connect(port)
    big.transport.write(framed(adt("BIG", family="X" * 200_000).encode()))
    other.transport.write(framed(adt("O1").encode()))
    await other.wait_frames(1)
    await big.wait_frames(1)
    assert msa(big.frames()[0].decode())[0] == "AR"
    assert msa(big.frames()[0].decode())[1] == "BIG"  # read from the kept head
    big.transport.write(framed(adt("AFTER").encode()))  # same connection still served
    await big.wait_frames(2)
    assert control_ids(big) == ["BIG", "AFTER"] and control_ids(other) == ["O1"]
    assert [f.text.split("|")[9] for f in received] == ["O1", "AFTER"]


@pytest_twisted.ensureDeferred
async def test_idle_connection_is_closed(loopback):
    port = await loopback.listen(factory(idle_timeout=0.3))
    peer = await loopback.connect(port)
    started = time.monotonic()
    await peer.closed.addTimeout(10, reactor)
    assert time.monotonic() - started >= 0.25


@pytest_twisted.ensureDeferred
async def test_unfinished_frame_is_cut_by_the_frame_timeout(loopback):
    port = await loopback.listen(factory(frame_timeout=0.3, idle_timeout=60))
    peer = await loopback.connect(port)
    peer.transport.write(b"\x0bMSH|^~\\&|half a message")
    await peer.closed.addTimeout(10, reactor)
    assert peer.frames() == []


@pytest_twisted.ensureDeferred
async def test_connections_past_the_limit_are_closed(loopback):
    served = factory(max_connections=2)
    port = await loopback.listen(served)
    first, second = await loopback.connect(port), await loopback.connect(port)
    for i, peer in enumerate((first, second)):
        peer.transport.write(framed(adt(f"K{i}").encode()))
        await peer.wait_frames(1)
    extra = await loopback.connect(port)
    extra.transport.write(framed(adt("K2").encode()))
    await extra.closed.addTimeout(10, reactor)
    assert extra.frames() == []
    first.transport.loseConnection()
    await first.closed
    for _ in range(200):  # the server side sees the close a moment later
        if len(served.connections) < 2:
            break
        await pause()
    again = await loopback.connect(port)
    again.transport.write(framed(adt("K3").encode()))
    await again.wait_frames(1)
    assert control_ids(again) == ["K3"]


@pytest_twisted.ensureDeferred
async def test_acks_in_arrival_order_when_the_handler_finishes_out_of_order(loopback):
    def slower_first(frame):
        index = int(frame.text.split("|")[9][1:])
        return task.deferLater(reactor, 0.05 * (5 - index), build_ack, frame.text, "AA")

    port = await loopback.listen(factory(slower_first))
    peer = await loopback.connect(port)
    peer.transport.write(b"".join(framed(adt(f"O{i}").encode()) for i in range(5)))
    await peer.wait_frames(5)
    assert control_ids(peer) == [f"O{i}" for i in range(5)]


@pytest.mark.parametrize(
    "charset, codec, family, prefix, newline",
    [
        ("UNICODE UTF-8", "utf-8", "ÉLODIE-ÈVE-FRANÇOIS", b"", "\r"),
        ("8859/1", "iso8859-1", "ÉLODIE-ÈVE-FRANÇOIS", b"", "\r"),
        ("8859/15", "iso8859-15", "ŒDIPE-ÉCŒURÉ-ÇA", b"", "\r"),
        ("UNICODE UTF-8", "utf-8", "BŒUF-GÉRÔME", b"\xef\xbb\xbf", "\r"),
        ("8859/1", "iso8859-1", "JÉRÔME-ÇA", b"", "\n"),
        ("8859/15", "iso8859-15", "CŒUR-ÉTÉ", b"", "\r\n"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_accented_names_survive(loopback, charset, codec, family, prefix, newline):
    received = []

    def echo_name(frame):
        received.append(frame)
        patient_name = fields(frame.text, "PID")[5]
        return defer.succeed(build_ack(frame.text, "AE") + "\rZPN|" + patient_name)

    port = await loopback.listen(factory(echo_name, default_encoding="ascii"))
    peer = await loopback.connect(port)
    message = adt("E1", family=family, charset=charset, newline=newline)
    peer.transport.write(framed(prefix + message.encode(codec)))
    await peer.wait_frames(1)
    [frame] = received
    assert frame.encoding == codec
    assert f"||{family}^JEAN" in frame.text and frame.text.count("\r") == 3
    ack = peer.frames()[0].decode(codec)
    assert fields(ack, "ZPN")[1] == f"{family}^JEAN^^^^^L"
    assert fields(ack, "MSH")[17] == charset


@pytest_twisted.ensureDeferred
async def test_blocking_client_round_trip(loopback):
    port = await loopback.listen(factory())

    def talk():
        with BlockingMLLPClient("127.0.0.1", port, timeout=10) as client:
            return [client.send(adt(f"B{i}", family="NOËL")) for i in range(3)]

    answers = await threads.deferToThread(talk)
    assert [msa(a) for a in answers] == [("AA", "B0"), ("AA", "B1"), ("AA", "B2")]
    assert all("\r" in a and "\n" not in a for a in answers)


@pytest_twisted.ensureDeferred
async def test_twisted_client_send_and_send_all(loopback):
    from twisted.internet import endpoints

    from mllp.client import send, send_all

    port = await loopback.listen(factory())
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
    assert msa(await send(endpoint, adt("T1"))) == ("AA", "T1")
    answers = await send_all(endpoint, [adt(f"T{i}", newline="\n") for i in range(2, 6)])
    assert [msa(a)[1] for a in answers] == ["T2", "T3", "T4", "T5"]


@pytest_twisted.ensureDeferred
async def test_twisted_client_times_out_on_a_silent_peer(loopback):
    from twisted.internet import endpoints

    from mllp.client import AckTimeout, send

    silent = factory(lambda frame: defer.Deferred())
    port = await loopback.listen(silent)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
    with pytest.raises(AckTimeout):
        await send(endpoint, adt("Q1"), timeout=0.3)


@pytest_twisted.ensureDeferred
async def test_drain_answers_in_flight_frames_before_it_fires(loopback):
    gate = defer.Deferred()

    def held(frame):
        return gate.addCallback(lambda _: build_ack(frame.text, "AA"))

    served = factory(held)
    port = await loopback.listen(served)
    peer = await loopback.connect(port)
    peer.transport.write(framed(adt("Z1").encode()))
    while served.inFlight == 0:
        await pause()
    drained = served.drain(timeout=10)
    await pause(0.05)
    assert not drained.called
    gate.callback(None)
    await drained
    await peer.closed.addTimeout(10, reactor)
    assert control_ids(peer) == ["Z1"]


@pytest_twisted.ensureDeferred
async def test_accepted_connections_have_tcp_nodelay(loopback):
    """Pipelined senders must not wait on Nagle for the ACK of a second batch."""
    import socket
    f = factory()
    port = await loopback.listen(f)
    peer = await loopback.connect(port)
    peer.transport.write(framed(adt("N1").encode()))
    await peer.wait_frames(1)
    (server_side,) = f.connections
    sock = server_side.transport.getHandle()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest_twisted.ensureDeferred
async def test_an_ack_is_sent_when_answered_not_a_reactor_turn_later(loopback):
    """Twisted's write() queues and has the reactor watch the socket (two epoll_ctl calls and a turn per
    ACK): the listener sends an ACK at once when nothing is queued before it."""
    gate = defer.Deferred()
    served = factory(lambda frame: gate.addCallback(lambda _: build_ack(frame.text, "AA")))
    port = await loopback.listen(served)
    peer = await loopback.connect(port)
    peer.transport.write(framed(adt("W1").encode()))
    while served.inFlight == 0:
        await pause()
    (server_side,) = served.connections
    gate.callback(None)
    transport = server_side.transport
    assert (transport.dataBuffer, transport._tempDataBuffer) == (b"", [])
    assert transport not in reactor.getWriters()
    await peer.wait_frames(1)
    assert control_ids(peer) == ["W1"]


@pytest_twisted.ensureDeferred
async def test_write_now_keeps_the_order_of_what_is_queued(loopback):
    """A peer that does not read fills the socket: what write_now could not send is queued, and what comes
    after goes behind it, never before."""
    from mllp.frame import write_now

    served = factory()
    port = await loopback.listen(served)
    peer = await loopback.connect(port)
    peer.transport.write(framed(adt("O1").encode()))
    await peer.wait_frames(1)
    (server_side,) = served.connections
    import socket
    server_side.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    peer.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    peer.transport.pauseProducing()
    big = b"0123456789abcdef" * (64 << 10)      # 1 MiB: more than the small socket buffers take
    write_now(server_side.transport, big)
    assert server_side.transport in reactor.getWriters()   # the rest waits for the reactor
    write_now(server_side.transport, b"tail")
    before = len(peer.received)
    peer.transport.resumeProducing()
    deadline = time.monotonic() + 20
    while len(peer.received) < before + len(big) + 4 and time.monotonic() < deadline:
        await pause(0.01)
    assert peer.received[before:] == big + b"tail"
