"""Shared helpers for the mllp tests: message builders, a raw-bytes peer, test certificates."""

from __future__ import annotations

import datetime
import re

import pytest
from twisted.internet import defer, protocol

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
    parts = fields(ack, "MSA")
    return parts[1], parts[2]


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
        if not self.closed.called:
            self.closed.callback(reason)


# -- certificates ------------------------------------------------------------------------------


def _certificate(subject: str, key, issuer_name, issuer_key, *, ca: bool, san: str | None = None):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    return builder.sign(issuer_key or key, hashes.SHA256()), name


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost, a client certificate, and a rogue client."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = tmp_path_factory.mktemp("pki")

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def write(name, cert, private_key):
        (root / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (root / f"{name}.key").write_bytes(private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))

    ca_key = key()
    ca_cert, ca_name = _certificate("pamgate test CA", ca_key, None, None, ca=True)
    write("ca", ca_cert, ca_key)
    (root / "cas").mkdir()
    (root / "cas" / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for name, san in (("server", "localhost"), ("client", None)):
        k = key()
        cert, _ = _certificate(name, k, ca_name, ca_key, ca=False, san=san)
        write(name, cert, k)
    rogue_key = key()
    rogue_cert, _ = _certificate("rogue", rogue_key, None, None, ca=False)
    write("rogue", rogue_cert, rogue_key)
    return root
