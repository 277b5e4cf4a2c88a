"""Group commit: the store's work runs off the reactor, many operations to a transaction.

`run_batch` is one group commit. The API's operations and the journal's pruning reach it through
GroupCommit, a thread of the server; inbound messages through the apply process (engine/apply_process.py).

Each operation is submitted with the patient keys it touches. The worker takes whatever is waiting, locks
those keys (sorted, so two instances cannot deadlock), runs the operations (each in its own savepoint only
once one of them failed), commits once, and only then fires each operation's Deferred on the reactor. An
ACK therefore never leaves before the commit that holds its message.

When the store cannot commit (unreachable, a connection lost mid-way), every operation of the batch fails
with StoreUnavailable (MLLP answers AE 207, the API 503) and the worker goes on: the pool replaces dead
connections at the next checkout, so service resumes by itself once the store answers. A lock conflict
between instances (PostgreSQL deadlock or serialisation failure) is retried whole, a few times.
"""
from __future__ import annotations

import queue
import random
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import structlog
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from consent_store import errors as store_errors
from consent_store.durability import Durability

log = structlog.get_logger("pamgate.commit")
_STOP = object()
CONFLICT_RETRIES = 5
LINGER = 0.002    # seconds a batch of the API's operations may wait for the callers the last one answered


class StoreUnavailable(Exception):
    """The store could not commit: nothing of the batch was applied."""


class GroupCommit:
    def __init__(self, store, reactor, max_batch: int = 512, on_commit: Callable | None = None):
        self.store = store
        self.reactor = reactor
        self.max_batch = max_batch
        self.on_commit = on_commit       # metrics hook: (batch size, seconds)
        # a store that commits without waiting for the disk (Store(deferred_sync=True)): each batch is
        # answered once a WalSync has the WAL on the disk, while this thread runs the next batch
        self._durable = Durability(store, self._answer, self._lost, "pamgate-store") if store.deferred_sync else None
        self._q: queue.Queue = queue.Queue()
        self._answered = 1          # operations the last commit answered
        self._linger = 0.0          # how long the next batch may wait for them (_take)
        self._thread = threading.Thread(target=self._loop, name="pamgate-store", daemon=True)
        self._thread.start()

    def submit(self, work: Callable, keys=(), refused: Callable | None = None) -> Deferred:
        """Run `work(uow)` in the next batch; `refused(uow, error)` answers it should it fail by its own
        fault (run_batch)."""
        d = Deferred()
        self._q.put((work, tuple(keys), refused, d))
        return d

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what was submitted, commit it, answer it, then end the threads."""
        self._q.put(_STOP)
        self._thread.join(timeout)
        if self._durable:
            self._durable.close(timeout)

    def _take(self):
        """What is waiting, at least one operation. The callers answered by the last commit (API clients,
        each waiting for its answer before it asks again) mostly come back at once: when fewer than they
        are waiting, the batch waits for them a little (half the last commit's time, at most LINGER), so that
        they share this commit rather than split into two groups that take turns, each waiting for the
        other's fsync. A lone caller (the last batch held one operation) never waits."""
        first = self._q.get()
        if first is _STOP:
            return None, True
        batch, stop, deadline = [first], False, None
        while len(batch) < self.max_batch:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                if len(batch) >= self._answered:
                    break
                if deadline is None:
                    deadline = time.monotonic() + self._linger
                try:
                    item = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _loop(self) -> None:
        while True:
            batch, stop = self._take()
            if batch:
                try:
                    self._run(batch)
                except BaseException as e:  # noqa: BLE001 — the worker must outlive any failure
                    log.exception("commit.worker_failed")
                    self._fail(batch, StoreUnavailable(f"{type(e).__name__}"))
            if stop:
                return

    def _run(self, batch) -> None:
        started = time.perf_counter()
        results, committed = run_batch(self.store, [(work, keys, refused) for work, keys, refused, _ in batch])
        self._answered, self._linger = len(batch), min(LINGER, (time.perf_counter() - started) / 2)
        if committed and self.on_commit:
            try:
                self.on_commit(len(batch), time.perf_counter() - started)
            except Exception:  # noqa: BLE001 — metrics must not hold back the ACKs of a committed batch
                log.exception("commit.metrics_failed")
        answers = [(d, ok, value) for (*_, d), (ok, value) in zip(batch, results)]
        if self._durable and committed:
            # nothing waiting: sync on this thread rather than wake the WalSync thread for it
            failed = self._durable.committed(answers, inline=self._q.empty())
            if failed:
                log.warning("store.wal_restart_failed", detail=failed)
        else:
            self._answer([answers])

    def _answer(self, batches) -> None:
        # one wake-up of the reactor for them all: each one is a write to its pipe, and a GIL hand-over
        self.reactor.callFromThread(_fire, [a for answers in batches for a in answers])

    def _lost(self, error: BaseException, batches) -> None:
        """The WAL could not be synced: what these batches committed may not be on the disk, so none of them
        is answered as done; no later batch is either (WalSync), until the server is restarted."""
        log.error("store.sync_failed", error=type(error).__name__, detail=str(error)[:200])
        failure = StoreUnavailable(f"the store's disk failed: {type(error).__name__}")
        self._answer([[(d, False, failure) for d, _, _ in answers] for answers in batches])

    def _fail(self, batch, failure: Exception) -> None:
        self.reactor.callFromThread(_fire, [(d, False, failure) for *_, d in batch])


def run_batch(store, batch) -> tuple[list, bool]:
    """One group commit of `batch`, a list of (operation, patient keys) or (operation, patient keys, refused):
    each operation's (ok, value) in order, one per operation, and whether the transaction committed. When it
    could not, every operation is (False, StoreUnavailable) and nothing of the batch holds.

    `refused(uow, error)`, when given, answers an operation that failed by its own fault (its savepoint
    rolled back): it runs in a savepoint of its own, and what it returns is the operation's value (a
    message's AE, journaled). Used by the store thread and the apply process."""
    careful = False
    attempt = 1
    while True:
        try:
            return _transaction(store, batch, careful), True
        except _OneFailed:
            # an operation failed: nothing of the batch holds; run it again, each operation alone
            careful = True
        except Exception as e:  # noqa: BLE001 — the commit failed: nothing of the batch holds
            if not store_errors.conflict(e) or attempt == CONFLICT_RETRIES:
                return _unavailable(batch, e), False
            # another instance won a lock: nothing of this batch holds, so run all of it again
            log.warning("store.conflict_retry", attempt=attempt, sqlstate=store_errors.sqlstate(e))
            time.sleep(random.uniform(0.005, 0.05) * attempt)
            attempt += 1


def _transaction(store, batch, careful: bool) -> list:
    """One transaction: locks, then the operations, then the commit.

    Operations rarely fail, and a savepoint each costs two statements. So a batch first runs without
    them; should an operation fail (or a row it kept for later be refused at flush), the transaction is
    rolled back (_OneFailed) and the batch runs again `careful`ly, each operation in its own savepoint,
    its rows written inside it: a failing one gets its own error (or its `refused` answer), the others
    commit. Exactly one result per operation, in the order of the batch."""
    results = []
    with store.transaction() as uow:
        uow.lock_keys(k for item in batch for k in item[1])
        for item in batch:
            work = item[0]
            if not careful:
                try:
                    results.append((True, work(uow)))
                except Exception as e:  # noqa: BLE001 — sorted out by the careful run
                    if store_errors.lost(e):
                        raise
                    raise _OneFailed() from e
                continue
            try:
                with uow.savepoint():
                    value = work(uow)
                # only now: the savepoint writes the operation's rows as it ends, and may refuse one
                results.append((True, value))
                continue
            except Exception as e:  # noqa: BLE001 — one bad operation must not sink the batch
                if store_errors.lost(e):
                    raise   # the connection or the whole transaction is lost, not just this operation
                error: Exception = e
            results.append(_refused(uow, item, error))
        if not careful:
            try:
                uow.flush()   # the rows written at flush: one refused is an operation's failure
            except Exception as e:  # noqa: BLE001 — a row kept for later that cannot be written
                if store_errors.lost(e):
                    raise
                raise _OneFailed() from e
    return results


def _refused(uow, item, error: Exception) -> tuple:
    """An operation failed by its own fault, its savepoint rolled back: its `refused` answer, written in a
    savepoint of its own, or the error itself."""
    refused = item[2] if len(item) > 2 else None
    if refused is None:
        _log_failure(error)
        return False, error
    try:
        with uow.savepoint():
            value = refused(uow, error)
        return True, value
    except Exception as e:  # noqa: BLE001 — the answer of last resort: the error itself
        if store_errors.lost(e):
            raise
        _log_failure(e)
        return False, e


def _log_failure(e: Exception) -> None:
    refused = store_errors.refused(e)
    if refused is not None:
        log.error("store.operation_failed", error=type(e).__name__, detail=refused)
    else:
        log.error("operation.failed", error=type(e).__name__, exc_info=e)


def _unavailable(batch, e: BaseException) -> list:
    detail = (str(e).splitlines() or [""])[0][:200]
    log.error("store.unavailable", error=type(e).__name__, detail=detail)
    return [(False, StoreUnavailable(detail))] * len(batch)


def _fire(results) -> None:
    """On the reactor: each operation's Deferred, in the order of the batch."""
    for d, ok, value in results:
        try:
            d.callback(value) if ok else d.errback(value)
        except Exception:  # noqa: BLE001 — one Deferred's failure must not keep the others' answers back
            log.exception("commit.callback_failed")


class _OneFailed(Exception):
    """An operation of a batch run without savepoints failed: roll back, run it again with them."""


class JournalPruner:
    """Journal retention: at start, then every `every` seconds, raw messages older than `retention` leave
    the journal, through the group commit (one writer), in chunks so that no message waits long behind
    them. The audit trail is never pruned, nor are the applied_message rows that detect duplicates."""

    CHUNK = 5000

    def __init__(self, committer: GroupCommit, retention, reactor, every: float = 3600.0, now=None,
                 zone: str = "UTC"):
        self.committer, self.retention, self.every, self.zone = committer, retention, every, zone
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.loop = LoopingCall(self.prune)
        self.loop.clock = reactor

    def start(self) -> None:
        self.loop.start(self.every, now=True)

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()

    def cutoff(self) -> datetime:
        return self.retention.before(self.now(), self.zone)

    def prune(self) -> Deferred:
        before, total = self.cutoff(), [0]

        def step(n):
            total[0] += n
            if n >= self.CHUNK:
                return self.committer.submit(lambda uow: uow.prune_journal(before, self.CHUNK)).addCallback(step)
            if total[0]:
                log.info("journal.pruned", rows=total[0], before=before.isoformat())
            return total[0]

        def failed(f):
            # the next round tries again; a failure must not stop the loop
            log.warning("journal.prune_failed", error=f.getErrorMessage()[:200])
            return 0
        return self.committer.submit(lambda uow: uow.prune_journal(before, self.CHUNK)).addCallback(
            step).addErrback(failed)
