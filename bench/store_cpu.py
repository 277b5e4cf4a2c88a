"""CPU per message on each side of the server, in one process, without sockets nor the other thread.

    python bench/store_cpu.py [--messages 4000] [--batch 64] [--feed a01|realistic] [--profile]

`prepare` is the reactor side (parse, mapping extraction); `apply` is the store side (rules, state, audit,
outbox, projections, SQL), run as the group commit runs it: one transaction per batch, on SQLite (WAL,
synchronous=FULL). Both are the thread's CPU time (time.thread_time), so the fsync wait is not counted and
the figures hold on a busy machine. Every message is a new patient's A01 (bench/messages.py), or with
--feed realistic the event mix and population of bench/feed.py.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.feed import Feed  # noqa: E402
from bench.messages import adt_a01  # noqa: E402
from consent_store.store import Store  # noqa: E402
from engine import config  # noqa: E402
from engine.pipeline import now_utc  # noqa: E402
from engine.assembly import build_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--feed", choices=("a01", "realistic"), default="a01")
    ap.add_argument("--profile", action="store_true", help="cProfile the store side")
    args = ap.parse_args()
    n = args.messages
    pipeline = build_pipeline(config.Config())
    if args.feed == "realistic":
        feed = Feed(seed=3)
        texts = [feed.next() for _ in range(n)]
    else:
        texts = [adt_a01(i, seed=3) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/cpu.db")
        store.upgrade()
        started = time.thread_time()
        works = [pipeline.prepare(t, t.encode(), now_utc()) for t in texts]
        prepare = time.thread_time() - started
        prof = cProfile.Profile() if args.profile else None
        prof and prof.enable()
        started = time.thread_time()
        for i in range(0, n, args.batch):
            with store.transaction() as uow:
                for w in works[i:i + args.batch]:
                    o = pipeline.apply_message(uow, w)
                    assert o.code in ("AA", "AE") and not o.duplicate, o
        apply = time.thread_time() - started
        prof and prof.disable()
        store.dispose()
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    print(f"prepare {prepare / n * 1e6:.1f} µs/msg   apply {apply / n * 1e6:.1f} µs/msg   ({n} messages, "
          f"transactions of {args.batch})")


if __name__ == "__main__":
    main()
