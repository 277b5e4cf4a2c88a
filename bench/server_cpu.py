"""CPU per message of `pamgate serve`'s own process (the reactor), of its apply process and of the load.

    python bench/server_cpu.py [--connections 1,16] [--messages 10000] [--repeat 3] [--feed realistic]
                               [--profile DIR]

For each level, a fresh server (bench/e2e.serving: SQLite WAL synchronous=FULL, fresh store) is driven by
bench/load.py (`--warmup 200`); /proc/PID/stat user+system of the server and of its apply process is read
before and after, divided by the messages sent (warm-up included). CPU time, not the wall clock: the figure
holds on a machine other sessions load. --profile DIR records the server with py-spy (raw, 16 connections'
levels only if asked) into DIR.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.e2e import LEVEL, serving  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    """User + system seconds of one process (its threads included, its children not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def system(pid: int) -> float:
    """System seconds of one process: the kernel's share (system calls, the loopback's TCP)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[12]) / TICK


def child_of(pid: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            if kids:
                return int(kids[0])
        time.sleep(0.1)
    raise RuntimeError("no apply process")


def run(connections: int, args, profile: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp, serving(tmp) as (proc, port):
        child = child_of(proc.pid)
        time.sleep(0.5)   # the child's start is not the messages' cost
        before = cpu(proc.pid), cpu(child), system(proc.pid)
        spy = None
        if profile:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(proc.pid),
                                    "-f", "raw", "-r", "250", "-o",
                                    f"{profile}/server-{connections}-{time.strftime('%H%M%S')}.txt"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.perf_counter()
        load = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "127.0.0.1", str(port),
                               "--connections", str(connections), "--messages", str(args.messages),
                               "--warmup", "200", "--timeout", "60", "--feed", args.feed, "--seed", str(args.seed)],
                              capture_output=True, text=True, timeout=1800, check=True)
        wall = time.perf_counter() - started
        after = cpu(proc.pid), cpu(child), system(proc.pid)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        n = args.messages + 200
        line = next(m.groups() for m in map(LEVEL.match, load.stdout.splitlines()) if m)
        return {"sys": (after[2] - before[2]) / n * 1e6, "server": (after[0] - before[0]) / n * 1e6, "child": (after[1] - before[1]) / n * 1e6,
                "rate": int(line[3]), "p50": float(line[4]), "p99": float(line[5]), "bad": line[6], "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", default="1,16")
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--feed", choices=("a01", "realistic"), default="realistic")
    ap.add_argument("--seed", type=int, default=7, help="the feed's series: the same messages in every run")
    ap.add_argument("--profile", help="a folder for py-spy's raw stacks of the server")
    args = ap.parse_args()
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    print("| connections | server µs/msg | of which system | apply process µs/msg | msg/s | p50 ms | p99 ms | not AA |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for _ in range(args.repeat):
        for connections in (int(c) for c in args.connections.split(",")):
            r = run(connections, args, args.profile)
            print(f"| {connections} | {r['server']:.0f} | {r['sys']:.0f} | {r['child']:.0f} | {r['rate']:,} | {r['p50']:.2f} | "
                  f"{r['p99']:.2f} | {r['bad']} |", flush=True)


if __name__ == "__main__":
    main()
