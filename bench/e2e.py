"""End-to-end benchmark: the real `pamgate serve` (SQLite, ACK after commit) against its baselines.

    python bench/e2e.py [--messages 5000] [--connections 1,4,16] [--repeat 3] [--feed a01|realistic]

In one run, on the same generated PAM FR ADT^A01 messages (bench/messages.py):
  1. bare `hl7.parse` (python-hl7), messages per second, in this process;
  2. a bare Twisted ACK-only listener (bench/baseline_listener.py --mode bare), driven by bench/load.py;
  3. `pamgate serve` on a fresh SQLite file (WAL), driven by bench/load.py: every ACK
     leaves after the commit that holds its message is on the disk.
Prints each figure and the ratio of pamgate's throughput to bare hl7.parse. Loopback only; bounded.

With --repeat N, the listener and pamgate runs are made N times, alternating (a fresh server and store each
time), and the tables give the median of each column per level, with the range of msg/s: on a shared VM one
run can be 30 % off the next. hl7.parse is the best of three passes (the baseline's best against our median).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.messages import adt_a01  # noqa: E402

LEVEL = re.compile(r"^\s*(\d+) conn\s+(\d+) msg\s+([\d.]+) s\s+(\d+) msg/s\s+p50\s+([\d.]+) ms\s+p99\s+([\d.]+) ms\s+not-AA: (.*)$")


def hl7_parse_rate(n: int, feed: str = "a01") -> float:
    import hl7
    if feed == "realistic":
        from bench.feed import Feed
        f = Feed(seed=7)
        texts = [f.next() for _ in range(n)]
    else:
        texts = [adt_a01(i, seed=7) for i in range(n)]
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for t in texts:
            hl7.parse(t)
        best = max(best, n / (time.perf_counter() - started))
    return best


def load(port: int, args) -> list[tuple]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "127.0.0.1", str(port),
                          "--connections", args.connections, "--messages", str(args.messages),
                          "--warmup", "500", "--timeout", "60", "--feed", args.feed],
                         capture_output=True, text=True, timeout=1800, check=True).stdout
    return [m.groups() for m in map(LEVEL.match, out.splitlines()) if m]


def wait_line(proc, pattern: str, timeout=60) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process ended: {proc.stderr.read() if proc.stderr else ''}")
        m = re.search(pattern, line)
        if m:
            return m
    raise RuntimeError("timed out waiting for the listener")


def bare(args):
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "baseline_listener.py"), "--mode", "bare",
                             "--seconds", "1800"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(wait_line(proc, r"listening on 127\.0\.0\.1:(\d+)").group(1))
        return load(port, args)
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def serving(directory: str, stderr=subprocess.DEVNULL):
    """A real `pamgate serve` on a fresh SQLite store, `directory`/bench.db (WAL; ACK once the commit is on the disk), loopback
    listeners on free ports: yields (its process, its MLLP port); stopped (SIGTERM, graceful) on exit."""
    cfg = Path(directory) / "config.yaml"
    cfg.write_text(f"""store: {{url: "sqlite:///{directory}/bench.db"}}
listeners: {{mllp: [{{endpoint: "tcp:0:interface=127.0.0.1"}}], http: "tcp:0:interface=127.0.0.1"}}
log: {{level: warning}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "pamgate.cli", "serve", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        yield proc, int(wait_line(proc, r"mllp listening on .*:(\d+)\)").group(1))
    finally:
        proc.terminate()
        proc.wait(60)


def pamgate(args):
    with tempfile.TemporaryDirectory() as tmp, serving(tmp) as (_, port):
        return load(port, args)


def median_rows(runs: list[list[tuple]]) -> list[tuple]:
    """Per level: (connections, median msg/s, its range, median p50, median p99, the not-AA of all runs)."""
    from statistics import median
    out = []
    for level in zip(*runs):
        rates = [float(r[3]) for r in level]
        bad = sorted({r[6] for r in level} - {"none"}) or ["none"]
        out.append((level[0][0], median(rates), (min(rates), max(rates)), median(float(r[4]) for r in level),
                    median(float(r[5]) for r in level), ", ".join(bad)))
    return out


def table(title, rows, runs: int):
    print(f"\n{title}" + (f" (median of {runs} runs)" if runs > 1 else ""))
    print("| connections | msg/s | msg/s range | p50 ms | p99 ms | not AA |")
    print("|---|---|---|---|---|---|")
    for conn, rate, (low, high), p50, p99, bad in rows:
        print(f"| {conn} | {rate:,.0f} | {low:,.0f}–{high:,.0f} | {p50:.2f} | {p99:.2f} | {bad} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=5000, help="messages per concurrency level")
    p.add_argument("--connections", default="1,4,16")
    p.add_argument("--repeat", type=int, default=1, help="runs of each server; the tables give medians")
    p.add_argument("--feed", choices=("a01", "realistic"), default="a01",
                   help="a01: new patients' A01 (the figures so far); realistic: bench/feed.py")
    args = p.parse_args()
    parse = hl7_parse_rate(min(args.messages, 3000), args.feed)
    print(f"bare hl7.parse: {parse:,.0f} msg/s")
    bare_runs, runs = [], []
    for i in range(args.repeat):
        bare_runs.append(bare(args))
        runs.append(pamgate(args))
        if args.repeat > 1:
            print(f"run {i + 1}: pamgate " + ", ".join(f"{r[0]} conn {r[3]} msg/s p99 {r[5]} ms" for r in runs[-1]),
                  flush=True)
    table("bare Twisted ACK-only listener", median_rows(bare_runs), args.repeat)
    rows = median_rows(runs)
    table("pamgate serve, SQLite WAL, ACK after its commit is on the disk", rows, args.repeat)
    print("\nratio of pamgate serve to bare hl7.parse:")
    for conn, rate, *_ in rows:
        print(f"  {conn} connection(s): {rate / parse:.2f}×")


if __name__ == "__main__":
    main()
