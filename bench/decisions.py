"""The decision API under load: POST /v1/decisions per second, p50 and p99, at 1 and 8 concurrent clients.

    python bench/decisions.py [--patients 100000] [--requests 3000] [--clients 1,8]

A SQLite store is filled in process (run_batch, 500 messages a transaction) with the realistic feed
(bench/feed.py, over a population twice as large) until it holds `--patients` patients; then the real `pamgate serve` opens it, and
`--clients` keep-alive HTTP/1.1 connections each ask decisions one after the other (consult or feed, for a
patient drawn from the feed's own weights: the long-history ones are asked most), waiting for each answer.
Every answer must be 200. Each decision is a write (audited, its events in the outbox), committed before it
is answered.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.feed import AUTHORITY, Feed  # noqa: E402


def fill(url: str, patients: int, seed: int) -> tuple[int, int]:
    from consent_store.store import Store
    from engine.commit import run_batch
    from engine.config import Config
    from engine.serve import build_pipeline
    pipeline = build_pipeline(Config())
    store = Store(url)
    store.upgrade()
    feed = Feed(seed=seed, patients=2 * patients)
    now = datetime.now(timezone.utc)
    sent = 0
    while len(feed.state) < patients:
        texts = [feed.next() for _ in range(500)]
        works = [pipeline.prepare(t, t.encode(), now) for t in texts]
        results, committed = run_batch(store, [(w.run, w.keys()) for w in works])
        assert committed and all(ok and v.code == "AA" for ok, v in results)
        sent += len(texts)
    store.dispose()
    return sent, len(feed.state)


async def client(port: int, bodies: list[bytes], latencies: list, problems: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            started = time.perf_counter()
            writer.write(b"POST /v1/decisions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            status = await reader.readline()
            length, chunked = 0, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                while (size := int((await reader.readline()).strip(), 16)):
                    await reader.readexactly(size + 2)
                await reader.readline()
            else:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if b" 200 " not in status:
                problems.append(status.decode().strip())
    finally:
        writer.close()


def bodies(n: int, feed: Feed, seed: int) -> list[bytes]:
    import random
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = feed.patient()
        out.append(json.dumps({"patient": {"id": f"{9_000_000 + p}", "authority": AUTHORITY},
                               "action": rng.choice(("consult", "feed")),
                               "user": {"id": f"rpps-{rng.randrange(200)}", "profession": "10"}}).encode())
    return out


async def level(port: int, clients: int, requests: int, feed: Feed, seed: int):
    work = bodies(requests, feed, seed)
    latencies, problems = [], []
    started = time.perf_counter()
    await asyncio.gather(*(client(port, work[i::clients], latencies, problems) for i in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return (clients, len(latencies) / elapsed, statistics.median(latencies) * 1000,
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, problems)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/decisions.db"
        started = time.perf_counter()
        sent, patients = fill(url, args.patients, args.seed)
        print(f"store: {patients:,} patients from {sent:,} messages of the feed, filled in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(f"""store: {{url: "{url}"}}
listeners: {{mllp: [{{endpoint: "tcp:0:interface=127.0.0.1"}}], http: "tcp:0:interface=127.0.0.1"}}
log: {{level: warning}}
""")
        proc = subprocess.Popen([sys.executable, "-m", "pamgate.cli", "serve", "--config", str(cfg)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            port = None
            deadline = time.monotonic() + 60
            while port is None and time.monotonic() < deadline:
                m = re.search(r"http listening on .*:(\d+)\)", proc.stdout.readline())
                port = int(m.group(1)) if m else None
            if port is None:
                raise SystemExit("the server did not say where its HTTP API listens")
            feed = Feed(seed=args.seed, patients=2 * args.patients)
            asyncio.run(level(port, 1, 200, feed, 1))   # warm-up
            print("| clients | decisions/s | p50 ms | p99 ms | not 200 |")
            print("|---|---|---|---|---|")
            for n in (int(x) for x in args.clients.split(",")):
                c, rate, p50, p99, problems = asyncio.run(level(port, n, args.requests, feed, n))
                print(f"| {c} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | "
                      f"{', '.join(sorted(set(problems))) or 'none'} |", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main()
