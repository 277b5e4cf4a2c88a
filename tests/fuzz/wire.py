"""Sending the hostile traffic over real sockets, and judging every answer.

Each failure is filed under a class (a short stable name) with the first example that showed it, so a
run reports what kinds of promise broke, not thousands of lines.
"""
from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from mllp.client import decode_ack
from tests.mllp.support import split_frames

ACK_CODES = {"AA", "AE", "AR", "CA", "CE", "CR"}


class Findings:
    """Failure classes → (count, first example)."""

    def __init__(self, keep: int = 0):
        self.lock = threading.Lock()
        self.classes: dict[str, list] = {}
        self.keep = keep                     # examples kept per class beyond the first, for dump()
        self.examples: dict[str, list] = {}

    def add(self, name: str, example) -> None:
        name = re.sub(r"\d+", "N", name)      # offsets and sizes would split one class into many
        with self.lock:
            entry = self.classes.setdefault(name, [0, example])
            entry[0] += 1
            if self.keep and len(self.examples.setdefault(name, [])) < self.keep:
                self.examples[name].append(example)

    def dump(self, path) -> None:
        """Every kept example, one class after the other (PAMGATE_FUZZ_DUMP), to find a minimal repro."""
        with open(path, "a") as out:
            for name, examples in sorted(self.examples.items()):
                out.write(f"## {name}\n" + "".join(f"{e!r}\n" for e in examples))

    def report(self) -> str:
        return "\n".join(f"- {name}: {n} time(s); e.g. {_short(ex)}" for name, (n, ex) in sorted(self.classes.items()))

    def __bool__(self):
        return bool(self.classes)


def _short(value, limit=600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# -- MLLP ---------------------------------------------------------------------------------------------

def read_ack(raw: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """(MSA-1, MSA-2, [(ERR-3 code, ERR-8 text)]) of one ACK frame, read with the project's ACK reader."""
    text = decode_ack(raw)
    if not text.startswith("MSH") or len(text) < 8:
        raise ValueError("the ACK does not start with MSH")
    sep = text[3]
    segments = text.split("\r")
    msa = [s.split(sep) for s in segments if s.startswith("MSA" + sep)]
    if len(msa) != 1 or len(msa[0]) < 3:
        raise ValueError("the ACK has not exactly one MSA with MSA-2")
    comp = text[4]
    errs = [(f[3].split(comp)[0], f[8] if len(f) > 8 else "")
            for f in (s.split(sep) for s in segments if s.startswith("ERR" + sep)) if len(f) > 3]
    if any(c in text for c in "\x0b\x1c"):
        raise ValueError("the ACK carries MLLP framing bytes")
    return msa[0][1], msa[0][2], errs


def judge_acks(session, received: bytes, findings: Findings, closed_early: bool) -> int:
    """Checks one connection's answers against its frames; returns the number of ACKs read."""
    acks = split_frames(received)
    outside = re.sub(rb"\x0b.*?\x1c\r", b"", received, flags=re.DOTALL)
    if outside:
        findings.add("bytes outside ACK frames", {"outside": outside[:200], "received_tail": received[-300:]})
    if len(acks) < len(session.frames):
        missing = session.frames[len(acks)]
        name = "connection closed before every frame was answered" if closed_early else "no ACK within the timeout"
        if session.half_close:
            name = "half-closed connection: ACKs not sent"
        findings.add(name, {"frames": len(session.frames), "acks": len(acks), "first_unanswered": missing[:400],
                            "answered": [(f[:200], a[:200]) for f, a in zip(session.frames, acks)][-3:]})
    if len(acks) > len(session.frames):
        findings.add("more ACKs than frames", {"frames": len(session.frames), "acks": len(acks)})
    for i, (frame, ack, expected) in enumerate(zip(session.frames, acks, session.expected_ids)):
        try:
            code, msa2, errs = read_ack(ack)
        except Exception as e:  # noqa: BLE001 — whatever stops the project's reader, the ACK is not readable
            findings.add(f"ACK not well formed ({type(e).__name__}: {e})"[:120], {"frame": frame[:400], "ack": ack[:400]})
            continue
        if code not in ACK_CODES:
            findings.add("MSA-1 not an acknowledgment code", {"frame": frame[:400], "ack": ack[:400]})
        if expected is not None and msa2 != expected:
            findings.add("MSA-2 does not echo MSH-10", {"frame": frame[:400], "ack": ack[:400], "expected": expected})
        for err, text in errs:
            if err == "207":
                words = re.sub(r"[^A-Za-z ]+", " ", text)[:40].strip()     # escapes differ with the delimiters
                findings.add(f"AE 207 without a store failure ({words})", {"frame": frame[:600], "ack": ack[:400]})
        if i == len(session.frames) - 1 and expected == session.sentinel and code not in ("AA", "CA"):
            findings.add("clean message after hostile ones not AA", {"ack": ack[:400]})
    return len(acks)


def run_session(port: int, session, findings: Findings, timeout: float) -> int:
    """One connection: a writer thread sends the writes while this thread reads the ACKs."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = bytearray()
    closed_early = False
    write_error = []

    def writer():
        try:
            for w in session.writes:
                sock.sendall(w)
            if session.half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            write_error.append(e)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    want = len(session.frames)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if received.count(b"\x1c\r") >= want and len(split_frames(received)) >= want:
                break     # every frame answered (a half-closed sender need not wait for the server's close)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = sock.recv(1 << 16)
            except socket.timeout:
                break
            except OSError:
                closed_early = True
                break
            if not data:
                closed_early = not session.half_close or len(split_frames(received)) < want
                break
            received += data
            deadline = time.monotonic() + timeout
    finally:
        t.join(timeout)
        sock.close()
    if write_error and not closed_early:
        findings.add("write failed (connection reset by the server)", str(write_error[0]))
    return judge_acks(session, bytes(received), findings, closed_early)


def run_sessions(port: int, sessions, findings: Findings, connections: int = 8, timeout: float = 30.0) -> int:
    with ThreadPoolExecutor(connections) as pool:
        return sum(pool.map(lambda s: run_session(port, s, findings, timeout), sessions))


# -- HTTP ---------------------------------------------------------------------------------------------

def http_exchange(port: int, raw: bytes, timeout: float = 30.0) -> tuple[int | None, bytes, bytes]:
    """Sends one raw request (Connection: close) and reads the whole answer: (status, head, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass   # the server may answer and close before it read everything
        chunks = []
        while True:
            try:
                data = sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    answer = b"".join(chunks)
    while re.match(rb"HTTP/1\.[01] 1\d\d", answer):      # 100 Continue: the answer follows it
        answer = answer.partition(b"\r\n\r\n")[2]
    head, _, body = answer.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return (int(m.group(1)) if m else None), head, body


def _dechunk(data: bytes) -> bytes:
    out, i = [], 0
    while True:
        j = data.find(b"\r\n", i)
        try:
            size = int(data[i:j].split(b";")[0], 16) if j >= 0 else 0
        except ValueError:
            return data
        if size == 0:
            return b"".join(out)
        out.append(data[j + 2:j + 2 + size])
        i = j + 2 + size + 2
