"""The listener protocol through StringTransport and a fake clock: no socket, no waiting."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from mllp.ack import build_ack
from mllp.listener import ListenerSettings, MLLPServerFactory, MLLPServerProtocol
from tests.mllp.support import adt, fields, framed, msa, split_frames


class Handler:
    """Records frames; answers at once (``auto``) or when the test fires the Deferred."""

    def __init__(self, auto: bool = True) -> None:
        self.auto = auto
        self.frames = []
        self.pending: list[defer.Deferred] = []

    def __call__(self, frame):
        self.frames.append(frame)
        if self.auto:
            return defer.succeed(build_ack(frame.text, "AA"))
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def ack(self, index: int) -> None:
        self.pending[index].callback(build_ack(self.frames[index].text, "AA"))


def serve(handler=None, port=40000, **overrides):
    clock = task.Clock()
    factory = MLLPServerFactory(handler or Handler(), settings=ListenerSettings(**overrides),
                                clock=clock)
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
    proto.makeConnection(transport)
    return factory, proto, transport, clock


def acks(transport, encoding="utf-8"):
    return [raw.decode(encoding) for raw in split_frames(transport.value())]


def test_frame_fed_byte_by_byte_reaches_the_handler_once():
    handler = Handler()
    _, proto, transport, _ = serve(handler, name="tcp:2575")
    stream = framed(adt("B1", family="ÉMILE").encode())
    for i in range(len(stream)):
        proto.dataReceived(stream[i : i + 1])
    [frame] = handler.frames
    assert frame.raw == adt("B1", family="ÉMILE").encode()
    assert "ÉMILE" in frame.text and frame.encoding == "utf-8"
    assert (frame.peer, frame.listener) == ("127.0.0.1:40000", "tcp:2575")
    [ack] = acks(transport)
    assert msa(ack) == ("AA", "B1") and ack.endswith("\r")


def test_acks_leave_in_arrival_order_whatever_order_handlers_finish():
    handler = Handler(auto=False)
    _, proto, transport, _ = serve(handler)
    proto.dataReceived(b"".join(framed(adt(f"C{i}").encode()) for i in range(4)))
    handler.ack(2)
    handler.ack(1)
    assert transport.value() == b""  # the first is still owed
    handler.ack(0)
    assert [msa(a)[1] for a in acks(transport)] == ["C0", "C1", "C2"]
    handler.ack(3)
    assert [msa(a)[1] for a in acks(transport)] == ["C0", "C1", "C2", "C3"]


def test_failed_handler_gives_ae_207():
    handler = Handler(auto=False)
    _, proto, transport, _ = serve(handler)
    proto.dataReceived(framed(adt("F1").encode()))
    handler.pending[0].errback(RuntimeError("database is locked"))
    [ack] = acks(transport)
    assert msa(ack) == ("AE", "F1")
    assert fields(ack, "ERR")[3] == "207^Application internal error^HL70357"
    assert "store unavailable" in fields(ack, "ERR")[8]


def test_handler_raising_or_returning_nonsense_still_answers():
    def raising(frame):
        raise ValueError("boom")

    _, proto, transport, _ = serve(raising)
    proto.dataReceived(framed(adt("R1").encode()))
    assert msa(acks(transport)[0]) == ("AE", "R1")
    _, proto, transport, _ = serve(lambda frame: defer.succeed(None))
    proto.dataReceived(framed(adt("R2").encode()))
    assert msa(acks(transport)[0]) == ("AE", "R2")


def test_rejects_without_calling_the_handler():
    handler = Handler()
    _, proto, transport, _ = serve(handler, max_frame_bytes=2000)
    proto.dataReceived(
        framed(b"no header here")
        + framed(adt("U1", family="HÉLÈNE").encode("latin-1"))  # says UTF-8, is latin-1
        + framed(adt("L1", family="X" * 3000).encode())
        + framed(adt("OK").encode())
    )
    answers = acks(transport, "latin-1")
    assert [msa(a) for a in answers] == [("AR", ""), ("AR", "U1"), ("AR", "L1"), ("AA", "OK")]
    assert fields(answers[0], "ERR")[2:4] == ["MSH^1", "100^Segment sequence error^HL70357"]
    assert fields(answers[1], "ERR")[2] == "MSH^1^18"
    assert "exceeds the limit of 2000 bytes" in fields(answers[2], "ERR")[8]
    assert [f.text.split("|")[9] for f in handler.frames] == ["OK"]
    assert not transport.disconnecting  # the connection keeps serving


def test_ack_is_encoded_like_the_frame():
    def handler(frame):
        return defer.succeed(build_ack(frame.text, "AE", []) + "\rZZZ|Œ€é")

    _, proto, transport, _ = serve(handler)
    proto.dataReceived(framed(adt(charset="8859/15").encode("iso8859-15")))
    [raw] = split_frames(transport.value())
    assert raw.endswith("ZZZ|Œ€é\r".encode("iso8859-15"))
    assert b"|8859/15" in raw


def test_idle_connection_is_closed_but_not_while_an_ack_is_owed():
    handler = Handler(auto=False)
    _, proto, transport, clock = serve(handler, idle_timeout=0.3)
    proto.dataReceived(framed(adt().encode()))
    clock.advance(5)
    assert not transport.disconnecting  # waiting for us, not idle
    handler.ack(0)
    clock.advance(0.2)
    proto.dataReceived(b"\n")  # activity moves the deadline
    clock.advance(0.2)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting


def test_mid_frame_timeout_closes_even_if_bytes_trickle_in():
    _, proto, transport, clock = serve(frame_timeout=0.3, idle_timeout=100)
    proto.dataReceived(b"\x0bMSH|")
    for _ in range(2):
        clock.advance(0.1)
        proto.dataReceived(b"x")
    assert not transport.disconnecting
    clock.advance(0.11)
    assert transport.disconnecting


def refused(factory) -> bool:
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    proto.makeConnection(transport)
    return transport.disconnecting and not isinstance(proto, MLLPServerProtocol)


def test_max_connections_refuses_the_extra_one():
    factory, first, *_ = serve(max_connections=1)
    assert refused(factory)
    first.connectionLost(None)
    assert not refused(factory)


def test_back_pressure_pauses_reading_until_acks_go_out():
    handler = Handler(auto=False)
    _, proto, transport, _ = serve(handler, max_pending=2)
    proto.dataReceived(b"".join(framed(adt(f"P{i}").encode()) for i in range(5)))
    assert len(handler.frames) == 2 and transport.producerState == "paused"
    handler.ack(0)
    assert len(handler.frames) == 3 and transport.producerState == "paused"
    handler.ack(1)
    handler.ack(2)
    handler.ack(3)
    handler.ack(4)
    assert transport.producerState == "producing"
    assert [msa(a)[1] for a in acks(transport)] == [f"P{i}" for i in range(5)]


def test_drain_waits_for_in_flight_acks_then_closes():
    handler = Handler(auto=False)
    factory, proto, transport, clock = serve(handler)
    proto.dataReceived(framed(adt("D0").encode()) + framed(adt("D1").encode()))
    drained = factory.drain(timeout=10)
    proto.dataReceived(framed(adt("D2").encode()))  # read after the drain began: not taken
    assert not drained.called and len(handler.frames) == 2
    assert refused(factory)
    handler.ack(1)
    assert not drained.called
    handler.ack(0)
    assert [msa(a)[1] for a in acks(transport)] == ["D0", "D1"]
    assert transport.disconnecting and not drained.called
    proto.connectionLost(None)
    assert drained.called


def test_drain_gives_up_after_its_timeout():
    handler = Handler(auto=False)
    factory, proto, transport, clock = serve(handler)
    proto.dataReceived(framed(adt().encode()))
    drained = factory.drain(timeout=1)
    clock.advance(1)
    assert drained.called


# -- property: every complete frame is answered exactly once -----------------------------------

_piece = st.one_of(
    st.binary(max_size=30),
    st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\x1c\r", b"\x00", b"\n"]),
    st.builds(lambda i: adt(f"H{i}").encode(), st.integers(0, 99)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_piece, max_size=30), st.lists(st.integers(min_value=0), max_size=20))
def test_random_streams_get_one_ack_per_complete_frame(pieces, points):
    stream = b"".join(pieces)
    handler = Handler()
    _, proto, transport, _ = serve(handler, max_frame_bytes=300)
    cuts = sorted({p % (len(stream) + 1) for p in points})
    bounds = [0, *cuts, len(stream)]
    for a, b in zip(bounds, bounds[1:]):
        proto.dataReceived(stream[a:b])
    expected = split_frames(stream)
    answers = acks(transport, "latin-1")
    assert len(answers) == len(expected)
    for frame, answer in zip(expected, answers):
        code = msa(answer)[0]
        assert code in ("AA", "AR")
        if code == "AA":
            assert frame.startswith(b"MSH") and len(frame) <= 300


def test_a_bug_met_on_one_frame_answers_that_frame_and_serving_goes_on():
    # The listener's boundary: whatever goes wrong while one frame is read is that frame's AR alone.
    class Buggy(MLLPServerProtocol):
        def _handleFrame(self, raw, answer):
            if b"|BUG1|" in raw:
                raise KeyError("a defect of ours")
            super()._handleFrame(raw, answer)

    handler = Handler()
    factory = MLLPServerFactory(handler, settings=ListenerSettings(), clock=task.Clock())
    factory.protocol = Buggy
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(framed(adt("OK0").encode()) + framed(adt("BUG1").encode())
                       + framed(adt("OK2").encode()))
    answers = acks(transport)
    assert [msa(a) for a in answers] == [("AA", "OK0"), ("AR", "BUG1"), ("AA", "OK2")]
    # 206, final: a defect of ours, not "store unavailable" (207), which the sender would retry forever
    assert fields(answers[1], "ERR")[3].startswith("206^")
    assert not transport.disconnecting


def test_half_close_with_reading_paused_answers_every_buffered_frame_then_closes():
    handler = Handler(auto=False)
    written = []
    factory = MLLPServerFactory(handler, settings=ListenerSettings(max_pending=2), clock=task.Clock(),
                                on_ack=lambda text, ok: written.append(ok))
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40002))
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b"".join(framed(adt(f"P{i}").encode()) for i in range(4)))
    assert len(handler.frames) == 2 and proto.paused
    proto.readConnectionLost()
    assert not transport.disconnecting  # two ACKs owed, two frames still buffered
    handler.ack(0)
    handler.ack(1)
    handler.ack(2)
    assert not transport.disconnecting
    handler.ack(3)
    assert [msa(a)[1] for a in acks(transport)] == ["P0", "P1", "P2", "P3"]
    assert transport.disconnecting and written == [True] * 4
