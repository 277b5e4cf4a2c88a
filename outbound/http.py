"""The `http` destination: each event a JSON POST, with its id as the Idempotency-Key."""
from __future__ import annotations

import json

import structlog
import treq.client
from twisted.internet import defer
from twisted.web.client import (Agent, HTTPConnectionPool, RequestNotSent, RequestTransmissionFailed,
                                ResponseNeverReceived)

from outbound.delivery import DeliveryFailed, failure_line, public_envelope

log = structlog.get_logger("pamgate.dispatch")


class HttpChannel:
    """A JSON POST; any 2xx is success. One persistent connection pool per destination."""

    def __init__(self, dest, reactor):
        self.dest, self.reactor = dest, reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = dest.concurrency
        self.client = treq.client.HTTPClient(Agent(reactor, pool=self.pool, connectTimeout=dest.timeout))
        # The retry after a stale kept connection: a new connection each time, closed after its answer. Through
        # the pool it could take another kept connection that the server closed in the same instant.
        self.fresh = treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False),
                                                  connectTimeout=dest.timeout))

    def deliver(self, envelope: dict) -> defer.Deferred:
        body = json.dumps(public_envelope(envelope), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": envelope["id"],
                   **self.dest.headers}

        def stale(failure):
            # A kept connection that the server closed while idle fails a POST before any answer, and
            # Twisted retries only idempotent methods. The event is idempotent by its id: one fresh try at
            # once beats a whole backoff.
            failure.trap(ResponseNeverReceived, RequestNotSent, RequestTransmissionFailed)
            log.debug("delivery.stale_connection", destination=self.dest.name, event_id=envelope["id"],
                      error=failure.type.__name__)
            return self._post(self.fresh, body, headers)

        def judge(result):
            code, content = result
            if not 200 <= code < 300:
                detail = content[:200].decode("utf-8", "replace").strip()
                raise DeliveryFailed(f"HTTP {code}" + (f": {detail}" if detail else ""), f"HTTP {code}")

        d = self._post(self.client, body, headers).addErrback(stale)
        return d.addCallback(judge).addErrback(failure_line, self.dest.timeout)

    def _post(self, client, body: bytes, headers: dict) -> defer.Deferred:
        d = client.post(self.dest.url, data=body, headers=headers, allow_redirects=False, reactor=self.reactor)
        d.addCallback(lambda response: response.content().addCallback(lambda content: (response.code, content)))
        return d.addTimeout(self.dest.timeout, self.reactor)

    def close(self) -> defer.Deferred:
        return self.pool.closeCachedConnections()
