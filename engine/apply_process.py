"""The apply process: inbound messages are prepared and applied in a child process of `pamgate serve`.

Why a process: the reactor (sockets, framing, ACKs) and the store work (parse, rules, SQL) are both Python.
In one process they take turns on one interpreter lock, so the store work could use one core at most and
the reactor waited behind it. In its own process the store work has a core of its own (see BENCHMARKS.md).

The server prepares each message (parse, mapping, facts: the reactor has time to spare) and writes it to
the child's stdin; the child takes whatever has arrived (up to `limits.max_batch`), applies the lot in one
group commit (engine/commit.run_batch)
and only then writes the answers back on its stdout. An ACK therefore still leaves only after the commit
that holds its message.

Records on both pipes: a 4-byte big-endian length, then a pickle (both ends are this module, in processes
of the same server; nothing else writes to these pipes).
- server → child: (id, *the prepared MessageWork's fields but its pipeline and locations), see CARRIED;
  raw None when it is the text's UTF-8
- child → server: ("ready",) once, then ("batch", seconds, committed, [(id, kind, value)]) per commit, kind
  "ok" (value: pipeline.Answered), "unavailable" (value: detail) or "failed" (value: the exception's name).

If the child ends (killed, crashed), every message it held is answered AE "store unavailable" (none was
ACKed; one it had committed is a duplicate when the sender sends it again, and is applied once), and a new
child starts. On shutdown the server closes the child's stdin: the child finishes, commits, answers, exits.
"""
from __future__ import annotations

import argparse
import copyreg
import dataclasses
import io
import os
import pickle
import select
import signal
import struct
import sys
import time
from datetime import timezone

import structlog
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import ProcessProtocol

from consent_store.durability import Durability
from engine import config as configuration
from engine import logs, metrics
from engine.assembly import build_pipeline, open_store
from engine.commit import StoreUnavailable, run_batch
from engine.pipeline import MessageWork
from mllp.frame import write_now

log = structlog.get_logger("pamgate.apply")

_LENGTH = struct.Struct(">I")
# what of a prepared message crosses to the child; the child has a pipeline of its own, and reads the fields
# the facts came from again only for an error that names one (MessageWork.located)
CARRIED = tuple(f.name for f in dataclasses.fields(MessageWork) if f.name not in ("pipeline", "fields"))
_RAW = CARRIED.index("raw")


def _carried(work) -> tuple:
    """A prepared message's fields for the pipe; its raw bytes left out (None) when they are its text's
    UTF-8, as they mostly are: the child encodes the text again (`_work`) rather than unpickle 1 KB more."""
    values = [getattr(work, f) for f in CARRIED]
    if work.raw == work.text.encode("utf-8", "surrogatepass"):
        values[_RAW] = None
    return tuple(values)


def _work(pipeline, carried) -> MessageWork:
    work = MessageWork(pipeline, *carried)
    if work.raw is None:
        work.raw = work.text.encode("utf-8", "surrogatepass")
    return work


def _timezone(tz: timezone) -> tuple:
    return timezone, tz.__getinitargs__()


# One pickler for every record (its memo cleared after each), written into one buffer: the bytes are
# pickle.dumps's, without a pickler made per record. `datetime.timezone` is reduced as pickle would, without
# asking copyreg for the slots of a type that cannot keep the answer (every record holds aware datetimes).
_buffer = io.BytesIO()
_pickler = pickle.Pickler(_buffer, protocol=pickle.HIGHEST_PROTOCOL)
_pickler.dispatch_table = {**copyreg.dispatch_table, timezone: _timezone}
_NO_LENGTH = bytes(_LENGTH.size)


def _record(value) -> bytes:
    """A record: the length of its pickle, then the pickle (as pickle.dumps makes it)."""
    try:
        _buffer.write(_NO_LENGTH)
        _pickler.dump(value)
        with _buffer.getbuffer() as view:
            _LENGTH.pack_into(view, 0, len(view) - _LENGTH.size)
        return _buffer.getvalue()
    finally:
        _pickler.clear_memo()
        _buffer.seek(0)
        _buffer.truncate()


def _records(buffer: bytearray, limit: int | None = None) -> list:
    """Take the complete records off the front of `buffer` (at most `limit`); a partial one stays."""
    out, offset = [], 0
    while limit is None or len(out) < limit:
        if len(buffer) - offset < 4:
            break
        (size,) = _LENGTH.unpack_from(buffer, offset)
        if len(buffer) - offset - 4 < size:
            break
        out.append(pickle.loads(memoryview(buffer)[offset + 4:offset + 4 + size]))
        offset += 4 + size
    del buffer[:offset]
    return out


# --- the server's side ----------------------------------------------------------------------------

class ApplyProcess:
    """In `pamgate serve`: starts the child, sends it prepared messages, fires each one's Deferred with its
    answer, and starts a new child when one ends."""

    RESTART_DELAYS = (0.2, 0.5, 1, 2, 5, 10)

    def __init__(self, reactor, config_path: str | None, on_commit=None, executable: str = sys.executable):
        self.reactor = reactor
        self.config_path = os.path.abspath(config_path) if config_path else None
        self.on_commit = on_commit
        self.executable = executable
        self._pending: dict = {}
        self._outgoing: list[bytes] = []    # records not written yet (`_send`)
        self._next_id = 0
        self._child = None
        self._stopping = False
        self._ended = None
        self._restarts = 0
        self._started_at = 0.0
        self._ready = False
        self._ended_unasked = 0       # since the server started: what `pamgate status` shows
        # read at scrape time rather than counted up and down on every message (`pamgate serve` has one)
        metrics.apply_in_flight.set_function(lambda: len(self._pending))

    def start(self) -> None:
        args = [self.executable, "-m", "engine.apply_process"]
        if self.config_path:
            args += ["--config", self.config_path]
        self._ended = Deferred()
        self._started_at = time.monotonic()
        self._child = _ChildProtocol(self)
        # stderr is the server's own: the child's log lines go where the server's go
        self.reactor.spawnProcess(self._child, self.executable, args, env=os.environ.copy(), path=os.getcwd(),
                                  childFDs={0: "w", 1: "r", 2: 2})

    @property
    def ready(self) -> bool:
        """The child has started and is taking messages."""
        return self._ready

    def state(self) -> dict:
        """For `GET /v1/status`: ready or not, the child's process id, how often it ended unasked."""
        return {"ready": self._ready, "process_id": self.pid, "in_flight": len(self._pending),
                "restarts": self._ended_unasked}

    @property
    def pid(self) -> int | None:
        return self._child.transport.pid if self._child and self._child.transport else None

    def submit(self, work):
        """Apply a prepared message (pipeline.MessageWork) in the child: a Deferred that fires with its
        pipeline.Answered once committed, or fails (StoreUnavailable, or an error of ours) when nothing of
        it was applied."""
        if self._child is None or self._child.transport is None or self._stopping:
            return fail(StoreUnavailable("the apply process is restarting"))
        self._next_id += 1
        d = Deferred()
        self._pending[self._next_id] = d
        # the records of one reactor turn (the frames of every connection that was readable) leave in one
        # write at its end: one system call, and the child takes them in one commit as before
        self._outgoing.append(_record((self._next_id, *_carried(work))))
        if len(self._outgoing) == 1:
            self.reactor.callLater(0, self._send)
        return d

    def _send(self) -> None:
        records, self._outgoing = self._outgoing, []
        stdin = self._child.transport.pipes.get(0) if self._child and self._child.transport else None
        if records and stdin is not None:
            write_now(stdin, b"".join(records))

    def stop(self, timeout: float = 30.0):
        """Close the child's stdin: it finishes what it holds, commits, answers, exits. Killed after
        `timeout` seconds."""
        self._stopping = True
        if self._child is None or self._child.transport is None:
            return succeed(None)
        self._send()
        self._child.transport.closeStdin()
        killer = self.reactor.callLater(timeout, self._kill)

        def ended(result):
            if killer.active():
                killer.cancel()
            return result
        return self._ended.addBoth(ended)

    def _kill(self) -> None:
        log.error("apply.process_kill", reason="did not end in time")
        try:
            self._child.transport.signalProcess("KILL")
        except Exception:  # noqa: BLE001 — it ended meanwhile
            pass

    # from the child

    def _answered(self, record) -> None:
        if record[0] == "ready":
            log.info("apply.process_ready", process_id=self.pid)   # "pid" is redacted: a patient id
            self._ready = True
            self._restarts = 0
            return
        _, seconds, committed, answers = record
        if committed and self.on_commit:
            self.on_commit(len(answers), seconds)
        for ident, kind, value in answers:
            d = self._pending.pop(ident, None)
            if d is None:
                continue
            if kind == "ok":
                d.callback(value)
            elif kind == "unavailable":
                d.errback(StoreUnavailable(value))
            else:
                d.errback(OperationFailed(value))

    def _ended_child(self, status) -> None:
        code = getattr(status.value, "exitCode", None)
        pending, self._pending = self._pending, {}
        self._child, self._ready = None, False
        self._outgoing = []     # not sent: answered below, never to go to the next child
        for d in pending.values():
            d.errback(StoreUnavailable("the apply process ended"))
        if self._stopping:
            self._ended.callback(None)
            return
        # a child that keeps dying at start (a store it cannot open) is restarted less and less often
        delay = self.RESTART_DELAYS[min(self._restarts, len(self.RESTART_DELAYS) - 1)]
        if time.monotonic() - self._started_at > 60:
            self._restarts, delay = 0, self.RESTART_DELAYS[0]
        self._restarts += 1
        self._ended_unasked += 1
        metrics.apply_restarts.inc()
        log.error("apply.process_ended", exit_code=code, in_flight=len(pending), restart_in=delay)
        self.reactor.callLater(delay, self._restart)

    def _restart(self) -> None:
        if not self._stopping:
            self.start()


class OperationFailed(Exception):
    """The child could not apply a message for a reason of ours (not the store's): nothing was applied."""


class _ChildProtocol(ProcessProtocol):
    def __init__(self, owner: ApplyProcess):
        self.owner = owner
        self.buffer = bytearray()

    def childDataReceived(self, fd, data) -> None:
        self.buffer += data
        for record in _records(self.buffer):
            self.owner._answered(record)

    def processEnded(self, status) -> None:
        self.owner._ended_child(status)


# --- the child's side -----------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pamgate-apply")
    ap.add_argument("--config")
    args = ap.parse_args(argv)
    # the server ends this process by closing its stdin, once it has stopped taking messages; a Ctrl-C
    # sent to the whole process group must not cut a batch short
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # the answers own the real stdout; anything printed by mistake goes to stderr
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        cfg = configuration.load(args.config)
        logs.configure(cfg.log.level, cfg.log.format)
        cfg.store.auto_upgrade = False      # the server has migrated it
        store = open_store(cfg, deferred_sync=True)
        pipeline = build_pipeline(cfg)
    except Exception as e:  # noqa: BLE001 — one line; the server logs apply.process_ended and starts another
        print(f"pamgate: apply process: cannot start: {(str(e).splitlines() or [type(e).__name__])[0]}",
              file=sys.stderr, flush=True)
        return 70
    try:
        answers.write(_record(("ready",)))
        answers.flush()
        _serve(answers, store, pipeline, cfg.limits.max_batch)
    except BrokenPipeError:
        pass    # the server is gone: what was committed has no ACK; its resends are duplicates, applied once
    store.dispose()
    return 0


def _serve(answers, store, pipeline, max_batch: int) -> None:
    """Until the server closes our stdin: take what has arrived, apply it in one commit, answer once that
    commit is on the disk. With a SQLite file the disk is waited for by a thread of Durability while this one
    applies the next batch (consent_store/durability.py), or by this one when no message waits; elsewhere
    each commit is durable when it returns."""
    def deliver(records) -> None:
        answers.write(b"".join(records))
        answers.flush()
    durable = Durability(store, deliver, _sync_failed, "pamgate-apply") if store.deferred_sync else None
    send = durable.committed if durable else (lambda record, inline: deliver([record]))
    try:
        _apply_until_closed(send, store, pipeline, max_batch)
    finally:
        if durable:
            durable.close()


def _sync_failed(error: BaseException, _answers) -> None:
    """On the WalSync thread: the WAL could not be made durable, or the server is gone. Commits this
    process made may be lost or unanswered; none was answered unless durable. End now: the server answers
    AE "store unavailable" for what it held and starts another process, which reopens the store (SQLite's
    recovery keeps what reached the disk; a resend of a message that held is a duplicate, applied once)."""
    if not isinstance(error, BrokenPipeError):
        log.error("apply.sync_failed", error=type(error).__name__, detail=str(error)[:200])
    sys.stderr.flush()
    os._exit(0 if isinstance(error, BrokenPipeError) else 75)


def _apply_until_closed(send, store, pipeline, max_batch: int) -> None:
    """`send(record, inline)`: answer a batch once its commit is durable; what it returns, when anything, is
    why the WAL could not start over (Durability.committed)."""
    buffer = bytearray()
    while True:
        requests = _records(buffer, max_batch)
        if not requests:
            # 64 KiB: below malloc's mmap threshold, so a read does not map and unmap a fresh 1 MiB
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break   # the server closed our stdin: all it sent is answered
            buffer += chunk
            continue
        started = time.perf_counter()
        works = [_work(pipeline, carried) for _, *carried in requests]
        results, committed = run_batch(store, [(w.run, w.keys(), w.refused) for w in works])
        seconds = time.perf_counter() - started
        out = []
        for (ident, *_), work, (ok, value) in zip(requests, works, results):
            if ok:
                out.append((ident, "ok", work.answered(value)))
            elif isinstance(value, StoreUnavailable):
                out.append((ident, "unavailable", str(value)))
            else:
                # its refusal could not be written either (run_batch logged why): an error of ours
                log.error("message.internal_error", error=type(value).__name__)
                out.append((ident, "failed", type(value).__name__))
        # nothing waiting to be applied: sync here rather than wake the WalSync thread for it
        failed = send(_record(("batch", seconds, committed, out)), inline=not buffer and not _readable(0))
        if failed:
            log.warning("store.wal_restart_failed", detail=failed)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


if __name__ == "__main__":
    sys.exit(main())
