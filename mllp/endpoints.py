"""Listener endpoints from configuration strings, with mutual TLS.

``server_endpoint(reactor, description)`` accepts every Twisted server endpoint string
(``tcp:2575:interface=127.0.0.1``, ``ssl:6661:privateKey=key.pem:certKey=cert.pem``, ...) and hands
it to ``serverFromString``, plus one option Twisted's ``ssl:`` server parser lacks:

``caCertsDir=DIR`` turns on **mutual TLS**: every ``*.pem`` file in ``DIR`` (bundles allowed) is a
trusted CA, and a client must present a certificate signed by one of them, or the handshake fails.
The name is the one Twisted's ``ssl:`` *client* strings already use for the same directory.

Hand-written because ``twisted.internet.endpoints`` offers no way to add client-certificate
verification to a parsed ``ssl:`` endpoint; the endpoint string grammar (``:`` between arguments,
``\\`` escapes) is re-read here only for that case.

**Half-close over TLS.** A sender may write its message and then shut its sending side: a TLS
``close_notify`` (which in TLS 1.3 closes one direction only), or a plain TCP FIN. Twisted's TLS
layer answers either by closing the whole connection at once, so the ACK still owed was lost. Every
``ssl:`` listener here therefore wraps its protocol in :class:`HalfClosingTLS`, which tells a
protocol that provides ``IHalfCloseableProtocol`` (the MLLP listener) ``readConnectionLost`` and
keeps the connection open for its answers; it sends its own ``close_notify`` and closes once that
protocol closes.
"""

from __future__ import annotations

import re
from pathlib import Path

from OpenSSL.SSL import Error as TLSError
from OpenSSL.SSL import WantReadError, ZeroReturnError
from twisted.internet import endpoints, ssl
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamServerEndpoint
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)
_MUTUAL_TLS_OPTIONS = {"port", "privateKey", "certKey", "extraCertChain", "interface", "backlog",
                       "caCertsDir"}


def _split_description(description: str) -> tuple[str, list[str], dict[str, str]]:
    """``prefix:arg:key=value`` → (prefix, args, kwargs), honouring backslash escapes."""
    tokens: list[tuple[str, int]] = []  # (text, index of the first unescaped "=", or -1)
    current: list[str] = []
    equals = -1
    escaped = False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            tokens.append(("".join(current), equals))
            current, equals = [], -1
        else:
            if ch == "=" and equals < 0:
                equals = len(current)
            current.append(ch)
    tokens.append(("".join(current), equals))
    prefix = tokens[0][0]
    args, kwargs = [], {}
    for text, eq in tokens[1:]:
        if eq < 0:
            args.append(text)
        else:
            kwargs[text[:eq]] = text[eq + 1 :]
    return prefix, args, kwargs


# the options of an ssl: endpoint that name a file, or (caCertsDir) a folder
FILE_OPTIONS = ("privateKey", "certKey", "extraCertChain", "caCertsDir")


def files_named(description: str) -> list[tuple[str, str]]:
    """The (option, path) pairs of the files and folders an endpoint string names, to check them before
    listening (Twisted would raise a bare FileNotFoundError)."""
    _, _, kwargs = _split_description(description)
    return [(k, kwargs[k]) for k in FILE_OPTIONS if kwargs.get(k)]


def _certificates(path: Path) -> list[ssl.Certificate]:
    return [ssl.Certificate.loadPEM(pem) for pem in _PEM_CERTIFICATE.findall(path.read_bytes())]


def mutual_tls_options(*, privateKey: str, certKey: str | None = None,
                       extraCertChain: str | None = None, caCertsDir: str) -> ssl.CertificateOptions:
    """Server TLS options that require a client certificate signed by a CA of ``caCertsDir``."""
    key_pem = Path(privateKey).read_bytes()
    cert_pem = Path(certKey or privateKey).read_bytes()
    server = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    chain = [c.original for c in _certificates(Path(extraCertChain))] if extraCertChain else None
    authorities = [c for pem in sorted(Path(caCertsDir).glob("*.pem")) for c in _certificates(pem)]
    if not authorities:
        raise ValueError(f"caCertsDir={caCertsDir}: no PEM certificate found")
    return ssl.CertificateOptions(
        privateKey=server.privateKey.original,
        certificate=server.original,
        extraCertChain=chain,
        trustRoot=ssl.trustRootFromCertificates(authorities),
    )


@implementer(IHalfCloseableProtocol)
class HalfClosingTLS(BufferingTLSTransport):
    """Twisted's server-side TLS, except that the peer's end of sending ends only its direction.

    ``_flushReceiveBIO`` is Twisted's (26.x) with one branch changed: a ``close_notify`` received
    is reported as ``readConnectionLost`` to a half-closeable protocol instead of closing.
    """

    _peerDone = False  # the peer sends nothing more (close_notify or FIN)

    def _halfCloseable(self) -> bool:
        return IHalfCloseableProtocol.providedBy(self.wrappedProtocol)

    def _flushReceiveBIO(self) -> None:
        while not self._lostTLSConnection and not self._peerDone:
            try:
                data = self._tlsConnection.recv(2**15)
            except WantReadError:
                break
            except ZeroReturnError:
                if self._halfCloseable():
                    self._peerEnded()
                else:
                    self._shutdownTLS()
                    self._tlsShutdownFinished(None)
            except TLSError:
                self._tlsShutdownFinished(Failure())
            else:
                if not self._aborted:
                    ProtocolWrapper.dataReceived(self, data)
        self._flushSendBIO()

    def _peerEnded(self) -> None:
        self._peerDone = True
        self.wrappedProtocol.readConnectionLost()

    def readConnectionLost(self) -> None:
        """The TCP peer sent FIN (with or without a close_notify before it)."""
        if self._peerDone:
            return
        if not self._handshakeDone or not self._halfCloseable() or self._lostTLSConnection:
            self.transport.loseConnection()
            return
        self._flushReceiveBIO()  # whatever is still buffered, then no more
        if not self._peerDone and not self._lostTLSConnection:
            self._peerEnded()

    def writeConnectionLost(self) -> None:
        """Not used: this side closes only as a whole."""

    def _shutdownTLS(self) -> None:
        super()._shutdownTLS()
        # The peer will send no close_notify of its own after a FIN: close without waiting for it.
        if self._peerDone and self.transport is not None:
            self.transport.loseConnection()


class _HalfClosingTLSFactory(TLSMemoryBIOFactory):
    protocol = HalfClosingTLS


@implementer(IStreamServerEndpoint)
class _HalfClosingTLSEndpoint:
    """An ``ssl:`` server endpoint whose connections are :class:`HalfClosingTLS`."""

    def __init__(self, reactor, tls: endpoints.SSL4ServerEndpoint) -> None:
        self._reactor = reactor
        self._tls = tls

    def listen(self, protocolFactory):
        tls = self._tls
        tcp = endpoints.TCP4ServerEndpoint(self._reactor, tls._port, backlog=tls._backlog,
                                           interface=tls._interface)
        return tcp.listen(_HalfClosingTLSFactory(tls._sslContextFactory, False, protocolFactory))


def _half_closing(reactor, endpoint):
    if isinstance(endpoint, endpoints.SSL4ServerEndpoint):
        return _HalfClosingTLSEndpoint(reactor, endpoint)
    return endpoint


def server_endpoint(reactor, description: str):
    """An ``IStreamServerEndpoint`` for ``description`` (see the module docstring)."""
    prefix, args, kwargs = _split_description(description)
    if prefix != "ssl" or "caCertsDir" not in kwargs:
        return _half_closing(reactor, endpoints.serverFromString(reactor, description))
    unknown = set(kwargs) - _MUTUAL_TLS_OPTIONS
    if unknown:
        raise ValueError(f"{description!r}: option(s) {sorted(unknown)} not supported with caCertsDir")
    port = kwargs.pop("port", None) or (args[0] if args else None)
    if port is None:
        raise ValueError(f"{description!r}: no port")
    interface = kwargs.pop("interface", "")
    backlog = int(kwargs.pop("backlog", 50))
    options = mutual_tls_options(**kwargs)
    return _half_closing(reactor, endpoints.SSL4ServerEndpoint(reactor, int(port), options,
                                                               backlog=backlog, interface=interface))
