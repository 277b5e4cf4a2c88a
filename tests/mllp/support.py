"""Helpers for the mllp tests: message builders, a reference deframer, a raw-bytes peer."""

from __future__ import annotations

import re

from twisted.internet import defer, protocol

from mllp.ack import read_ack

VT, FS, CR = b"\x0b", b"\x1c", b"\r"
ENVELOPE_END = FS + CR


def adt(control_id: str = "MSG0001", *, family: str = "DUPONT", given: str = "JEAN",
        charset: str = "UNICODE UTF-8", msh15: str = "", sender: str = "GAM",
        newline: str = "\r") -> str:
    """A small PAM FR ADT^A01 (made up) whose PID-5 carries the names under test."""
    segments = [
        f"MSH|^~\\&|{sender}|CHU-X|DPI|CHU-Y|20240306111154||ADT^A01^ADT_A01|{control_id}|P|"
        f"2.5^FRA^2.11|||{msh15}||FRA|{charset}|FR||2.11^IHE_FRANCE-2.11-PAM",
        "EVN||20240306111154||||20240306110000",
        f"PID|1||123456^^^CHU-X&1.2.3&ISO^PI||{family}^{given}^^^^^L||19800101|M",
        "PV1|1|I|^^^CHU-X&1.2.3&ISO^O^^|R|||||||||||||||||V000123^^^CHU-X&1.2.3&ISO^VN",
    ]
    return newline.join(segments) + newline


def framed(payload: bytes) -> bytes:
    return VT + payload + ENVELOPE_END


def split_frames(stream: bytes) -> list[bytes]:
    """Reference deframer (non-incremental), to check the real one against."""
    return [m.group(1) for m in re.finditer(rb"\x0b(.*?)\x1c\r", stream, re.DOTALL)]


def fields(ack: str, segment: str) -> list[str]:
    for line in ack.split("\r"):
        if line.startswith(segment + "|"):
            return line.split("|")
    raise AssertionError(f"no {segment} in {ack!r}")


def msa(ack: str) -> tuple[str, str]:
    read = read_ack(ack)
    assert read.has_msa, f"no MSA in {ack!r}"
    return read.code, read.control_id


class RawPeer(protocol.Protocol):
    """A client that writes raw bytes and collects the ACK frames it receives."""

    def __init__(self) -> None:
        self.received = b""
        self.closed = defer.Deferred()
        self._waiters: list[tuple[int, defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._wake()

    def frames(self) -> list[bytes]:
        return split_frames(self.received)

    def wait_frames(self, count: int, timeout: float = 10.0) -> defer.Deferred:
        from twisted.internet import reactor

        d = defer.Deferred()
        self._waiters.append((count, d))
        self._wake()
        return d.addTimeout(timeout, reactor)

    def _wake(self) -> None:
        frames = self.frames()
        for entry in list(self._waiters):
            if len(frames) >= entry[0] and not entry[1].called:
                self._waiters.remove(entry)
                entry[1].callback(frames)

    def connectionLost(self, reason=None) -> None:
        self.reason = reason
        if not self.closed.called:
            self.closed.callback(None)
