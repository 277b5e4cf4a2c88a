"""Durability off the writer's thread: the apply process's commits reach the disk while it applies the next.

With `synchronous=FULL`, each SQLite COMMIT waits for the fdatasync of the WAL; the apply process, the one
writer of the feed, then sits idle for the disk (150-600 µs here) while messages queue behind it. Instead
its store commits with `synchronous=NORMAL` (`Store(url, deferred_sync=True)`: the commit is in the WAL,
not yet on the disk) and hands what it would answer to a `WalSync`, which fdatasyncs the WAL and only then
lets the answers go, in the order they came. Meanwhile the writer applies the next batch. One fdatasync
covers every commit written before it began, so answers that pile up share one.

Why this is as safe as FULL for what is answered: SQLite's WAL recovery keeps exactly the commits whose
frames are all on the disk with valid checksums, in order, and the fdatasync that precedes an answer puts on
the disk every frame of its commit and of all commits before it. A checkpoint syncs the WAL before it copies
it into the database (NORMAL does that), and the database after. A failed fdatasync answers nothing: the
process must end (`failed`), and the next one reopens the store, whose recovery decides what holds.
"""
from __future__ import annotations

import os
import queue
import threading

_STOP = object()


class WalSync:
    """A thread that makes a SQLite store's WAL durable, then calls `deliver(items)` with everything handed
    to it (`after_sync`) before that sync began, in order. `deliver` runs on that thread."""

    def __init__(self, path: str, deliver, on_failure=None, name: str = "pamgate-wal-sync"):
        self.path = path + "-wal"
        self.deliver = deliver
        # a sync or a delivery failed: nothing is delivered from then on (after a failed fdatasync, a later
        # one may succeed with pages lost: Linux drops them), and `on_failure(error, items)` is called on the
        # thread instead, with the undelivered items of that round and of each later one (the apply process
        # ends there; the server fails the API's operations with StoreUnavailable)
        self.on_failure = on_failure
        self.failed: BaseException | None = None
        self._fd: int | None = None
        self._ino: int | None = None
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def after_sync(self, item) -> None:
        """Deliver `item` once every commit made so far is on the disk."""
        self._q.put(item)

    def close(self, timeout: float = 60.0) -> None:
        """Sync and deliver what is waiting, then end the thread."""
        self._q.put(_STOP)
        self._thread.join(timeout)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def sync(self) -> None:
        """fdatasync the WAL. Its file is opened once; should SQLite have replaced it (the last connection
        closed, its content checkpointed and synced into the database), the new one is opened."""
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return      # no WAL: every commit is already in the database file, synced by its checkpoint
        if self._fd is None or ino != self._ino:
            if self._fd is not None:
                os.close(self._fd)
            # O_NONBLOCK: nothing for a file; a path that is not one must fail here, not hang
            self._fd, self._ino = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK), ino
        os.fdatasync(self._fd)

    def _loop(self) -> None:
        while True:
            items, stop = [self._q.get()], False
            while True:
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if _STOP in items:
                stop = True
                items = [i for i in items if i is not _STOP]
            if items and self.failed is None:
                try:
                    self.sync()
                    self.deliver(items)
                except BaseException as e:  # noqa: BLE001 — never deliver after a failed sync
                    self.failed = e
                    if self.on_failure is not None:
                        self.on_failure(e, items)
            elif items and self.on_failure is not None:
                self.on_failure(self.failed, items)
            if stop:
                return
