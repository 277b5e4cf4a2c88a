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
