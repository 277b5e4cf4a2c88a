"""TLS and mutual TLS from endpoint strings, with certificates made at test time."""

from __future__ import annotations

import ssl

import pytest
import pytest_twisted
from twisted.internet import defer, endpoints, reactor, threads

from mllp.ack import build_ack
from mllp.client import BlockingMLLPClient, MLLPError, send
from mllp.endpoints import _split_description, server_endpoint
from mllp.listener import ListenerSettings, MLLPServerFactory
from tests.mllp.support import adt, msa


def listener(**settings):
    return MLLPServerFactory(lambda frame: defer.succeed(build_ack(frame.text, "AA")),
                             settings=ListenerSettings(name="tls", **settings))


def server_string(pki, mutual: bool) -> str:
    s = f"ssl:0:interface=127.0.0.1:privateKey={pki}/server.key:certKey={pki}/server.crt"
    return s + (f":caCertsDir={pki}/cas" if mutual else "")


def client(pki, port, cert: str | None = None):
    s = f"ssl:host=127.0.0.1:port={port}:caCertsDir={pki}/cas:hostname=localhost:timeout=10"
    if cert:
        s += f":certKey={pki}/{cert}.crt:privateKey={pki}/{cert}.key"
    return endpoints.clientFromString(reactor, s)


@pytest_twisted.ensureDeferred
async def test_tls(loopback, pki):
    port = await loopback.listen(listener(), server_string(pki, mutual=False))
    assert msa(await send(client(pki, port), adt("TLS1", family="ÉLISE"))) == ("AA", "TLS1")


@pytest_twisted.ensureDeferred
async def test_mutual_tls_accepts_a_client_signed_by_the_ca(loopback, pki):
    port = await loopback.listen(listener(), server_string(pki, mutual=True))
    assert msa(await send(client(pki, port, "client"), adt("MTLS1"))) == ("AA", "MTLS1")


@pytest.mark.parametrize("cert, alert", [(None, "certificate required"), ("rogue", "unknown ca")])
@pytest_twisted.ensureDeferred
async def test_mutual_tls_refuses_other_clients(loopback, pki, cert, alert):
    port = await loopback.listen(listener(), server_string(pki, mutual=True))
    with pytest.raises(MLLPError, match=alert):
        await send(client(pki, port, cert), adt("MTLS2"), timeout=10)


@pytest_twisted.ensureDeferred
async def test_connection_past_the_limit_is_refused_under_tls_too(loopback, pki):
    from mllp.client import MLLPClientProtocol

    port = await loopback.listen(listener(max_connections=1), server_string(pki, mutual=False))
    first = MLLPClientProtocol(timeout=10)
    await endpoints.connectProtocol(client(pki, port), first)
    assert msa(await first.send(adt("L1")))[0] == "AA"
    with pytest.raises(MLLPError):
        await send(client(pki, port), adt("L2"), timeout=10)
    first.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_blocking_client_with_a_client_certificate(loopback, pki):
    port = await loopback.listen(listener(), server_string(pki, mutual=True))
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))

    def talk():
        with BlockingMLLPClient("localhost", port, timeout=10, ssl_context=context) as c:
            return c.send(adt("MTLS3"))

    assert msa(await threads.deferToThread(talk)) == ("AA", "MTLS3")


def test_endpoint_strings_are_split_like_twisted():
    assert _split_description(r"ssl:6661:privateKey=C\:\\k.pem:caCertsDir=/a=b") == (
        "ssl", ["6661"], {"privateKey": "C:\\k.pem", "caCertsDir": "/a=b"})


def test_unknown_option_with_mutual_tls_is_named():
    with pytest.raises(ValueError, match="dhParameters"):
        server_endpoint(reactor, "ssl:0:privateKey=k:caCertsDir=d:dhParameters=x")


def _tls_send_then_half_close(pki, port: int, payload: bytes, close_notify: bool) -> bytes:
    """A TLS sender (memory BIOs over a plain socket, so both ways of ending can be made): writes,
    then sends close_notify and/or shuts its TCP sending side, then reads every answer to the end."""
    import socket

    context = ssl.create_default_context(cafile=f"{pki}/ca.crt")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        def pump():
            if outgoing.pending:
                sock.sendall(outgoing.read())

        def feed() -> bool:
            data = sock.recv(65536)
            if data:
                incoming.write(data)
            else:
                incoming.write_eof()
            return bool(data)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
                feed()
        pump()
        tls.write(payload)
        pump()
        if close_notify:
            try:
                tls.unwrap()
            except ssl.SSLWantReadError:
                pass
            pump()
        sock.shutdown(socket.SHUT_WR)
        received = b""
        open_ = True
        while True:
            try:
                chunk = tls.read(65536)
                if not chunk:  # the server's close_notify, or its FIN
                    break
                received += chunk
            except ssl.SSLWantReadError:
                if not open_:
                    break
                open_ = feed()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ssl.SSLError):
                break
        return received


@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "tcp_fin"])
@pytest_twisted.ensureDeferred
async def test_a_half_closed_tls_sender_still_gets_its_acks(loopback, pki, close_notify):
    # Old code: Twisted's TLS closed the whole connection on the sender's close; the ACKs were lost.
    from twisted.internet import task

    from tests.mllp.support import framed, split_frames

    slow = MLLPServerFactory(lambda frame: task.deferLater(reactor, 0.2, build_ack, frame.text, "AA"),
                             settings=ListenerSettings(name="tls"))
    port = await loopback.listen(slow, server_string(pki, mutual=False))
    payload = framed(adt("TH1").encode()) + framed(adt("TH2").encode())
    received = await threads.deferToThread(_tls_send_then_half_close, pki, port, payload, close_notify)
    assert [msa(a.decode())[1] for a in split_frames(received)] == ["TH1", "TH2"]
