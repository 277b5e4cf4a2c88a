"""MLLP clients: a Twisted protocol (dispatcher, replay) and a blocking one (CLI, tests, benchmarks).

Both send one message, wait for its ACK, then send the next: no pipelining, which many receivers
do not survive. A ``str`` message is sent with ``\\r`` segment ends (HL7's own); ``bytes`` are sent
as they are. ACKs are decoded as their MSH-18 says, else with the sending encoding.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque

from twisted.internet import defer, endpoints
from twisted.internet.error import ConnectionDone

from mllp.decoding import UndecodableFrame, decode_frame, normalise_segments
from mllp.frame import MLLPReceiver, frame


class MLLPError(Exception):
    """The peer did not answer as MLLP says (closed without an ACK, or too late)."""


class AckTimeout(MLLPError):
    pass


def encode_message(message: str | bytes, encoding: str = "utf-8") -> bytes:
    if isinstance(message, bytes):
        return message
    return normalise_segments(message).encode(encoding) + b"\r"


def decode_ack(raw: bytes, encoding: str = "utf-8") -> str:
    try:
        return decode_frame(raw, default_encoding=encoding).text
    except UndecodableFrame:
        return normalise_segments(raw.decode(encoding, "replace"))


class MLLPClientProtocol(MLLPReceiver):
    """Sends messages one at a time on one connection; ``send`` returns a Deferred of the ACK text."""

    MAX_LENGTH = 16 << 20

    def __init__(self, *, encoding: str = "utf-8", timeout: float | None = 30.0, clock=None):
        super().__init__()
        if clock is None:
            from twisted.internet import reactor as clock
        self.encoding = encoding
        self.timeout = timeout
        self.clock = clock
        self._queue: deque[tuple[bytes, defer.Deferred]] = deque()
        self._waiting: defer.Deferred | None = None
        self._timer = None
        self._lost = None

    def send(self, message: str | bytes) -> defer.Deferred:
        if self._lost is not None:
            return defer.fail(MLLPError(f"connection lost: {self._lost.getErrorMessage()}"))
        d = defer.Deferred()
        self._queue.append((encode_message(message, self.encoding), d))
        self._sendNext()
        return d

    def _sendNext(self) -> None:
        if self._waiting is not None or not self._queue or self.transport is None:
            return
        payload, self._waiting = self._queue.popleft()
        if self.timeout is not None:
            self._timer = self.clock.callLater(self.timeout, self._timedOut)
        self.transport.write(frame(payload))

    def connectionMade(self) -> None:
        self._sendNext()

    def frameReceived(self, raw: bytes) -> None:
        if self._waiting is None:
            return  # an answer nobody asked for: ignore it
        self._stopTimer()
        d, self._waiting = self._waiting, None
        d.callback(decode_ack(raw, self.encoding))
        self._sendNext()

    def frameTooLong(self, head: bytes, size: int) -> None:
        self._failAll(MLLPError(f"ACK of {size} bytes exceeds {self.MAX_LENGTH}"))
        self.transport.abortConnection()

    def _timedOut(self) -> None:
        self._timer = None
        self._failAll(AckTimeout(f"no ACK within {self.timeout} s"))
        # The state of the message is unknown: this connection cannot be trusted any more.
        self.transport.abortConnection()

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _failAll(self, error: Exception) -> None:
        self._stopTimer()
        pending = ([self._waiting] if self._waiting is not None else []) + [d for _, d in self._queue]
        self._waiting = None
        self._queue.clear()
        for d in pending:
            d.errback(error)

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        self._lost = reason if reason is not None else ConnectionDone()
        message = reason.getErrorMessage() if reason is not None else "closed"
        self._failAll(MLLPError(f"connection closed before the ACK: {message}"))


@defer.inlineCallbacks
def send_all(endpoint, messages, *, encoding: str = "utf-8", timeout: float | None = 30.0):
    """Send ``messages`` in order on one connection; a Deferred of the list of ACK texts."""
    protocol = MLLPClientProtocol(encoding=encoding, timeout=timeout)
    yield endpoints.connectProtocol(endpoint, protocol)
    try:
        acks = []
        for message in messages:
            acks.append((yield protocol.send(message)))
        return acks
    finally:
        if protocol.transport is not None:
            protocol.transport.loseConnection()


def send(endpoint, message: str | bytes, *, encoding: str = "utf-8",
         timeout: float | None = 30.0) -> defer.Deferred:
    """Send one message on a new connection to ``endpoint``; a Deferred of the ACK text."""
    return send_all(endpoint, [message], encoding=encoding, timeout=timeout).addCallback(
        lambda acks: acks[0]
    )


class _FrameCollector(MLLPReceiver):
    """The same framing, fed by hand from a blocking socket."""

    MAX_LENGTH = 16 << 20

    def __init__(self) -> None:
        super().__init__()
        self.frames: deque[bytes] = deque()

    def frameReceived(self, raw: bytes) -> None:
        self.frames.append(raw)

    def frameTooLong(self, head: bytes, size: int) -> None:
        raise MLLPError(f"ACK of {size} bytes exceeds {self.MAX_LENGTH}")


class BlockingMLLPClient:
    """A plain-socket MLLP client: ``send`` writes one message and returns its ACK text.

    ``ssl_context`` (an ``ssl.SSLContext``) turns on TLS, with its own client certificate if the
    context carries one. Use it as a context manager, or call ``close``.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.ssl_context = ssl_context
        self._sock: socket.socket | None = None
        self._frames = _FrameCollector()

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        self._sock = sock
        self._frames = _FrameCollector()

    def send_bytes(self, payload: bytes) -> bytes:
        """Send one message's bytes; return the raw ACK (envelope removed)."""
        if self._sock is None:
            self.connect()
        self._sock.sendall(frame(payload))
        return self.receive()

    def receive(self) -> bytes:
        """The next frame from the peer, envelope removed."""
        while not self._frames.frames:
            data = self._sock.recv(65536)
            if not data:
                self.close()
                raise MLLPError("connection closed before the ACK")
            self._frames.dataReceived(data)
        return self._frames.frames.popleft()

    def send(self, message_text: str, encoding: str = "utf-8") -> str:
        return decode_ack(self.send_bytes(encode_message(message_text, encoding)), encoding)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> BlockingMLLPClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
