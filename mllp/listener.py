"""The MLLP listener: frames in, one ACK out per frame, in arrival order, per connection.

Behaviour at the edges (the choices, written down once):

* Too long (``max_frame_bytes``): the frame is skipped to its end without being buffered, answered
  ``AR`` (ERR-3 ``102``, the code HL7 has for a value longer than allowed; never ``207``, which would
  make the sender retry it forever) from its first bytes (so MSA-2 still echoes MSH-10), and the
  connection **keeps serving**:
  the sender gets a definite answer and can go on with its next message. A frame that never ends is
  cut by ``frame_timeout``.
* Undecodable (MSH-18 does not match the bytes) or no MSH: ``AR``, handler not called. MSH-18
  naming no character set the listener reads (``IDNA``, NUL bytes): ``AR`` 203 on MSH-18.
* The handler's Deferred fails (or the handler raises): ``AE``, ERR-3 = 207, "store unavailable,
  retry later"; the frame is never dropped silently.
* Anything else that goes wrong while one frame is handled here (a bug of ours, whatever the frame
  held) is logged once and answered ``AR`` 207 for that frame alone: no frame's content ends the
  connection or leaves a frame behind it unanswered.
* Half-close: a peer that shuts down its sending side after its last frame (``nc -q1``,
  ``shutdown(SHUT_WR)``) still gets every ACK it is owed; the connection is closed once they are
  written (over TLS too, see ``mllp.endpoints``).
* ``on_ack(ack_text, written)`` (optional, on the factory) is told of every ACK once it is written
  to the transport, or could not be because the peer was gone: the metrics count ACKs sent, not
  ACKs built.
* ``idle_timeout``: a connection that sends nothing while no ACK is owed is closed. While an ACK is
  owed the clock does not run: the wait is ours, not the peer's.
* ``frame_timeout``: a frame must be complete within this many seconds of its start byte; otherwise
  the connection is closed (the partial frame is dropped and logged, its sender will resend it).
* ``max_connections``: a connection past the limit is closed at once (aborted), before any byte is
  read, and logged. So is any connection made while draining.
* Back-pressure: past ``max_pending`` unanswered frames on one connection, reading pauses until
  ACKs go out.
* ACKs are encoded in the frame's encoding (characters it cannot carry become ``?``), and sent with
  a final ``\\r`` segment terminator.
* Logs carry sizes, peers, counts and codes, never message content (that is DEBUG, at most).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import structlog
from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from mllp.ack import AckError, build_ack
from mllp.decoding import (
    UndecodableFrame,
    codec_for_charset,
    decode_frame,
    decode_leniently,
    is_text_codec,
    read_charset,
)
from mllp.frame import END_BLOCK, START_BLOCK, InboundFrame, MLLPReceiver, write_now

log = structlog.get_logger("pamgate.mllp")

STORE_UNAVAILABLE = AckError("", 0, 0, None, 207, "E", "store unavailable, retry later")
# A bug of ours met while reading one frame: final (AR), since the same bytes would meet it again.
READ_FAILED = AckError("", 0, 0, None, 206, "E",
                       "internal error while reading the message: nothing was applied")


@dataclass(frozen=True)
class ListenerSettings:
    name: str = "mllp"  # shown in logs and as InboundFrame.listener: use the endpoint string
    max_frame_bytes: int = 1 << 20
    idle_timeout: float | None = 300.0  # None: never
    frame_timeout: float | None = 30.0  # None: never
    max_connections: int = 256
    default_encoding: str = "utf-8"
    force_encoding: str | None = None
    max_pending: int = 64  # unanswered frames per connection before reading pauses

    def __post_init__(self) -> None:
        # A wrong value stops the start with one line naming it.
        for key in ("max_frame_bytes", "max_connections", "max_pending"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, not {getattr(self, key)!r}")
        for key in ("idle_timeout", "frame_timeout"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"{key} must be positive or None, not {value!r}")
        for key in ("default_encoding", "force_encoding"):
            value = getattr(self, key)
            if value is not None and not is_text_codec(value):
                raise ValueError(f"{key}: unknown character set {value!r}")


def _peer_name(addr) -> str:
    host, port = getattr(addr, "host", None), getattr(addr, "port", None)
    if host is None:
        return str(addr)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Answer:
    """One frame's place in the connection's ACK queue."""

    __slots__ = ("payload", "text")

    def __init__(self) -> None:
        self.payload: bytes | None = None
        self.text = ""


@implementer(IHalfCloseableProtocol)
class MLLPServerProtocol(MLLPReceiver):
    """One MLLP connection: frames in, ACKs out in the order the frames came. It decodes each frame (MSH-18,
    the listener's default and forced encodings), answers AR itself for a frame it cannot decode or that is
    too long, and passes the rest to the factory's handler (an `InboundFrame` in, a Deferred of the ACK out).
    It owns its connection's buffer, queue of answers, timers and counters; it knows nothing of consent or of
    the store. The framing hooks of `MLLPReceiver` (`frameReceived`, `frameTooLong`, `garbageDiscarded`, …)
    are the ones to override."""
    def __init__(self, factory: MLLPServerFactory, peer: str) -> None:
        super().__init__()
        self.factory = factory
        self.settings = factory.settings
        self.MAX_LENGTH = self.settings.max_frame_bytes
        self.peer = peer
        self.clock = factory.clock
        self._answers: deque[_Answer] = deque()
        self._timer = None
        self._frameStartedAt = 0.0
        self._lastActivity = 0.0
        self._readingStopped = False  # set by the factory when draining
        self._closed = False
        self._readClosed = False  # the peer shut down its sending side (half-close)
        self.framesReceived = 0
        self.acksSent = 0
        self.garbageBytes = 0
        self._warnedGarbage = False

    # -- connection ----------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        self._lastActivity = self.clock.seconds()
        # ACKs of consecutive batches are separate small writes: without TCP_NODELAY, Nagle holds the second
        # until the sender acknowledges the first (up to its delayed-ACK timer, 40 ms on Linux) when the
        # sender pipelines. Through TLS the wrapped transport is asked.
        tcp = getattr(self.transport, "setTcpNoDelay", None) or getattr(
            getattr(self.transport, "transport", None), "setTcpNoDelay", None)
        if tcp is not None:
            try:
                tcp(True)
            except OSError:
                pass    # not a TCP socket (a test transport, a UNIX socket)
        log.info("mllp.connection_opened", listener=self.settings.name, peer=self.peer,
                 connections=len(self.factory.connections))
        self._schedule()

    def readConnectionLost(self) -> None:
        """The peer will send nothing more: answer what it is owed, then close."""
        if self._readClosed:
            return
        self._readClosed = True
        log.info("mllp.peer_half_closed", listener=self.settings.name, peer=self.peer,
                 owed=len(self._answers))
        if self.inFrame:  # its end can never come
            size = self.bufferedFrameSize()
            self.incompleteFrameLost(size)
        self._closeIfDone()

    def writeConnectionLost(self) -> None:
        """Nothing to do: we only close our side once every ACK is written."""

    def _closeIfDone(self) -> None:
        if self._readClosed and not self._answers and not self._closed:
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self._closed = True
        if self._readClosed and self.inFrame:
            self._inFrame = False  # already reported by readConnectionLost
        super().connectionLost(reason)
        self._cancelTimer()
        self.factory.connections.discard(self)
        log.info("mllp.connection_closed", listener=self.settings.name, peer=self.peer,
                 frames=self.framesReceived, acks=self.acksSent,
                 unanswered=len(self._answers), bytes_outside_frames=self.garbageBytes)
        self.factory._checkDrained()

    # -- framing hooks -------------------------------------------------------------------------

    def garbageDiscarded(self, data: bytes) -> None:
        self._lastActivity = self.clock.seconds()
        # Whitespace between frames is common (a newline after 0x1C 0x0D) and harmless. Otherwise
        # warn once per connection, so a peer spewing bytes cannot flood the log; the total goes
        # into mllp.connection_closed.
        self.garbageBytes += len(data)
        warn = not self._warnedGarbage and bool(data.strip())
        self._warnedGarbage = self._warnedGarbage or warn
        level = log.warning if warn else log.debug
        level("mllp.bytes_outside_frame", listener=self.settings.name, peer=self.peer,
              size=len(data))

    def frameStarted(self) -> None:
        self._frameStartedAt = self._lastActivity = self.clock.seconds()
        self._schedule()

    def incompleteFrameLost(self, size: int) -> None:
        log.warning("mllp.incomplete_frame_at_close", listener=self.settings.name, peer=self.peer,
                    size=size)

    def frameTooLong(self, head: bytes, size: int) -> None:
        self.framesReceived += 1
        answer = self._enqueue()
        try:
            log.warning("mllp.frame_too_long", listener=self.settings.name, peer=self.peer,
                        size=size, limit=self.MAX_LENGTH)
            error = AckError("", 0, 0, None, 102, "E",
                             f"message of {size} bytes exceeds the limit of {self.MAX_LENGTH} bytes")
            self._reject(head, error, answer)
        except Exception:  # noqa: BLE001 — the boundary: one frame never ends the connection
            self._readFailed(Failure(), head, answer)

    def frameReceived(self, raw: bytes) -> None:
        self.framesReceived += 1
        self._lastActivity = self.clock.seconds()
        answer = self._enqueue()  # its place in the ACK order, whatever happens next
        try:
            self._handleFrame(raw, answer)
        except Exception:  # noqa: BLE001 — the boundary: one frame never ends the connection
            self._readFailed(Failure(), raw, answer)

    def _handleFrame(self, raw: bytes, answer: _Answer) -> None:
        try:
            decoded = decode_frame(raw, default_encoding=self.settings.default_encoding,
                                   force_encoding=self.settings.force_encoding)
        except UndecodableFrame as exc:
            log.warning("mllp.frame_rejected", listener=self.settings.name, peer=self.peer,
                        size=len(raw), reason=type(exc).__name__, detail=str(exc))
            segment, sequence, field = exc.location
            self._reject(raw, AckError(segment, sequence, field, None, exc.code, "E", str(exc)),
                         answer)
            return
        if decoded.fallback:
            log.info("mllp.charset_fallback", listener=self.settings.name, peer=self.peer,
                     declared=decoded.declared, used=decoded.encoding)
        inbound = InboundFrame(raw=raw, text=decoded.text, encoding=decoded.encoding,
                               peer=self.peer, listener=self.settings.name)
        answer.text = inbound.text
        self.factory.inFlight += 1
        d = defer.maybeDeferred(self.factory.handler, inbound)
        d.addBoth(self._handlerDone, answer, inbound)
        d.addBoth(self.factory._frameDone)

    def _readFailed(self, failure: Failure, raw: bytes, answer: _Answer) -> None:
        """A bug of ours while reading one frame: log it once, answer that frame AR, go on."""
        log.error("mllp.frame_failed", listener=self.settings.name, peer=self.peer, size=len(raw),
                  error=failure.type.__name__)
        log.debug("mllp.frame_failure_detail", failure=failure.getTraceback())
        if answer.payload is not None:
            return  # answered already; the failure came after
        try:
            ack = build_ack(decode_leniently(raw), "AR", [READ_FAILED])
        except Exception:  # noqa: BLE001 — still answer, with what needs no reading
            ack = build_ack(None, "AR", [READ_FAILED])
        self._answer(ack, answer, "ascii")
        self.factory.rejected(raw, READ_FAILED.text, answer.text)

    # -- answers -------------------------------------------------------------------------------

    def _handlerDone(self, result, answer: _Answer, inbound: InboundFrame) -> None:
        # one callback for the ACK or the failure, and for a bug of ours in either (fewer steps in the Deferred
        # that every frame goes through)
        try:
            if isinstance(result, Failure):
                self._handlerFailed(result, answer, inbound)
            else:
                self._handlerAnswered(result, answer, inbound)
        except Exception:  # noqa: BLE001
            self._answerFailed(Failure(), answer)

    def _handlerAnswered(self, ack, answer: _Answer, inbound: InboundFrame) -> None:
        if not isinstance(ack, str):
            log.error("mllp.handler_answer_invalid", listener=self.settings.name, peer=self.peer,
                      type=type(ack).__name__)
            ack = build_ack(inbound.text, "AE", [STORE_UNAVAILABLE])
        self._answer(ack, answer, inbound.encoding)

    def _handlerFailed(self, failure: Failure, answer: _Answer, inbound: InboundFrame) -> None:
        log.error("mllp.handler_failed", listener=self.settings.name, peer=self.peer,
                  size=len(inbound.raw), error=failure.type.__name__)
        log.debug("mllp.handler_failure_detail", failure=failure.getTraceback())
        self._answer(build_ack(inbound.text, "AE", [STORE_UNAVAILABLE]), answer, inbound.encoding)

    def _answerFailed(self, failure: Failure, answer: _Answer) -> None:
        # A bug of ours; still answer, or every later ACK of this connection would wait forever.
        log.critical("mllp.answer_failed", listener=self.settings.name, peer=self.peer,
                     error=failure.type.__name__)
        log.debug("mllp.answer_failure_detail", failure=failure.getTraceback())
        if answer.payload is None:
            try:
                ack = build_ack(answer.text, "AE", [STORE_UNAVAILABLE])
            except Exception:  # noqa: BLE001
                ack = build_ack(None, "AE", [STORE_UNAVAILABLE])
            self._answer(ack, answer, "ascii")

    def _reject(self, raw: bytes, error: AckError, answer: _Answer) -> None:
        """Answer AR by ourselves, from whatever MSH can be read in ``raw``."""
        text = decode_leniently(raw)
        try:
            codec = codec_for_charset(read_charset(raw)) or self.settings.default_encoding
        except UndecodableFrame:
            codec = self.settings.default_encoding
        self._answer(build_ack(text, "AR", [error]), answer, codec)
        self.factory.rejected(raw, error.text, answer.text)

    def _enqueue(self) -> _Answer:
        answer = _Answer()
        self._answers.append(answer)
        if len(self._answers) >= self.settings.max_pending and not self.paused:
            self.pauseProducing()
        return answer

    def _answer(self, ack_text: str, answer: _Answer, encoding: str) -> None:
        if not ack_text.endswith("\r"):
            ack_text += "\r"
        try:
            body = ack_text.encode(encoding, "replace")
        except (UnicodeError, LookupError):
            body = ack_text.encode("utf-8", "replace")
        # build_ack escapes what it echoes; this is the last guard of the framing, whoever built it.
        body = body.replace(START_BLOCK, b"?").replace(b"\x1c", b"?")
        answer.text = ack_text
        answer.payload = START_BLOCK + body + END_BLOCK
        self._flush()

    def _flush(self) -> None:
        # ACKs leave in the order their frames arrived, whatever order the handlers finish in.
        written = 0
        while self._answers and self._answers[0].payload is not None:
            sent = self._answers.popleft()
            delivered = not self._closed and getattr(self.transport, "connected", True)
            if delivered:
                write_now(self.transport, sent.payload)
                written += 1
            self.factory._acknowledged(sent.text, delivered)
        if written:
            self.acksSent += written
            self._lastActivity = self.clock.seconds()
        if self.paused and not self._readingStopped and len(self._answers) < self.settings.max_pending:
            self.resumeProducing()
        self._schedule()
        if not self._answers:
            self._closeIfDone()
            self.factory._checkDrained()

    @property
    def owesAnswers(self) -> bool:
        return bool(self._answers)

    # -- timeouts ------------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        if self._closed or self.paused or self._readClosed:
            return None  # we stopped reading: not the peer's fault
        if self.inFrame:
            if self.settings.frame_timeout is None:
                return None
            return self._frameStartedAt + self.settings.frame_timeout
        if self._answers or self.settings.idle_timeout is None:
            return None
        return self._lastActivity + self.settings.idle_timeout

    def _schedule(self) -> None:
        # One timer per connection, moved only when it would fire too late: activity updates a
        # timestamp, and the timer re-checks when it fires.
        deadline = self._deadline()
        if deadline is None:
            self._cancelTimer()
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= deadline:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self._timeUp)

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timeUp(self) -> None:
        self._timer = None
        deadline = self._deadline()
        now = self.clock.seconds()
        if deadline is None:
            return
        if now < deadline:
            self._schedule()
            return
        if self.inFrame:
            log.warning("mllp.frame_timeout", listener=self.settings.name, peer=self.peer,
                        size=self.bufferedFrameSize(), timeout=self.settings.frame_timeout)
        else:
            log.info("mllp.idle_timeout", listener=self.settings.name, peer=self.peer,
                     timeout=self.settings.idle_timeout, frames=self.framesReceived)
        self.transport.loseConnection()

    def resumeProducing(self) -> None:
        if self.inFrame:
            self._frameStartedAt = self.clock.seconds()  # the pause was ours
        if self._readClosed:
            # Nothing more to read from the socket (reading again would see its end again):
            # only the frames already buffered are delivered.
            self.paused = False
            self.dataReceived(b"")
        else:
            super().resumeProducing()
        self._schedule()

    def stopReading(self) -> None:
        """Read no more frames (shutdown); answers already owed still go out."""
        self._readingStopped = True
        if not self.paused and not self._closed:
            self.pauseProducing()
        self._cancelTimer()


class _Refused(Protocol):
    """Closes a connection the listener will not serve (limit reached, or shutting down).

    A protocol rather than ``buildProtocol`` returning None, which TLS wrapping does not support.
    Aborted rather than closed: a TLS close would first wait for a handshake the peer may never do.
    """

    def connectionMade(self) -> None:
        self.transport.abortConnection()


class MLLPServerFactory(Factory):
    """Serves MLLP on any Twisted stream endpoint; ``handler(InboundFrame) -> Deferred[str]``."""

    protocol = MLLPServerProtocol

    def __init__(self, handler, *, settings: ListenerSettings | None = None, clock=None,
                 on_ack=None, on_rejected=None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.handler = handler
        self.on_ack = on_ack
        # on_rejected(raw, error, ack): a frame answered AR here, without the handler, is journaled through
        # it, with the ACK text it was sent
        self.on_rejected = on_rejected
        self.settings = settings or ListenerSettings()
        self.clock = clock
        self.connections: set[MLLPServerProtocol] = set()
        self.inFlight = 0  # handler calls not finished yet, over all connections
        self.accepting = True
        self._drainWaiters: list[defer.Deferred] = []
        self._closeWhenDrained = False

    def buildProtocol(self, addr):
        peer = _peer_name(addr)
        if not self.accepting:
            log.info("mllp.connection_refused", listener=self.settings.name, peer=peer,
                     reason="draining")
            return _Refused()
        if len(self.connections) >= self.settings.max_connections:
            log.warning("mllp.connection_refused", listener=self.settings.name, peer=peer,
                        reason="max_connections", limit=self.settings.max_connections)
            return _Refused()
        return self.protocol(self, peer)

    def _acknowledged(self, ack_text: str, written: bool) -> None:
        if self.on_ack is None:
            return
        try:
            self.on_ack(ack_text, written)
        except Exception:  # noqa: BLE001 — counting must never cost an ACK
            log.exception("mllp.on_ack_failed", listener=self.settings.name)

    def rejected(self, raw: bytes, error: str, ack: str) -> None:
        if self.on_rejected is None:
            return
        try:
            self.on_rejected(raw, error, ack)
        except Exception as e:  # noqa: BLE001 — the AR is already on its way; the journal's failure is logged
            log.error("mllp.journal_rejected_failed", listener=self.settings.name, error=type(e).__name__)

    def _frameDone(self, _=None) -> None:
        self.inFlight -= 1
        self._checkDrained()

    # -- graceful shutdown ---------------------------------------------------------------------

    def stopAccepting(self) -> None:
        """Refuse new connections and stop reading new frames on the open ones."""
        self.accepting = False
        for connection in list(self.connections):
            connection.stopReading()

    def drain(self, timeout: float | None = 30.0) -> defer.Deferred:
        """Stop accepting, wait until every frame already read is answered, then close.

        The Deferred fires (with None) once no handler call is pending, every owed ACK is written
        and every connection is closed (so the ACK bytes are flushed). Past ``timeout`` seconds the
        remaining connections are aborted and it fires anyway; the count of unanswered frames is
        logged. Frames buffered but not yet read are not answered, so their senders resend them.
        Call it after stopping the listening port.
        """
        self.stopAccepting()
        self._closeWhenDrained = True
        d = defer.Deferred()
        self._drainWaiters.append(d)
        log.info("mllp.draining", listener=self.settings.name, in_flight=self.inFlight,
                 connections=len(self.connections))
        if timeout is not None:
            timer = self.clock.callLater(timeout, self._drainTimedOut)

            def cancelTimer(result):
                if timer.active():
                    timer.cancel()
                return result

            d.addBoth(cancelTimer)
        self._checkDrained()
        return d

    def _drainTimedOut(self) -> None:
        log.warning("mllp.drain_timeout", listener=self.settings.name, in_flight=self.inFlight,
                    connections=len(self.connections))
        for connection in list(self.connections):
            connection.transport.abortConnection()
        self._fireDrained()

    def _checkDrained(self) -> None:
        if not self._closeWhenDrained or self.inFlight:
            return
        for connection in list(self.connections):
            if not connection.owesAnswers and not connection.transport.disconnecting:
                connection.transport.loseConnection()
        if not self.connections:
            self._fireDrained()

    def _fireDrained(self) -> None:
        waiters, self._drainWaiters = self._drainWaiters, []
        if waiters:
            log.info("mllp.drained", listener=self.settings.name, in_flight=self.inFlight)
        for d in waiters:
            d.callback(None)
