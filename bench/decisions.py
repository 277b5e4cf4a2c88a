"""The decision API under load: POST /v1/decisions per second, p50 and p99, at 1 and 8 concurrent clients.

    python bench/decisions.py [--patients 100000] [--head 3000] [--requests 3000] [--clients 1,8] [--store-cpu]

A SQLite store holding `--patients` patients of the realistic feed (bench/feed.py) is filled in process
(pipeline.prepare and run_batch, 1,000 messages a transaction). Drawing patients at random by the feed's
weights would take millions of messages before the tail's patients all appear; the fill instead gives each
patient the number of messages its rank would get, 1/rank^1.1 scaled so that the first has `--head` (every
patient at least one), shuffled, each patient's messages in the feed's own order (admission, moves,
discharge, ZFA). The filled store is kept under var/bench/ keyed by its parameters and the schema's
revision; a run works on a copy of it, so reruns do not fill again.

Then the real `pamgate serve` opens the copy, and `--clients` keep-alive HTTP/1.1 connections each ask
decisions one after the other (consult or feed, for a patient drawn from the feed's own weights: the
long-history ones are asked most), waiting for each answer. Every answer must be 200. Each decision is a
write (audited, its events in the outbox), committed before it is answered. Per level, the server's CPU
time per decision (from /proc: the reactor thread, the API's store thread, the apply process) and its
commits (from /metrics: decisions per commit, milliseconds per commit). `--store-cpu` first times the
store's part alone, in process, on a copy of the same store.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
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
from bench.load import LoadError, exchange, http_response  # noqa: E402


class Fill(Feed):
    """The feed, its patients drawn from a schedule: rank r gets max(1, round(head / r^1.1)) messages."""

    def __init__(self, seed: int, patients: int, head: int):
        super().__init__(seed=seed, patients=1)
        counts = [max(1, round(head / (r + 1) ** 1.1)) for r in range(patients)]
        self.schedule = [p for p, n in enumerate(counts) for _ in range(n)]
        random.Random(seed).shuffle(self.schedule)

    def patient(self) -> int:
        return self.schedule[self.count]


def fill(path: Path, patients: int, head: int, seed: int) -> tuple[int, int]:
    from consent_store.store import Store
    from engine.commit import run_batch
    from engine.config import Config
    from engine.serve import build_pipeline
    pipeline = build_pipeline(Config())
    store = Store(f"sqlite:///{path}")
    store.upgrade()
    feed = Fill(seed, patients, head)
    now = datetime.now(timezone.utc)
    total = len(feed.schedule)
    while feed.count < total:
        texts = [feed.next() for _ in range(min(1000, total - feed.count))]
        works = [pipeline.prepare(t, t.encode(), now) for t in texts]
        results, committed = run_batch(store, [(w.run, w.keys()) for w in works])
        assert committed and all(ok and v.code == "AA" for ok, v in results)
        if feed.count % 20_000 < 1000:
            print(f"  fill: {feed.count:,} of {total:,} messages", flush=True)
    store.dispose()
    return total, len(feed.state)


def schema_revision() -> str:
    """A short digest of the migrations' names: a store filled under another schema is not reused."""
    import hashlib
    names = sorted(p.stem for p in (ROOT / "consent_store" / "migrations" / "versions").glob("*.py"))
    return hashlib.blake2b("|".join(names).encode(), digest_size=4).hexdigest()


def commits(port: int) -> tuple[float, float, float]:
    """The server's commit figures so far (/metrics): transactions, operations in them, seconds spent."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    value = {m.group(1): float(m.group(2)) for m in re.finditer(
        r"^pamgate_commit_(batch_size_count|batch_size_sum|seconds_sum) (\S+)$", text, re.M)}
    return value["batch_size_count"], value["batch_size_sum"], value["seconds_sum"]


def cpu_seconds(pid: int) -> tuple[float, float, float]:
    """CPU time (user and system) of the server from /proc: its main thread (the reactor), its other threads
    (the store thread of the API's group commit), its child processes (the apply process)."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(stat: str) -> float:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    reactor = threads = children = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if int(task.name) == pid:
            reactor = used(task / "stat")
        else:
            threads += used(task / "stat")
        for kid in (task / "children").read_text().split():
            children += sum(used(t / "stat") for t in Path(f"/proc/{kid}/task").iterdir())
    return reactor, threads, children


def filled(patients: int, head: int, seed: int) -> Path:
    """The filled store for these parameters, from var/bench/ when an earlier run left it there."""
    cache = ROOT / "var" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"decisions-p{patients}-h{head}-s{seed}-{schema_revision()}.db"
    if path.exists():
        print(f"store: {path.relative_to(ROOT)} (filled by an earlier run)", flush=True)
        return path
    partial = path.with_suffix(".filling")
    for leftover in cache.glob(partial.name + "*"):
        leftover.unlink()
    started = time.perf_counter()
    sent, n = fill(partial, patients, head, seed)
    for suffix in ("-wal", "-shm"):
        assert not Path(str(partial) + suffix).exists(), "the store was not closed"
    partial.rename(path)
    print(f"store: {n:,} patients from {sent:,} messages of the feed, filled in "
          f"{time.perf_counter() - started:.0f} s, kept as {path.relative_to(ROOT)}", flush=True)
    return path


def bodies(n: int, feed: Feed, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = feed.patient()
        out.append(json.dumps({"patient": {"id": f"{9_000_000 + p}", "authority": AUTHORITY},
                               "action": rng.choice(("consult", "feed")),
                               "user": {"id": f"rpps-{rng.randrange(200)}", "profession": "10"}}).encode())
    return out


def store_cpu(url: str, patients: int, seed: int, requests: int) -> None:
    """The store's part alone, in process: the API's decision operation (engine.api.decision_operation)
    through run_batch, in batches of 1 and of 8, thread CPU time per decision (the commit's fsync waits
    are not CPU; its system calls are)."""
    from consent_store.store import Store
    from engine.api import decision_operation
    from engine.commit import run_batch
    from engine.config import Config
    from engine.domain import DecisionRequest
    from engine.serve import build_pipeline
    pipeline, store, feed = build_pipeline(Config()), Store(url), Feed(seed=seed, patients=patients)
    rng = random.Random(seed)

    def operations(n):
        return [decision_operation(pipeline, {"id": f"{9_000_000 + feed.patient()}", "authority": AUTHORITY},
                                   DecisionRequest(action=rng.choice(("consult", "feed")),
                                                   user=f"rpps-{rng.randrange(200)}", profession="10"))
                for _ in range(n)]
    for size in (1, 8):
        for _ in range(20):
            run_batch(store, operations(size))    # warm-up
        batches = [operations(size) for _ in range(requests // size)]
        started = time.thread_time()
        for batch in batches:
            assert run_batch(store, batch)[1]
        print(f"store work in process, batches of {size}: "
              f"{(time.thread_time() - started) / (len(batches) * size) * 1000:.3f} ms of CPU per decision",
              flush=True)
    store.dispose()


def level(port: int, clients: int, requests: int, feed: Feed, seed: int):
    """`clients` keep-alive connections, each asking its share of `requests` decisions one after the other
    (bench/load.py's lean loop: the client's CPU is on the server's cores): (clients, decisions per second,
    p50 ms, p99 ms, the status lines that were not 200)."""
    work = [(str(i), b"POST /v1/decisions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            for i, body in enumerate(bodies(requests, feed, seed))]
    latencies, answers, elapsed = exchange("127.0.0.1", port, [work[i::clients] for i in range(clients)],
                                           http_response, timeout=60, awaited="the answer to request")
    problems = [status.decode() for _, status in answers if status.split(b" ", 2)[1:2] != [b"200"]]
    latencies.sort()
    return (clients, len(latencies) / elapsed, statistics.median(latencies) * 1000,
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, problems)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--head", type=int, default=3000, help="messages of the first-ranked patient")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--pause", action="store_true", help="print the server's process id (to profile it)")
    ap.add_argument("--store-cpu", action="store_true", help="also the store's part alone, in process")
    args = ap.parse_args()
    source = filled(args.patients, args.head, args.seed)
    with tempfile.TemporaryDirectory(dir=ROOT / "var" / "bench") as tmp:
        db = Path(tmp) / "decisions.db"
        shutil.copyfile(source, db)     # the decisions write: each run starts from the same store
        url = f"sqlite:///{db}"
        if args.store_cpu:
            store_cpu(url, args.patients, args.seed, min(args.requests, 2000))
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
            if args.pause:
                print(f"server process {proc.pid}, http port {port}", flush=True)
            feed = Feed(seed=args.seed, patients=args.patients)
            level(port, 1, 200, feed, 1)   # warm-up
            print("| clients | decisions/s | p50 ms | p99 ms | server CPU per decision: reactor + store thread + apply "
                  "process | decisions per commit | ms per commit | not 200 |")
            print("|---|---|---|---|---|---|---|---|")
            for n in (int(x) for x in args.clients.split(",")):
                cpu, before = cpu_seconds(proc.pid), commits(port)
                c, rate, p50, p99, problems = level(port, n, args.requests, feed, n)
                cpu = [(b - a) / args.requests * 1000 for a, b in zip(cpu, cpu_seconds(proc.pid))]
                batches, ops, seconds = (b - a for a, b in zip(before, commits(port)))
                print(f"| {c} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {sum(cpu):.2f} ms: {cpu[0]:.2f} + {cpu[1]:.2f} + {cpu[2]:.2f} | "
                      f"{ops / batches:.1f} | {seconds / batches * 1000:.2f} | "
                      f"{', '.join(sorted(set(problems))) or 'none'} |", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)

if __name__ == "__main__":
    try:
        main()
    except LoadError as e:
        sys.exit(f"decisions: {e}")
