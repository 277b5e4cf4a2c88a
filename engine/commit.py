"""Group commit: the store's work runs on one thread off the reactor, many operations to a transaction.

Each operation is submitted with the patient keys it touches. The worker takes whatever is waiting, locks
those keys (sorted, so two instances cannot deadlock), runs each operation in its own savepoint, commits
once, and only then fires each operation's Deferred on the reactor. An ACK therefore never leaves before
the commit that holds its message.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable

import structlog
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from twisted.internet.defer import Deferred

log = structlog.get_logger("pamgate.commit")
_STOP = object()


class StoreUnavailable(Exception):
    """The store could not commit: nothing of the batch was applied."""


class GroupCommit:
    def __init__(self, store, reactor, max_batch: int = 512, on_commit: Callable | None = None):
        self.store = store
        self.reactor = reactor
        self.max_batch = max_batch
        self.on_commit = on_commit       # metrics hook: (batch size, seconds)
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="pamgate-store", daemon=True)
        self._thread.start()

    def submit(self, work: Callable, keys=()) -> Deferred:
        d = Deferred()
        self._q.put((work, tuple(keys), d))
        return d

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what was submitted, commit it, then end the thread."""
        self._q.put(_STOP)
        self._thread.join(timeout)

    def _take(self):
        first = self._q.get()
        if first is _STOP:
            return None, True
        batch, stop = [first], False
        while len(batch) < self.max_batch:
            try:
                item = self._q.get_nowait()
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
                self._run(batch)
            if stop:
                return

    def _run(self, batch) -> None:
        started = time.perf_counter()
        results = []
        try:
            with self.store.transaction() as uow:
                uow.lock_keys(k for _, keys, _ in batch for k in keys)
                for work, _, d in batch:
                    try:
                        with uow.savepoint():
                            results.append((d, True, work(uow)))
                    except DBAPIError as e:
                        if e.connection_invalidated:
                            raise
                        log.error("store.operation_failed", error=type(e).__name__)
                        results.append((d, False, e))
                    except SQLAlchemyError:
                        raise
                    except Exception as e:  # noqa: BLE001 — one bad operation must not sink the batch
                        log.exception("operation.failed")
                        results.append((d, False, e))
        except Exception as e:  # noqa: BLE001 — the commit failed: nothing of the batch holds
            log.error("store.unavailable", error=type(e).__name__, detail=str(e).splitlines()[0][:200])
            failure = StoreUnavailable(str(e).splitlines()[0][:200])
            for _, _, d in batch:
                self.reactor.callFromThread(d.errback, failure)
            return
        if self.on_commit:
            self.on_commit(len(batch), time.perf_counter() - started)
        for d, ok, value in results:
            self.reactor.callFromThread(d.callback if ok else d.errback, value)
