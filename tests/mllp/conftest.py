"""Fixtures for the mllp tests: certificates made at test time."""

from __future__ import annotations

import datetime

import pytest


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


# -- real loopback servers ---------------------------------------------------------------------


class Loopback:
    """Starts listeners on 127.0.0.1 port 0 and connects raw peers; cleans up after the test."""

    def __init__(self) -> None:
        self.ports = []
        self.factories = []
        self.peers = []

    async def listen(self, factory, description: str = "tcp:0:interface=127.0.0.1") -> int:
        from twisted.internet import reactor

        from mllp.endpoints import server_endpoint

        port = await server_endpoint(reactor, description).listen(factory)
        self.ports.append(port)
        self.factories.append(factory)
        return port.getHost().port

    async def connect(self, port: int, peer=None, description: str | None = None):
        from twisted.internet import endpoints, reactor

        from tests.mllp.support import RawPeer

        peer = peer or RawPeer()
        endpoint = endpoints.clientFromString(
            reactor, description or f"tcp:host=127.0.0.1:port={port}:timeout=10"
        )
        await endpoints.connectProtocol(endpoint, peer)
        if hasattr(peer.transport, "setTcpNoDelay"):
            peer.transport.setTcpNoDelay(True)
        self.peers.append(peer)
        return peer

    async def close(self) -> None:
        from twisted.internet import defer, reactor, task

        for peer in self.peers:
            if peer.transport is not None and peer.transport.connected:
                peer.transport.abortConnection()
        for factory in self.factories:
            for connection in list(factory.connections):
                connection.transport.abortConnection()
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])
        await task.deferLater(reactor, 0.01, lambda: None)


@pytest.fixture
def loopback():
    import pytest_twisted
    from twisted.internet import defer

    net = Loopback()
    yield net
    pytest_twisted.blockon(defer.ensureDeferred(net.close()))
