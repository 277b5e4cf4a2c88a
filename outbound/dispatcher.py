"""The dispatcher: the outbox delivered to the configured destinations, in order, at least once.

Each destination is a lane with its own queue (the `delivery` rows that name it), retries, backoff,
timeout and dead-letter list. A lane repeats one round: in one short transaction on a worker thread it
records the attempts that finished and claims the next deliveries due — only those that head their
patient's queue, so a patient's later event never overtakes an earlier pending one, while the other
patients go on. Claims are leases (`claimed_by`, `claimed_until`): several instances on one PostgreSQL
store share the outbox (`FOR UPDATE SKIP LOCKED`); a lease left by a dead instance expires and is taken
over. Deliveries then run on the reactor, through one channel per destination type: outbound/http.py
(treq), outbound/mllp.py (mllp.client, ACK and MSA-2 checked), outbound/file.py (JSON lines, fsynced),
outbound/amqp.py (pika, a topic exchange, publisher confirms).

An event may reach a destination twice (a crash between delivery and record): its `id` stays the same
across retries (and the forwarded ADT keeps its MSH-10), so receivers can deduplicate.

The metrics (outbox depth, deliveries by result) are given by the caller. `pamgate outbox list|show|retry`
(pamgate/outbox.py) reads the same rows.
"""
from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import structlog
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from outbound.amqp import AmqpChannel
from outbound.delivery import DeliveryFailed
from outbound.file import FileChannel
from outbound.http import HttpChannel
from outbound.mllp import MllpChannel

log = structlog.get_logger("pamgate.dispatch")

LEASE_MARGIN = 60.0          # seconds a lease outlives the longest a delivery may take
DEPTH_EVERY = 1.0            # seconds between two counts of the outbox depth
STOP_GRACE = 5.0             # seconds past the longest timeout that stop() waits for deliveries in flight

CHANNELS = {"http": HttpChannel, "mllp": MllpChannel, "file": FileChannel, "amqp": AmqpChannel}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def backoff_delay(attempts: int, backoff: float, max_backoff: float, rand=random.random) -> float:
    """Seconds before the next attempt, after `attempts` failed ones: doubling, capped, with a little
    jitter (-20 % at most) so a destination coming back is not hit by every queue in the same instant."""
    base = min(max_backoff, backoff * 2 ** max(0, attempts - 1))
    return base * (1 - 0.2 * rand())


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
    """Runs inside `pamgate serve`: one lane per configured destination. `metrics` has `outbox_depth` (a
    gauge) and `deliveries` (a counter labelled destination, result), as engine.metrics does."""

    def __init__(self, store, cfg, reactor, metrics):
        self.store, self.cfg, self.reactor, self.metrics = store, cfg, reactor, metrics
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
            self.metrics.outbox_depth.set(uow.outbox_depth())
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
                self.metrics.deliveries.labels(dest.name, result).inc(n)
        if depth is not None:
            self.metrics.outbox_depth.set(depth)
        return rows

    def _depth(self, uow) -> int | None:
        with self._depth_lock:
            if time.monotonic() - self._depth_at < DEPTH_EVERY:
                return None
            self._depth_at = time.monotonic()
        return uow.outbox_depth()
