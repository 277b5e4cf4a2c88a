"""MLLP load generator: throughput and ACK latency per number of connections.

    python bench/load.py HOST PORT --connections 1,4,16 --messages 5000

For each concurrency level, ``--messages`` PAM FR ADT^A01 (``bench/messages.py``, 800–1500 bytes,
fresh control ids; or with ``--feed realistic``, the event mix and long-tailed population of
``bench/feed.py``, continued from level to level) are shared among that many connections; each connection sends one message and
waits for its ACK before the next. Every ACK is checked (MSA-1 ``AA``/``CA``, MSA-2 = MSH-10).
Prints one line per level: msg/s, p50 and p99 ACK latency, and the ACKs that were not ``AA``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, endpoints, task  # noqa: E402

from bench.messages import adt_a01  # noqa: E402
from mllp.ack import read_ack  # noqa: E402
from mllp.client import MLLPClientProtocol  # noqa: E402


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def run_connection(reactor, host, port, batch, latencies, problems, timeout):
    client = MLLPClientProtocol(timeout=timeout, clock=reactor)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=10)
    await endpoints.connectProtocol(endpoint, client)
    client.transport.setTcpNoDelay(True)
    try:
        for control_id, payload in batch:
            started = time.perf_counter()
            ack = await client.send(payload)
            latencies.append(time.perf_counter() - started)
            read = read_ack(ack)
            if read.problem(control_id):
                problems[read.code or "?"] = problems.get(read.code or "?", 0) + 1
    finally:
        client.transport.loseConnection()


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


async def drive(reactor, host, port, texts, connections, timeout):
    """Send `texts` (PAM FR messages, segments split by CR) over `connections` MLLP connections, each waiting
    for its ACK: (sorted ACK latencies, the not-AA ACKs by code, wall seconds)."""
    batches = [[] for _ in range(connections)]
    for i, text in enumerate(texts):
        control_id = text.split("\r", 1)[0].split("|")[9]
        batches[i % connections].append((control_id, text.encode("utf-8") + b"\r"))
    latencies: list[float] = []
    problems: dict[str, int] = {}
    started = time.perf_counter()
    await defer.gatherResults(
        [defer.ensureDeferred(run_connection(reactor, host, port, batch, latencies, problems, timeout))
         for batch in batches],
        consumeErrors=True,
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    return latencies, problems, elapsed


async def run_level(reactor, args, connections, first_index):
    texts = [message(args, first_index + i) for i in range(args.messages)]
    latencies, problems, elapsed = await drive(reactor, args.host, args.port, texts, connections, args.timeout)
    refused = ", ".join(f"{k}={v}" for k, v in sorted(problems.items())) or "none"
    print(f"{connections:>5} conn  {len(latencies):>7} msg  {elapsed:7.2f} s  "
          f"{len(latencies) / elapsed:9.0f} msg/s  p50 {percentile(latencies, 0.50) * 1000:7.2f} ms  "
          f"p99 {percentile(latencies, 0.99) * 1000:7.2f} ms  not-AA: {refused}", flush=True)


async def main(reactor, args):
    levels = [int(n) for n in args.connections.split(",") if n.strip()]
    print(f"load: {args.host}:{args.port}, {args.messages} messages per level, seed {args.seed}",
          flush=True)
    index = 0
    if args.warmup:
        warm = argparse.Namespace(**{**vars(args), "messages": args.warmup})
        print("warm-up:", end=" ", flush=True)
        await run_level(reactor, warm, 1, index)
        index += args.warmup
    for connections in levels:
        await run_level(reactor, args, connections, index)
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
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, parse_args())))
