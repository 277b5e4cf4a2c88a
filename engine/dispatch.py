"""The dispatcher: the outbox delivered to the configured destinations, in order, at least once.

Each destination is a lane with its own queue (the `delivery` rows that name it), retries, backoff,
timeout and dead-letter list. A lane repeats one round: in one short transaction on a worker thread it
records the attempts that finished and claims the next deliveries due — only those that head their
patient's queue, so a patient's later event never overtakes an earlier pending one, while the other
patients go on. Claims are leases (`claimed_by`, `claimed_until`): several instances on one PostgreSQL
store share the outbox (`FOR UPDATE SKIP LOCKED`); a lease left by a dead instance expires and is taken
over. Deliveries then run on the reactor: `http` (treq), `mllp` (mllp.client, ACK and MSA-2 checked),
`file` (JSON lines, fsynced, on a thread).

An event may reach a destination twice (a crash between delivery and record): its `id` stays the same
across retries (and the forwarded ADT keeps its MSH-10), so receivers can deduplicate.

`pamgate outbox list|show|retry` (pamgate/outbox.py) reads the same rows.
"""
from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from engine import metrics

log = structlog.get_logger("pamgate.dispatch")

LEASE_MARGIN = 60.0          # seconds a lease outlives the longest a delivery may take
DEPTH_EVERY = 1.0            # seconds between two counts of the outbox depth
STOP_GRACE = 5.0             # seconds past the longest timeout that stop() waits for deliveries in flight


class DeliveryFailed(Exception):
    """One line: why this attempt did not deliver. `summary` is what the log may say: a receiver's own
    words (an HTTP body, an ERR text) may quote a patient, so they go only to the delivery row."""

    def __init__(self, message: str, summary: str | None = None):
        super().__init__(message)
        self.summary = summary or message


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- pure parts ------------------------------------------------------------------------------------

def backoff_delay(attempts: int, backoff: float, max_backoff: float, rand=random.random) -> float:
    """Seconds before the next attempt, after `attempts` failed ones: doubling, capped, with a little
    jitter (-20 % at most) so a destination coming back is not hit by every queue in the same instant."""
    base = min(max_backoff, backoff * 2 ** max(0, attempts - 1))
    return base * (1 - 0.2 * rand())


def public_envelope(envelope: dict) -> dict:
    """The envelope of interface.md: the internal ordering key stays home."""
    return {k: v for k, v in envelope.items() if k != "patient_key"}


def ack_problem(ack_text: str, control_id: str) -> str | None:
    """None when the ACK accepts the message whose MSH-10 is `control_id`; else why not."""
    fields = None
    for seg in ack_text.replace("\n", "\r").split("\r"):
        if seg.startswith("MSA"):
            fields = seg.split(seg[3] if len(seg) > 3 else "|")
            break
    if fields is None:
        return "the answer has no MSA segment"
    code = fields[1] if len(fields) > 1 else ""
    echoed = fields[2] if len(fields) > 2 else ""
    if echoed != control_id:
        return f"MSA-2 {echoed!r} does not match the MSH-10 sent {control_id!r}"
    if code not in ("AA", "CA"):
        text = (fields[3] if len(fields) > 3 else "") or _err_text(ack_text)
        return f"ACK {code or '(empty)'}" + (f": {text}" if text else "")
    return None


def _err_text(ack_text: str) -> str:
    for seg in ack_text.split("\r"):
        if seg.startswith("ERR|"):
            f = seg.split("|")
            return (f[8] if len(f) > 8 and f[8] else f[3] if len(f) > 3 else "")[:200]
    return ""


def _msh(text: str, n: int) -> str:
    msh = text.split("\r", 1)[0]
    if not msh.startswith("MSH") or len(msh) < 4:
        return ""
    parts = msh.split(msh[3])
    return parts[n - 1] if len(parts) >= n else ""   # MSH-1 is the separator itself


# --- channels: one delivery, a Deferred that fires on success and fails with DeliveryFailed ---------------

class HttpChannel:
    """A JSON POST; any 2xx is success. One persistent connection pool per destination."""

    def __init__(self, dest, reactor):
        import treq.client
        from twisted.web.client import Agent, HTTPConnectionPool
        self.dest, self.reactor = dest, reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = dest.concurrency
        self.client = treq.client.HTTPClient(Agent(reactor, pool=self.pool, connectTimeout=dest.timeout))

    def deliver(self, envelope: dict) -> defer.Deferred:
        body = json.dumps(public_envelope(envelope), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": envelope["id"],
                   **self.dest.headers}
        from twisted.web.client import RequestNotSent, RequestTransmissionFailed, ResponseNeverReceived

        def stale(failure):
            # A kept connection that the server closed while idle fails a POST before any answer, and
            # Twisted retries only idempotent methods. The event is idempotent by its id: one fresh try at
            # once beats a whole backoff.
            failure.trap(ResponseNeverReceived, RequestNotSent, RequestTransmissionFailed)
            return self._post(body, headers)

        def judge(result):
            code, content = result
            if not 200 <= code < 300:
                detail = content[:200].decode("utf-8", "replace").strip()
                raise DeliveryFailed(f"HTTP {code}" + (f": {detail}" if detail else ""), f"HTTP {code}")

        d = self._post(body, headers).addErrback(stale)
        return d.addCallback(judge).addErrback(_failure_line, self.dest.timeout)

    def _post(self, body: bytes, headers: dict) -> defer.Deferred:
        d = self.client.post(self.dest.url, data=body, headers=headers, allow_redirects=False,
                             reactor=self.reactor)
        d.addCallback(lambda response: response.content().addCallback(lambda content: (response.code, content)))
        return d.addTimeout(self.dest.timeout, self.reactor)

    def close(self) -> defer.Deferred:
        return self.pool.closeCachedConnections()


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
            from twisted.internet.endpoints import connectProtocol

            from mllp.client import MLLPClientProtocol
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
        from mllp.client import encode_message
        from mllp.decoding import codec_for_charset
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
            problem = ack_problem(ack_text, control_id)
            if problem:
                raise DeliveryFailed(problem, problem.split(":", 1)[0])

        return self._connection().addCallback(send).addCallback(judge).addErrback(
            _failure_line, self.dest.timeout)

    def close(self) -> defer.Deferred:
        p = self._protocol
        if p is not None and p.transport is not None:
            p.transport.loseConnection()
        return defer.succeed(None)


class FileChannel:
    """One JSON object a line, appended and fsynced before the delivery counts as done."""

    def __init__(self, dest, reactor):
        self.dest, self.reactor = dest, reactor
        self.path = Path(dest.path)
        self._lock = threading.Lock()
        self._file = None

    def _append(self, line: bytes) -> None:
        with self._lock:
            try:
                if self._file is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(self.path, "ab")
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as e:
                self._close()
                raise DeliveryFailed(f"{self.path}: {e.strerror or e}") from None

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def deliver(self, envelope: dict) -> defer.Deferred:
        line = json.dumps(public_envelope(envelope), ensure_ascii=False, separators=(",", ":")) + "\n"
        return deferToThread(self._append, line.encode()).addErrback(_failure_line, self.dest.timeout)

    def close(self) -> defer.Deferred:
        with self._lock:
            self._close()
        return defer.succeed(None)


CHANNELS = {"http": HttpChannel, "mllp": MllpChannel, "file": FileChannel}


def client_endpoint(reactor, spec: str, timeout: float):
    """`host:port`, or any Twisted client endpoint string (`tcp:host=…:port=…`, `tls:…`)."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString
    if "=" in spec or spec.split(":", 1)[0] in ("tcp", "tls", "ssl", "unix"):
        return clientFromString(reactor, spec)
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"endpoint {spec!r}: expected host:port or a Twisted client endpoint string")
    return TCP4ClientEndpoint(reactor, host, int(port), timeout=timeout)


def _failure_line(failure, timeout):
    """Any failure of one attempt, as one line without a traceback."""
    from twisted.internet.defer import CancelledError, TimeoutError
    from twisted.internet.error import ConnectError, ConnectionRefusedError
    if failure.check(DeliveryFailed):
        return failure
    if failure.check(CancelledError, TimeoutError):
        raise DeliveryFailed(f"no answer within {timeout:g} s")
    if failure.check(ConnectionRefusedError):
        raise DeliveryFailed("connection refused")
    if failure.check(ConnectError):
        raise DeliveryFailed(f"cannot connect: {failure.getErrorMessage()}")
    raise DeliveryFailed(f"{failure.type.__name__}: {failure.getErrorMessage()}"[:300], failure.type.__name__)


# --- lanes and the dispatcher ---------------------------------------------------------------------------

class Lane:
    """One destination's loop: record what finished and claim what is due (a thread), deliver (the reactor)."""

    def __init__(self, dispatcher: "Dispatcher", dest, channel):
        self.dispatcher, self.dest, self.channel = dispatcher, dest, channel
        self.reactor = dispatcher.reactor
        self.in_flight = 0
        self.finished: list[tuple[int, str | None, int, dict]] = []
        self.rounding = False
        self.again = False
        self.stopping = False
        self.timer = None
        self.idle_waiters: list[defer.Deferred] = []
        # the longest a claimed delivery may take: mllp queues its claims on one connection
        per_claim = dest.timeout * (dest.concurrency if dest.type == "mllp" else 1)
        self.lease = timedelta(seconds=per_claim + LEASE_MARGIN)

    def pump(self) -> None:
        if self.rounding:
            self.again = True
            return
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        want = 0 if self.stopping else self.dest.concurrency - self.in_flight
        if want <= 0 and not self.finished:
            self._check_idle()
            return
        self.rounding, self.again = True, False
        results, self.finished = self.finished, []
        d = deferToThread(self.dispatcher.round, self.dest, self.lease, results, want)
        d.addCallbacks(self._claimed, self._round_failed, callbackArgs=(want,), errbackArgs=(results,))

    def wake(self) -> None:
        """Events were just committed for this destination, perhaps: look now rather than at the next poll."""
        if self.stopping:
            return
        if self.rounding:
            self.again = True       # the round in progress may have read the outbox before that commit
        elif self.timer is not None and self.timer.active():
            self.pump()             # idle until the next poll; busy lanes look again after each delivery

    def _claimed(self, rows, want) -> None:
        self.rounding = False
        for row in rows:
            self._deliver(row)
        if self.again or self.finished or (rows and len(rows) == want):
            self.pump()          # more is waiting
        else:
            self._later(self.dest.poll_interval)

    def _round_failed(self, failure, results) -> None:
        self.rounding = False
        if self.stopping:
            # No store at shutdown: these attempts stay leased, and are made again once the lease is over.
            log.warning("dispatch.unrecorded_at_stop", destination=self.dest.name, count=len(results))
            self._check_idle()
            return
        self.finished = results + self.finished   # recorded next time; until then the leases hold them
        log.warning("dispatch.store_unavailable", destination=self.dest.name,
                    error=failure.getErrorMessage().splitlines()[0][:200] if failure.getErrorMessage() else "")
        self._later(max(self.dest.poll_interval, 1.0))

    def _later(self, seconds: float) -> None:
        if self.stopping:
            self._check_idle() if not self.finished else self.pump()
            return
        if self.timer is None or not self.timer.active():
            self.timer = self.reactor.callLater(seconds, self.pump)

    def _deliver(self, row: dict) -> None:
        self.in_flight += 1
        env = row["envelope"]
        d = defer.maybeDeferred(self.channel.deliver, env)

        def done(_):
            self.finished.append((row["event_seq"], None, row["attempts"], row))

        def failed(f):
            if f.check(DeliveryFailed):
                error, row["summary"] = f.getErrorMessage(), f.value.summary
            else:
                error = f"{f.type.__name__}: {f.getErrorMessage()}"
                row["summary"] = f.type.__name__
            self.finished.append((row["event_seq"], error, row["attempts"], row))
            log.info("delivery.failed", destination=self.dest.name, event_id=row["event_id"], type=row["type"],
                     attempt=row["attempts"] + 1, error=row["summary"])

        def after(_):
            self.in_flight -= 1
            self.pump()
        d.addCallbacks(done, failed).addBoth(after)

    def _check_idle(self) -> None:
        if self.stopping and not self.rounding and self.in_flight == 0 and not self.finished:
            waiters, self.idle_waiters = self.idle_waiters, []
            for w in waiters:
                w.callback(None)

    def stop(self) -> defer.Deferred:
        """Claim nothing more; wait for the deliveries in flight and record them."""
        self.stopping = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        d = defer.Deferred()
        self.idle_waiters.append(d)
        if not self.rounding:
            self.pump()
        return d


class Dispatcher:
    """Runs inside `pamgate serve`: one lane per configured destination."""

    def __init__(self, store, cfg, reactor):
        self.store, self.cfg, self.reactor = store, cfg, reactor
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lanes = [Lane(self, dest, CHANNELS[dest.type](dest, reactor)) for dest in cfg.destinations]
        self._depth_at = 0.0
        self._depth_lock = threading.Lock()

    def start(self) -> defer.Deferred:

        def begin(_):
            for lane in self.lanes:
                lane.pump()
        d = deferToThread(self._startup)
        d.addErrback(lambda f: log.warning("dispatch.startup_failed", error=f.getErrorMessage()[:200]))
        return d.addCallback(begin)

    def wake(self) -> None:
        """Called on the reactor once a message or an API call has committed events to the outbox."""
        for lane in self.lanes:
            lane.wake()

    def _startup(self) -> None:
        # A SQLite store has one instance: leases left by a previous run of it are void now.
        with self.store.transaction() as uow:
            if not self.store.is_postgres:
                released = uow.release_claims()
                if released:
                    log.info("dispatch.leases_released", count=released)
            metrics.outbox_depth.set(uow.outbox_depth())
        log.info("dispatch.started", destinations=[lane.dest.name for lane in self.lanes], owner=self.owner)

    def stop(self) -> defer.Deferred:
        longest = max((lane.dest.timeout for lane in self.lanes), default=0) + STOP_GRACE
        d = defer.DeferredList([lane.stop() for lane in self.lanes], consumeErrors=True)
        d.addTimeout(longest, self.reactor)
        d.addErrback(lambda f: log.warning("dispatch.stop_timeout", seconds=longest))
        d.addBoth(lambda _: defer.DeferredList([defer.maybeDeferred(lane.channel.close) for lane in self.lanes],
                                               consumeErrors=True))
        return d

    # runs on a worker thread
    def round(self, dest, lease: timedelta, results, want: int) -> list[dict]:
        now = utcnow()
        counts = {"done": 0, "retry": 0, "dead": 0}
        with self.store.transaction() as uow:
            for seq, error, attempts, row in results:
                if error is None:
                    uow.finish_delivery(seq, dest.name, self.owner, now)
                    counts["done"] += 1
                    continue
                tried = attempts + 1
                retry_at = None
                if tried < dest.max_attempts:
                    retry_at = now + timedelta(seconds=backoff_delay(tried, dest.backoff, dest.max_backoff))
                uow.finish_delivery(seq, dest.name, self.owner, now, error=error, retry_at=retry_at)
                if retry_at is None:
                    counts["dead"] += 1
                    log.warning("delivery.dead", destination=dest.name, event_id=row["event_id"],
                                type=row["type"], attempts=tried, error=row.get("summary", ""))
                else:
                    counts["retry"] += 1
            rows = uow.claim_deliveries(dest.name, self.owner, now, now + lease, want) if want > 0 else []
            depth = self._depth(uow)
        for result, n in counts.items():
            if n:
                metrics.deliveries.labels(dest.name, result).inc(n)
        if depth is not None:
            metrics.outbox_depth.set(depth)
        return rows

    def _depth(self, uow) -> int | None:
        with self._depth_lock:
            if time.monotonic() - self._depth_at < DEPTH_EVERY:
                return None
            self._depth_at = time.monotonic()
        return uow.outbox_depth()
