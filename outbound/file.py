"""The `file` destination: one JSON object a line, appended and fsynced."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from twisted.internet import defer
from twisted.internet.threads import deferToThread

from outbound.delivery import DeliveryFailed, failure_line, public_envelope


class FileChannel:
    """One JSON object a line, appended and fsynced before the delivery counts as done."""

    def __init__(self, dest, reactor):
        self.dest, self.reactor = dest, reactor
        self.path = Path(dest.path)
        self._lock = threading.Lock()
        self._file = None

    def _append(self, line: bytes) -> None:
        with self._lock:
            start = None
            try:
                if self._file is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(self.path, "ab", buffering=0)
                fd = self._file.fileno()
                start = os.lseek(fd, 0, os.SEEK_END)
                written = 0
                while written < len(line):   # an unbuffered write may be short
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except OSError as e:
                # A full disk may have taken part of the line: cut it off, or the retry's line
                # would be glued to it and a reader would lose both.
                if start is not None:
                    try:
                        os.ftruncate(self._file.fileno(), start)
                    except OSError:
                        pass
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
        return deferToThread(self._append, line.encode()).addErrback(failure_line, self.dest.timeout)

    def close(self) -> defer.Deferred:
        with self._lock:
            self._close()
        return defer.succeed(None)
