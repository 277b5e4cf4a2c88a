"""The `mllp` destination: the forwarded ADT over MLLP, its ACK read by mllp's ACK reader."""
from __future__ import annotations

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString, connectProtocol
from twisted.python.failure import Failure

from mllp.ack import read_ack
from mllp.client import MLLPClientProtocol, encode_message
from mllp.decoding import codec_for_charset
from outbound.delivery import DeliveryFailed, failure_line


def _msh(text: str, n: int) -> str:
    msh = text.split("\r", 1)[0]
    if not msh.startswith("MSH") or len(msh) < 4:
        return ""
    parts = msh.split(msh[3])
    return parts[n - 1] if len(parts) >= n else ""   # MSH-1 is the separator itself


class MllpChannel:
    """HL7 v2 over MLLP: the forwarded ADT, one message at a time on one kept connection; the ACK must
    accept it (AA/CA) and echo its MSH-10 in MSA-2."""

    def __init__(self, dest, reactor):
        self.dest, self.reactor = dest, reactor
        self.endpoint = client_endpoint(reactor, dest.endpoint, dest.timeout)
        self._protocol = None
        self._waiters = None

    def _connection(self) -> defer.Deferred:
        p = self._protocol
        if p is not None and p._lost is None and p.transport is not None:
            return defer.succeed(p)
        waiter = defer.Deferred()
        if self._waiters is None:
            # the first to ask connects; every waiter gets the same connection, or the same failure
            self._waiters = [waiter]
            d = connectProtocol(self.endpoint, MLLPClientProtocol(timeout=self.dest.timeout, clock=self.reactor))
            d.addTimeout(self.dest.timeout, self.reactor)

            def settle(result):
                waiters, self._waiters = self._waiters, None
                if not isinstance(result, Failure):
                    self._protocol = result
                for w in waiters:
                    w.errback(result) if isinstance(result, Failure) else w.callback(result)
            d.addBoth(settle)
        else:
            self._waiters.append(waiter)
        return waiter

    def deliver(self, envelope: dict) -> defer.Deferred:
        text = envelope["data"]["message"]
        codec = codec_for_charset(_msh(text, 18) or "") or "utf-8"
        control_id = _msh(text, 10)
        try:
            payload = encode_message(text, codec)
        except UnicodeEncodeError as e:
            return defer.fail(DeliveryFailed(f"the message cannot be encoded as MSH-18 says ({codec}): {e}"))

        def send(protocol):
            protocol.encoding = codec        # the ACK is read in the same encoding
            return protocol.send(payload)

        def judge(ack_text):
            problem = read_ack(ack_text).problem(control_id)
            if problem:
                raise DeliveryFailed(problem, problem.split(":", 1)[0])

        return self._connection().addCallback(send).addCallback(judge).addErrback(
            failure_line, self.dest.timeout)

    def close(self) -> defer.Deferred:
        p = self._protocol
        if p is not None and p.transport is not None:
            p.transport.loseConnection()
        return defer.succeed(None)


def client_endpoint(reactor, spec: str, timeout: float):
    """`host:port`, or any Twisted client endpoint string (`tcp:host=…:port=…`, `tls:…`)."""
    if "=" in spec or spec.split(":", 1)[0] in ("tcp", "tls", "ssl", "unix"):
        return clientFromString(reactor, spec)
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"endpoint {spec!r}: expected host:port or a Twisted client endpoint string")
    return TCP4ClientEndpoint(reactor, host, int(port), timeout=timeout)
