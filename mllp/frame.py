"""MLLP framing: ``0x0B`` message ``0x1C 0x0D``, one small receiver class in the style of
``twisted.protocols.basic`` (``LineReceiver``, ``IntNStringReceiver``).

Choices, so they are not rediscovered:

* Bytes outside a frame (garbage, NUL padding, a stray ``\\n`` after ``0x1C 0x0D``) are skipped and
  reported to :meth:`MLLPReceiver.garbageDiscarded`.
* A frame ends only on the exact pair ``0x1C 0x0D``. A ``0x1C`` followed by anything else is kept as
  data: ending on a lone ``0x1C`` would cut frames that merely contain the byte and would desynchronise
  the one-ACK-per-frame count. A sender that never sends the ``0x0D`` runs into the listener's
  mid-frame timeout, which is logged.
* A ``0x0B`` inside a frame is data too: the frame boundary is the end pair, never a new start.
* A frame longer than ``MAX_LENGTH`` is not buffered: its first :data:`HEAD_BYTES` are kept (enough to
  read MSH and answer it), the rest is counted and dropped until its end pair, and then
  :meth:`MLLPReceiver.frameTooLong` is called once. So every complete frame gets exactly one callback,
  ``frameReceived`` or ``frameTooLong``, and memory stays bounded whatever the peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.abstract import FileDescriptor
from twisted.internet.protocol import Protocol

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\r"
_FILE_SEPARATOR = 0x1C

#: How much of an over-long frame is kept, so that its MSH can still be answered.
HEAD_BYTES = 4096


@dataclass(frozen=True, slots=True)
class InboundFrame:
    """One complete frame as handed to the listener's handler (see docs/internals.md)."""

    raw: bytes  # as received, without the MLLP envelope
    text: str  # decoded, BOM stripped, segments joined by "\r"
    encoding: str  # the Python codec used, so the ACK goes back in the same one
    peer: str  # host:port
    listener: str  # the listener's name (its endpoint string)


def frame(payload: bytes) -> bytes:
    """Wrap one message in the MLLP envelope."""
    return START_BLOCK + payload + END_BLOCK


def write_now(transport, data: bytes) -> None:
    """``transport.write(data)``, but sent at once when nothing is queued before it.

    Twisted's ``write`` only queues the bytes and has the reactor watch the descriptor for writing: two
    ``epoll_ctl`` calls and a reactor turn per write, which cost more CPU than the ``send`` itself and hold
    an ACK back by that turn. A plain socket or pipe (not TLS, which has its own buffer) whose queue is empty
    is written here; what it does not take (a full buffer, an error) goes through ``write``, which queues
    it, and reports an error as it always does.
    """
    if (isinstance(transport, FileDescriptor) and transport.connected and not transport.disconnecting
            and not transport._writeDisconnected and not transport.dataBuffer and not transport._tempDataBuffer):
        sent = transport.writeSomeData(data)
        if sent.__class__ is int and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


class MLLPReceiver(Protocol):
    """A protocol that receives MLLP frames.

    Subclasses override :meth:`frameReceived`, and may override :meth:`frameTooLong`,
    :meth:`garbageDiscarded`, :meth:`frameStarted` and :meth:`incompleteFrameLost`.
    ``pauseProducing``/``resumeProducing`` stop and restart the delivery of frames (and the reading of
    the transport), as in ``LineReceiver``.
    """

    MAX_LENGTH = 1 << 20

    paused = False
    _busyReceiving = False
    _inFrame = False
    _discarding = False

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._offset = 0  # first byte not consumed; inside a frame, its first content byte
        self._scanFrom = 0  # where the search for the end pair resumes
        self._discardHead = b""
        self._discardSize = 0

    # -- hooks ---------------------------------------------------------------------------------

    def frameReceived(self, frame: bytes) -> None:
        """Called once per complete frame of at most ``MAX_LENGTH`` bytes (envelope removed)."""
        raise NotImplementedError

    def frameTooLong(self, head: bytes, size: int) -> None:
        """Called once per complete frame longer than ``MAX_LENGTH``.

        ``head`` is its first :data:`HEAD_BYTES` bytes, ``size`` its whole length. By default the
        connection is dropped, as ``LineReceiver.lineLengthExceeded`` does.
        """
        if self.transport is not None:
            self.transport.loseConnection()

    def garbageDiscarded(self, data: bytes) -> None:
        """Called with bytes found outside any frame, which are skipped."""

    def frameStarted(self) -> None:
        """Called when a start byte opens a new frame."""

    def incompleteFrameLost(self, size: int) -> None:
        """Called when the connection ends inside a frame of ``size`` bytes so far."""

    # -- state ---------------------------------------------------------------------------------

    @property
    def inFrame(self) -> bool:
        """True between a frame's start byte and its end pair."""
        return self._inFrame

    def bufferedFrameSize(self) -> int:
        """Bytes received so far for the frame in progress (0 outside a frame)."""
        if self._discarding:
            return self._discardSize + len(self._buffer) - self._offset
        if self._inFrame:
            return len(self._buffer) - self._offset
        return 0

    # -- back-pressure (as twisted.protocols.basic._PauseableMixin) ----------------------------

    def pauseProducing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        if self.transport is not None:
            self.transport.resumeProducing()
        self.dataReceived(b"")

    def stopProducing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.stopProducing()

    # -- the state machine ---------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if self._busyReceiving:
            # Re-entered from a callback (resumeProducing inside frameReceived): the outer loop
            # goes on with the new bytes.
            return
        self._busyReceiving = True
        try:
            self._deliverFrames()
        finally:
            self._busyReceiving = False
            self._compact()

    def _stopped(self) -> bool:
        return self.paused or (self.transport is not None and self.transport.disconnecting)

    def _deliverFrames(self) -> None:
        buf = self._buffer
        while not self._stopped():
            if self._discarding:
                if not self._skipOverlongFrame():
                    return
            elif not self._inFrame:
                start = buf.find(START_BLOCK, self._offset)
                if start < 0:
                    if len(buf) > self._offset:
                        garbage = bytes(buf[self._offset :])
                        self._offset = len(buf)
                        self.garbageDiscarded(garbage)
                    return
                if start > self._offset:
                    garbage = bytes(buf[self._offset : start])
                    self._offset = start
                    self.garbageDiscarded(garbage)
                self._offset = self._scanFrom = start + 1
                self._inFrame = True
                self.frameStarted()
            else:
                end = buf.find(END_BLOCK, self._scanFrom)
                if end < 0:
                    if len(buf) - self._offset > self.MAX_LENGTH:
                        self._startDiscarding()
                        continue
                    # A 0x1C at the very end may be half of the end pair: scan it again next time.
                    self._scanFrom = max(self._offset, len(buf) - 1)
                    return
                payload = bytes(buf[self._offset : end])
                self._offset = end + len(END_BLOCK)
                self._inFrame = False
                if len(payload) > self.MAX_LENGTH:
                    self.frameTooLong(payload[:HEAD_BYTES], len(payload))
                else:
                    self.frameReceived(payload)

    def _startDiscarding(self) -> None:
        self._discarding = True
        self._discardHead = b""
        self._discardSize = 0

    def _skipOverlongFrame(self) -> bool:
        """Drop the over-long frame's bytes up to its end pair; False when more bytes are needed."""
        buf = self._buffer
        end = buf.find(END_BLOCK, self._offset)
        if end < 0:
            # A 0x1C at the very end may be half of the end pair: keep it for the next read.
            stop = len(buf) - (1 if len(buf) > self._offset and buf[-1] == _FILE_SEPARATOR else 0)
        else:
            stop = end
        missing = HEAD_BYTES - len(self._discardHead)
        if missing > 0:
            self._discardHead += bytes(buf[self._offset : min(stop, self._offset + missing)])
        self._discardSize += stop - self._offset
        self._offset = stop
        if end < 0:
            return False
        self._offset = end + len(END_BLOCK)
        self._discarding = self._inFrame = False
        head, size = self._discardHead, self._discardSize
        self._discardHead, self._discardSize = b"", 0
        self.frameTooLong(head, size)
        return True

    def _compact(self) -> None:
        # One deletion per read instead of slicing per frame; bytearray makes a front deletion cheap.
        if self._offset:
            del self._buffer[: self._offset]
            self._scanFrom = max(0, self._scanFrom - self._offset)
            self._offset = 0

    def connectionLost(self, reason=None) -> None:
        if self._inFrame:
            size = self.bufferedFrameSize()
            self._inFrame = self._discarding = False
            self.incompleteFrameLost(size)
        del self._buffer[:]
        self._offset = self._scanFrom = 0
