"""The framing state machine, driven through StringTransport with no socket."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from mllp.frame import HEAD_BYTES, MLLPReceiver
from tests.mllp.support import framed, split_frames


class Recorder(MLLPReceiver):
    MAX_LENGTH = 64

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple] = []

    def frameReceived(self, frame):
        self.events.append(("frame", frame))

    def frameTooLong(self, head, size):
        self.events.append(("too_long", head, size))

    def garbageDiscarded(self, data):
        self.events.append(("garbage", data))

    def incompleteFrameLost(self, size):
        self.events.append(("incomplete", size))

    def frames(self):
        return [e[1] for e in self.events if e[0] == "frame"]


def connected(receiver=None):
    receiver = receiver or Recorder()
    receiver.makeConnection(StringTransport())
    return receiver


def feed_bytewise(receiver, stream):
    for i in range(len(stream)):
        receiver.dataReceived(stream[i : i + 1])


def test_several_frames_in_one_read():
    r = connected()
    r.dataReceived(framed(b"one") + framed(b"two") + framed(b"three"))
    assert r.events == [("frame", b"one"), ("frame", b"two"), ("frame", b"three")]


def test_frames_split_into_single_bytes():
    r = connected()
    feed_bytewise(r, framed(b"MSH|a\rPID|b") + framed(b"second"))
    assert r.frames() == [b"MSH|a\rPID|b", b"second"]


def test_end_pair_split_across_reads():
    r = connected()
    r.dataReceived(b"\x0bhello\x1c")
    assert r.events == []
    r.dataReceived(b"\r")
    assert r.frames() == [b"hello"]


def test_garbage_and_nuls_before_start_are_skipped_and_reported():
    r = connected()
    r.dataReceived(b"\x00\x00junk" + framed(b"msg") + b"\n" + framed(b"next"))
    assert r.events == [
        ("garbage", b"\x00\x00junk"), ("frame", b"msg"), ("garbage", b"\n"), ("frame", b"next"),
    ]


def test_file_separator_without_carriage_return_is_data():
    r = connected()
    r.dataReceived(b"\x0bab\x1cx\x1c\x1c\r")
    assert r.frames() == [b"ab\x1cx\x1c"]


def test_start_byte_inside_a_frame_is_data():
    r = connected()
    r.dataReceived(b"\x0ba\x0bb\x1c\r")
    assert r.frames() == [b"a\x0bb"]


def test_frame_at_the_limit_passes_and_one_byte_more_is_too_long():
    r = connected()
    r.dataReceived(framed(b"x" * 64) + framed(b"y" * 65) + framed(b"ok"))
    assert r.events == [("frame", b"x" * 64), ("too_long", b"y" * 65, 65), ("frame", b"ok")]


def test_too_long_frame_is_not_buffered_and_gets_one_callback():
    r = connected()
    body = b"MSH|" + b"z" * 10_000
    feed_bytewise(r, b"\x0b" + body[:200])
    for i in range(200, len(body), 997):
        r.dataReceived(body[i : i + 997])
        assert len(r._buffer) <= 2  # only a possible half end pair is kept
    r.dataReceived(b"\x1c")
    r.dataReceived(b"\r" + framed(b"after"))
    assert r.events == [("too_long", body[:HEAD_BYTES], len(body)), ("frame", b"after")]


def test_eof_mid_frame_is_reported_with_its_size():
    r = connected()
    r.dataReceived(b"\x0bpartial")
    r.connectionLost(None)
    assert r.events == [("incomplete", 7)]


def test_pause_holds_frames_until_resume():
    class Pausing(Recorder):
        def frameReceived(self, frame):
            super().frameReceived(frame)
            self.pauseProducing()

    r = connected(Pausing())
    r.dataReceived(framed(b"1") + framed(b"2") + framed(b"3"))
    assert r.frames() == [b"1"]
    assert r.transport.producerState == "paused"
    r.resumeProducing()
    assert r.frames() == [b"1", b"2"]
    r.resumeProducing()
    r.resumeProducing()
    assert r.frames() == [b"1", b"2", b"3"]


def test_default_too_long_hook_drops_the_connection():
    class Plain(MLLPReceiver):
        MAX_LENGTH = 4

        def frameReceived(self, frame):
            raise AssertionError("not expected")

    r = Plain()
    r.makeConnection(StringTransport())
    r.dataReceived(framed(b"12345"))
    assert r.transport.disconnecting


# -- property: random streams, random split points --------------------------------------------

_content = st.binary(max_size=120).map(lambda b: b.replace(b"\x1c\r", b"\x1c"))
_garbage = st.binary(max_size=8).map(lambda b: b.replace(b"\x0b", b""))


def _cut(stream: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(stream) + 1) for p in points})
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_garbage, _content), max_size=8), _garbage,
       st.lists(st.integers(min_value=0), max_size=20))
def test_every_frame_of_a_random_stream_is_delivered_once(items, tail, points):
    stream = b"".join(g + framed(c) for g, c in items) + tail
    r = connected()
    for chunk in _cut(stream, points):
        r.dataReceived(chunk)
    delivered = [e for e in r.events if e[0] in ("frame", "too_long")]
    assert len(delivered) == len(items)
    for (kind, *rest), (_, content) in zip(delivered, items):
        if len(content) <= Recorder.MAX_LENGTH:
            assert (kind, rest[0]) == ("frame", content)
        else:
            assert kind == "too_long" and rest[1] == len(content)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=30))
def test_arbitrary_bytes_never_raise_and_match_the_reference_deframer(stream, points):
    r = connected()
    for chunk in _cut(stream, points):
        r.dataReceived(chunk)
    delivered = [e[1] if e[0] == "frame" else e[2] for e in r.events
                 if e[0] in ("frame", "too_long")]
    expected = split_frames(stream)
    assert len(delivered) == len(expected)
    for got, want in zip(delivered, expected):
        assert got == want if isinstance(got, bytes) else got == len(want)
