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

Checkpoints (copying the WAL into the database file, with an fdatasync of each) are taken off the writer
too: its connections do not checkpoint at commit (`wal_autocheckpoint=0`), a `WalCheckpoint` thread does,
on a connection of its own, beside the writer. In the commit, a checkpoint held a whole batch (and every
ACK or decision waiting on it) for several milliseconds: the p99.
"""
from __future__ import annotations

import os
import sqlite3
import sys
import threading


class _SqliteFile:
    """A read-only descriptor on one of SQLite's side files (-wal, -shm), opened again should SQLite have
    made the file anew (every connection closed meanwhile: its content is then in the database file)."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None
        self._ino: int | None = None

    def fd(self) -> int | None:
        """The descriptor of the file as it is now; None when there is none."""
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return None
        if self._fd is None or ino != self._ino:
            self.close()
            # O_NONBLOCK: nothing for a file; a path that is not one must fail here, not hang
            self._fd, self._ino = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK), ino
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class WalSync:
    """Makes a SQLite store's WAL durable, then calls `deliver(items)` with everything handed to it
    (`after_sync`) before that sync began, in order: on a thread of its own, or on the caller's (`inline`)
    when the caller has nothing else to do meanwhile, which spares a thread hand-over per answer when the
    feed is quiet (one connection: each message waits for the previous one's ACK)."""

    def __init__(self, path: str, deliver, on_failure=None, name: str = "pamgate-wal-sync"):
        self.wal = _SqliteFile(path + "-wal")
        self.deliver = deliver
        # a sync or a delivery failed: nothing is delivered from then on (after a failed fdatasync, a later
        # one may succeed with pages lost: Linux drops them), and `on_failure(error, items)` is called
        # instead, with the undelivered items of that round and of each later one (the apply process ends
        # there; the server fails the API's operations with StoreUnavailable)
        self.on_failure = on_failure
        self.failed: BaseException | None = None
        self._items: list = []
        self._stopping = False
        self._waiting = threading.Condition()    # guards _items and _stopping
        self._turn = threading.Lock()           # one round at a time: take, sync, deliver, in order
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def after_sync(self, item, inline: bool = False) -> None:
        """Deliver `item` once every commit made so far is on the disk; `inline`: sync and deliver now, on
        this thread (after whatever the thread is delivering)."""
        with self._waiting:
            self._items.append(item)
            if not inline:
                self._waiting.notify()
        if inline:
            self._round()

    def close(self, timeout: float = 60.0) -> None:
        """Sync and deliver what is waiting, then end the thread."""
        with self._waiting:
            self._stopping = True
            self._waiting.notify()
        self._thread.join(timeout)
        self._round()
        self.wal.close()

    def sync(self) -> None:
        """fdatasync the WAL (none: every commit is already in the database file, synced by its checkpoint)."""
        fd = self.wal.fd()
        if fd is not None:
            os.fdatasync(fd)

    def _loop(self) -> None:
        while True:
            with self._waiting:
                while not self._items and not self._stopping:
                    self._waiting.wait()
                if self._stopping and not self._items:
                    return
            self._round()

    def _round(self) -> None:
        """Take everything waiting, sync, deliver it. Rounds never overlap, and each takes all that came
        before it, so deliveries keep the order of `after_sync`; the sync begins after the item's commit."""
        with self._turn:
            with self._waiting:
                items, self._items = self._items, []
            if not items:
                return
            if self.failed is not None:
                if self.on_failure is not None:
                    self.on_failure(self.failed, items)
                return
            try:
                self.sync()
                self.deliver(items)
            except BaseException as e:  # noqa: BLE001 — never deliver after a failed sync
                self.failed = e
                if self.on_failure is not None:
                    self.on_failure(e, items)


class WalCheckpoint:
    """A thread that keeps a SQLite store's WAL short beside its writers: once PENDING frames are not yet
    in the database file, a PASSIVE checkpoint copies them (it waits for no one). It cannot make the WAL
    start over: SQLite does that when a write begins with every frame copied, which a writer that never
    pauses never sees. So the writer, between two batches, calls `restart_if_long`: when the WAL holds
    LONGEST frames (read in the WAL index's header, sqlite.org/walformat.html), it lets it start over
    (`Store.restart_wal`: the few frames left are copied while it waits)."""

    PENDING = 1000      # SQLite's own wal_autocheckpoint
    LONGEST = 16000     # 64 MB of 4 KiB pages

    def __init__(self, path: str, every: float = 0.05, name: str = "pamgate-wal-checkpoint"):
        self.path, self.every = path, every
        self.checkpoints = 0                # taken, for the tests and the curious
        self._nudged = threading.Event()
        self._stopping = False
        self._shm = _SqliteFile(path + "-shm")
        self._lock = threading.Lock()       # the -shm descriptor, read from the writer's thread too
        self._checkpointing = threading.Lock()  # this thread's checkpoint, or the writer's restart
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._nudged.set()
        self._thread.join(timeout)
        with self._lock:
            self._shm.close()

    def long(self) -> bool:
        """The WAL holds LONGEST frames or more."""
        return self.frames()[0] >= self.LONGEST

    def restart_if_long(self, store) -> str | None:
        """On the writer's thread, between two of its transactions: when the WAL is long, let it start over
        (`store.restart_wal`, which says why it could not). Never beside this thread's own checkpoint: SQLite
        lets one checkpoint run at a time, and refuses the other at once."""
        if not self.long():
            return None
        with self._checkpointing:
            return store.restart_wal()

    def frames(self) -> tuple[int, int]:
        """(frames in the WAL, frames of it already copied into the database): mxFrame and nBackfill of the
        WAL index's header, in the machine's byte order; (0, 0) when there is no WAL."""
        with self._lock:
            fd = self._shm.fd()
            if fd is None:
                return 0, 0
            head = os.pread(fd, 100, 0)
        if len(head) < 100:
            return 0, 0
        return int.from_bytes(head[16:20], sys.byteorder), int.from_bytes(head[96:100], sys.byteorder)

    def _loop(self) -> None:
        conn = None
        try:
            while not self._stopping:
                self._nudged.wait(self.every)
                if self._stopping:
                    break
                try:
                    in_wal, copied = self.frames()
                    if in_wal - copied < self.PENDING:
                        continue
                    if conn is None:
                        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                                               check_same_thread=False)
                        conn.execute("PRAGMA synchronous=NORMAL")   # the WAL synced before it is copied
                    with self._checkpointing:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except (sqlite3.Error, OSError):
                    # busy or failing: the next tick tries again; the writers' own errors say what is wrong
                    if conn is not None:
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()


class Durability:
    """What a writer on a store that commits without waiting for the disk (`Store(deferred_sync=True)`) does
    after each commit: hand its answers to a WalSync, and let the WAL start over when it is long
    (WalCheckpoint, whose thread copies it meanwhile). The apply process and the server's group commit."""

    def __init__(self, store, deliver, on_failure, name: str):
        self.store = store
        self.sync = WalSync(store.path, deliver, on_failure=on_failure, name=f"{name}-sync")
        self.checkpoints = WalCheckpoint(store.path, name=f"{name}-checkpoint")

    def committed(self, answers, inline: bool = False) -> str | None:
        """`answers` delivered once the commit just made is on the disk (`inline`: see WalSync.after_sync);
        then, between two transactions, the WAL let start over if it is long: why it could not, or None."""
        self.sync.after_sync(answers, inline=inline)
        return self.checkpoints.restart_if_long(self.store)

    def close(self, timeout: float = 60.0) -> None:
        """Deliver what waits, then end both threads."""
        self.sync.close(timeout)
        self.checkpoints.close(timeout)
