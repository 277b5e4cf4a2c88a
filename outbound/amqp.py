"""The `amqp` destination: each event published to a durable topic exchange (RabbitMQ, AMQP 0-9-1), with
publisher confirms, through pika's Twisted adapter.

The message: the JSON envelope as body (`content_type: application/json`), persistent (`delivery_mode` 2),
the event type as routing key (`consent.changed`, `decision.made`, …), the event `id` as `message_id` (the
same across retries: consumers deduplicate on it), the patient key in the `patient_key` header. It is
`mandatory`: a message that no queue takes comes back (basic.return) and the attempt fails, so nothing is
dropped because no consumer has bound a queue yet. An attempt succeeds only on the broker's basic.ack; a
basic.nack (a queue full under `x-overflow: reject-publish`, say), a return, a channel the broker closed
(an exchange deleted), a lost connection or no confirm within `timeout` is a failed attempt, retried as for
the other destinations. The connection and its channel are opened at the first delivery and again after
any failure.
"""
from __future__ import annotations

import json
import ssl as stdlib_ssl

import pika
from pika import exceptions as amqp_errors
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.internet import defer, protocol
from twisted.internet import ssl as twisted_ssl
from twisted.python.failure import Failure

from outbound.delivery import DeliveryFailed, failure_line, public_envelope


def parameters(url: str) -> pika.URLParameters:
    """The broker's connection parameters from `amqp://user:password@host:5672/vhost` (`amqps://` for TLS).
    Raises ValueError on a URL pika cannot read."""
    if not url.startswith(("amqp://", "amqps://")):
        raise ValueError(f"url must start with amqp:// or amqps:// ({_safe(url)!r})")
    try:
        return pika.URLParameters(url)
    except Exception as e:  # noqa: BLE001 — pika raises several kinds
        raise ValueError(f"not an AMQP URL ({_safe(url)!r}): {e}") from None


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}" if at else url


class AmqpChannel:
    """One connection and one confirming channel per destination; publishes in flight share them."""

    def __init__(self, dest, reactor):
        self.dest, self.reactor = dest, reactor
        self.params = parameters(dest.url)
        if "heartbeat=" not in dest.url:
            self.params.heartbeat = 30      # a dead broker is noticed within a minute, even when idle
        self.tls = dest.url.startswith("amqps://")
        self._connection = None
        self._channel = None
        self._opening: list[defer.Deferred] | None = None

    # --- the connection and its channel ---

    def _ready(self) -> defer.Deferred:
        if self._channel is not None and self._channel.is_open:
            return defer.succeed(self._channel)
        waiter = defer.Deferred()
        if self._opening is None:
            # the first to ask opens; every waiter gets the same channel, or the same failure
            self._opening = [waiter]
            d = self._open()
            d.addTimeout(self.dest.timeout, self.reactor)

            def settle(result):
                waiters, self._opening = self._opening, None
                if isinstance(result, Failure):
                    self._drop()
                for w in waiters:
                    w.errback(result) if isinstance(result, Failure) else w.callback(result)
            d.addBoth(settle)
        else:
            self._opening.append(waiter)
        return waiter

    @defer.inlineCallbacks
    def _open(self):
        creator = protocol.ClientCreator(self.reactor, TwistedProtocolConnection, self.params)
        host, port = self.params.host, self.params.port
        if self.tls:
            connecting = creator.connectSSL(host, port, twisted_ssl.optionsForClientTLS(host),
                                            timeout=self.dest.timeout)
        else:
            connecting = creator.connectTCP(host, port, timeout=self.dest.timeout)
        connection = yield connecting
        self._connection = connection
        yield connection.ready
        channel = yield connection.channel()
        # the exchange is pamgate's: declared durable, of type topic, at each (re)connection
        yield channel.exchange_declare(exchange=self.dest.exchange, exchange_type="topic", durable=True)
        yield channel.confirm_delivery()
        channel.on_closed.addBoth(lambda _: self._lost(channel))
        self._channel = channel
        return channel

    def _lost(self, channel) -> None:
        """The broker closed the channel (an exchange deleted, a connection lost): open anew next time."""
        if self._channel is channel:
            self._drop()

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                if connection.is_open:
                    connection.close()
                elif connection.transport is not None:
                    connection.transport.loseConnection()
            except Exception:  # noqa: BLE001 — closing something already broken
                pass

    # --- the channel interface (outbound/delivery.py) ---

    def deliver(self, envelope: dict) -> defer.Deferred:
        body = json.dumps(public_envelope(envelope), ensure_ascii=False).encode()
        headers = {"event_type": envelope["type"]}
        if envelope.get("patient_key"):
            headers["patient_key"] = envelope["patient_key"]
        props = pika.BasicProperties(content_type="application/json", content_encoding="utf-8",
                                     delivery_mode=pika.DeliveryMode.Persistent, message_id=envelope["id"],
                                     type=envelope["type"], headers=headers, app_id="pamgate")

        def publish(channel):
            return channel.basic_publish(self.dest.exchange, envelope["type"], body, props, mandatory=True)

        def judge(failure):
            if failure.check(defer.TimeoutError, defer.CancelledError):
                self._drop()     # a confirm that may never come: start again on a fresh connection
            return _refusal(failure)

        d = self._ready().addCallback(publish)
        d.addTimeout(self.dest.timeout, self.reactor)
        return d.addCallback(lambda _: None).addErrback(judge).addErrback(failure_line, self.dest.timeout)

    def close(self) -> defer.Deferred:
        connection = self._connection
        self._connection = self._channel = None
        if connection is not None and connection.is_open:
            closed = connection.closed
            connection.close()
            if closed is not None:
                return closed.addTimeout(5, self.reactor).addErrback(lambda _: None)
        return defer.succeed(None)


def _refusal(failure):
    """The broker's answers as one line each."""
    if failure.check(amqp_errors.NackError):
        raise DeliveryFailed("the broker refused the message (basic.nack)", "basic.nack")
    if failure.check(amqp_errors.UnroutableError):
        raise DeliveryFailed("no queue takes this routing key (basic.return)", "basic.return")
    if failure.check(amqp_errors.ChannelClosedByBroker, amqp_errors.ConnectionClosedByBroker):
        e = failure.value
        raise DeliveryFailed(f"closed by the broker: {e.reply_code} {e.reply_text}"[:300],
                             f"closed by the broker: {e.reply_code}")
    if failure.check(amqp_errors.AMQPConnectionError, amqp_errors.ChannelClosed, amqp_errors.ConnectionClosed,
                     amqp_errors.ChannelWrongStateError, amqp_errors.AMQPError):
        raise DeliveryFailed(f"AMQP: {failure.type.__name__}: {failure.getErrorMessage()}"[:300],
                             f"AMQP: {failure.type.__name__}")
    if failure.check(stdlib_ssl.SSLError):
        raise DeliveryFailed(f"TLS: {failure.getErrorMessage()}"[:300], "TLS")
    return failure
