"""MLLP load generator: throughput and ACK latency per number of connections.

    python bench/load.py HOST PORT --connections 1,4,16 --messages 5000

For each concurrency level, ``--messages`` PAM FR ADT^A01 (``bench/messages.py``, 800–1500 bytes,
fresh control ids; or with ``--feed realistic``, the event mix and long-tailed population of
``bench/feed.py``, continued from level to level) are shared among that many connections; each connection sends one message and
waits for its ACK before the next. Every ACK is checked (MSA-1 ``AA``/``CA``, MSA-2 = MSH-10).
Prints one line per level: msg/s, p50 and p99 ACK latency, and the ACKs that were not ``AA``.

The generator runs on the same cores as the server it measures, and a real sender's CPU is not on them: so
it is lean, one thread, plain non-blocking sockets in a ``selectors`` loop (``exchange``, which
``bench/decisions.py``'s HTTP clients use too), the frames built before the clock starts and the ACKs read
after it stops: 11–28 µs of CPU per message while the server keeps it busy, about 100 when each ACK wakes it
from sleep (the Twisted client it replaced: 35–100 and 280–300; BENCHMARKS.md, "How to run"). A connection
closed by the server or an ACK later than ``--timeout`` ends the run with an error.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.messages import adt_a01  # noqa: E402
from mllp.ack import read_ack  # noqa: E402

# mllp/frame.py's envelope, written out: importing it would bring Twisted into this process
START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\r"
MAX_ANSWER = 16 << 20


class LoadError(RuntimeError):
    """The server closed a connection, or did not answer in time: the run cannot go on."""


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def refusal(ack: bytes, control_id: str) -> str | None:
    """None when `ack` (an ACK, envelope removed) accepts the message whose MSH-10 is `control_id`: MSA-1 AA or
    CA, MSA-2 the id; else the code it is counted under (its MSA-1, "?" without one). The usual ACK, an MSH
    with the default separators then ``MSA|AA|id``, is read from its bytes; any other by mllp.ack.read_ack."""
    if control_id.isascii() and ack.startswith(b"MSH|^~\\&") and b"\n" not in ack:
        msa = ack.find(b"\r") + 1
        if msa and ack.startswith(b"MSA|", msa):
            end = ack.find(b"\r", msa)
            fields = ack[msa + 4:end if end >= 0 else len(ack)].split(b"|", 2)
            if len(fields) > 1 and fields[0] in (b"AA", b"CA") and fields[1] == control_id.encode():
                return None
    from mllp.client import decode_ack      # the rare answer: not worth Twisted's import for every run
    read = read_ack(decode_ack(ack))
    return (read.code or "?") if read.problem(control_id) else None


def mllp_ack(buffer: bytes) -> tuple[bytes, int] | None:
    """(the first frame in `buffer`, envelope removed; where it ends), or None while it is incomplete."""
    end = buffer.find(END_BLOCK)
    if end < 0:
        return None
    return buffer[buffer.find(START_BLOCK, 0, end) + 1:end], end + 2     # bytes before the start block skipped


def http_response(buffer: bytes) -> tuple[bytes, int] | None:
    """(the status line of the first HTTP/1.1 response in `buffer`; where the response ends), or None while it
    is incomplete. Its body is framed by Content-Length or chunked (what twisted.web sends after a wait)."""
    head = buffer.find(b"\r\n\r\n")
    if head < 0:
        return None
    lines = buffer[:head].split(b"\r\n")
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    at = head + 4
    if not chunked:
        return (lines[0], at + length) if len(buffer) >= at + length else None
    while True:                                   # chunks: size in hex, CRLF, data, CRLF; then 0, trailers, CRLF
        eol = buffer.find(b"\r\n", at)
        if eol < 0:
            return None
        size = int(buffer[at:eol].split(b";")[0], 16)
        if size == 0:
            end = buffer.find(b"\r\n\r\n", eol)   # the empty line after the trailers (usually none)
            return (lines[0], end + 4) if end >= 0 else None
        at = eol + 2 + size + 2


class Sender:
    """One connection: sends its requests one at a time, each after the answer to the one before."""

    __slots__ = ("number", "sock", "requests", "next", "sent_at", "buffer", "unsent")

    def __init__(self, number: int, sock: socket.socket, requests: list[tuple[str, bytes]]):
        self.number, self.sock, self.requests = number, sock, requests
        self.next = 0              # the request sent, waiting for its answer
        self.sent_at = 0.0
        self.buffer = b""
        self.unsent = b""          # what the socket did not take at once (sent when the selector says it can)

    @property
    def done(self) -> bool:
        return self.next == len(self.requests)

    def send(self) -> None:
        data = self.requests[self.next][1]
        self.sent_at = time.perf_counter()
        self.unsent = data[self.sock.send(data):]

    def flush(self) -> None:
        self.unsent = self.unsent[self.sock.send(self.unsent):]


def connect(host: str, port: int, number: int) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError as e:
        raise LoadError(f"connection {number}: cannot connect to {host}:{port}: {e}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def exchange(host, port, batches, answer, timeout, awaited="the ACK of"):
    """Each of `batches` (lists of (key, the request's bytes)) on a connection of its own, one request at a
    time: the next goes when `answer` (mllp_ack, http_response) finds the whole answer to the one before in
    what came back. One thread, one selectors loop, nothing else per request: the generator's CPU is on the
    same cores as the server's. Returns (the latencies, send to answer, unsorted; [(key, answer)] in the order
    they came; wall seconds). Raises LoadError when a connection is closed, or an answer does not come
    within `timeout` seconds."""
    latencies: list[float] = []
    answers: list[tuple[str, bytes]] = []
    selector = selectors.DefaultSelector()
    senders = []
    tick = min(timeout, 1.0)       # how often the deadlines are looked at, at most

    def lost(sender: Sender, why: str) -> LoadError:
        return LoadError(f"connection {sender.number} to {host}:{port}: {why}, waiting for {awaited} "
                         f"{sender.requests[sender.next][0]} (its {sender.next} before were answered)")

    def send(sender: Sender) -> None:
        try:
            sender.send()
        except OSError as e:
            raise lost(sender, str(e)) from None
        if sender.unsent:
            selector.modify(sender.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, sender)

    try:
        for number, batch in enumerate(batches, 1):
            if batch:
                senders.append(Sender(number, connect(host, port, number), batch))
        started = time.perf_counter()
        for sender in senders:
            selector.register(sender.sock, selectors.EVENT_READ, sender)
            send(sender)
        waiting, check_at = len(senders), started + tick
        while waiting:
            for key, mask in selector.select(tick):
                sender = key.data
                try:
                    if mask & selectors.EVENT_WRITE:
                        sender.flush()
                        if not sender.unsent:
                            selector.modify(sender.sock, selectors.EVENT_READ, sender)
                    data = sender.sock.recv(65536) if mask & selectors.EVENT_READ else None
                except OSError as e:
                    raise lost(sender, str(e)) from None
                if data is None:
                    continue
                if not data:
                    raise lost(sender, "closed by the server")
                sender.buffer = sender.buffer + data if sender.buffer else data
                # an answer nobody asked for is taken for the next request's, as the Twisted client did
                while (found := answer(sender.buffer)) is not None:
                    latencies.append(time.perf_counter() - sender.sent_at)
                    answers.append((sender.requests[sender.next][0], found[0]))
                    sender.buffer = sender.buffer[found[1]:]
                    sender.next += 1
                    if sender.done:
                        selector.unregister(sender.sock)
                        waiting -= 1
                        break
                    send(sender)
                if len(sender.buffer) > MAX_ANSWER:
                    raise lost(sender, f"{len(sender.buffer)} bytes without the end of an answer")
            now = time.perf_counter()
            if now >= check_at:
                check_at = now + tick
                for sender in senders:
                    if not sender.done and now - sender.sent_at > timeout:
                        raise lost(sender, f"no answer within {timeout:g} s")
        elapsed = time.perf_counter() - started
    finally:
        selector.close()
        for sender in senders:
            sender.sock.close()
    return latencies, answers, elapsed


def drive(host, port, texts, connections, timeout):
    """Send `texts` (PAM FR messages, segments split by CR) over `connections` MLLP connections, each waiting
    for its ACK: (sorted ACK latencies, the not-AA ACKs by code, wall seconds). Raises LoadError when a
    connection is closed or an ACK does not come within `timeout` seconds."""
    batches = [[] for _ in range(connections)]
    for i, text in enumerate(texts):
        control_id = text.split("\r", 1)[0].split("|")[9]
        batches[i % connections].append((control_id, START_BLOCK + text.encode("utf-8") + b"\r" + END_BLOCK))
    latencies, acks, elapsed = exchange(host, port, batches, mllp_ack, timeout)
    problems: dict[str, int] = {}
    for control_id, ack in acks:              # read once the clock has stopped
        code = refusal(ack, control_id)
        if code is not None:
            problems[code] = problems.get(code, 0) + 1
    latencies.sort()
    return latencies, problems, elapsed


FEED = None


def message(args, index: int) -> str:
    """The `index`th message: a new patient's A01 (`--feed a01`), or the realistic feed's next one."""
    global FEED
    if args.feed == "a01":
        return adt_a01(index, seed=args.seed)
    if FEED is None:
        from bench.feed import Feed
        FEED = Feed(seed=args.seed)
    return FEED.next()


def run_level(args, connections, first_index):
    texts = [message(args, first_index + i) for i in range(args.messages)]
    latencies, problems, elapsed = drive(args.host, args.port, texts, connections, args.timeout)
    refused = ", ".join(f"{k}={v}" for k, v in sorted(problems.items())) or "none"
    print(f"{connections:>5} conn  {len(latencies):>7} msg  {elapsed:7.2f} s  "
          f"{len(latencies) / elapsed:9.0f} msg/s  p50 {percentile(latencies, 0.50) * 1000:7.2f} ms  "
          f"p99 {percentile(latencies, 0.99) * 1000:7.2f} ms  not-AA: {refused}", flush=True)


def main(args):
    levels = [int(n) for n in args.connections.split(",") if n.strip()]
    print(f"load: {args.host}:{args.port}, {args.messages} messages per level, seed {args.seed}",
          flush=True)
    index = 0
    if args.warmup:
        warm = argparse.Namespace(**{**vars(args), "messages": args.warmup})
        print("warm-up:", end=" ", flush=True)
        run_level(warm, 1, index)
        index += args.warmup
    for connections in levels:
        run_level(args, connections, index)
        index += args.messages


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--connections", default="1,4,16", help="comma-separated levels")
    parser.add_argument("--messages", type=int, default=5000, help="messages per level")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000,
                        help="message series (default: from the clock, so control ids are fresh)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one ACK")
    parser.add_argument("--feed", choices=("a01", "realistic"), default="a01",
                        help="a01: each message a new patient's A01; realistic: bench/feed.py's event mix and tail")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.messages > 10_000_000:
        parser.error("--messages must be between 1 and 10,000,000")
    return args


if __name__ == "__main__":
    try:
        main(parse_args())
    except LoadError as e:
        sys.exit(f"load: {e}")
