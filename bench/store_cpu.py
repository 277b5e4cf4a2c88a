"""CPU per message on each side of the server, in one process, without sockets nor the other thread.

    python bench/store_cpu.py [--messages 4000] [--batch 64] [--profile]
    python bench/store_cpu.py --store var/soak.db --feed realistic --start 1100000 --warm 3000 --messages 1500 \
        --batch 16 [--cache-kib 65536]

`prepare` is the reactor side (parse, mapping extraction); `apply` is the store side (rules, state, audit,
outbox, projections, SQL), run as the group commit runs it: one transaction per batch, on SQLite (WAL,
synchronous=FULL). Both are the thread's CPU time (time.thread_time), so the fsync wait is not counted and
the figures hold on a busy machine. Every message is a new patient's A01 (bench/messages.py), or with
--feed realistic the event mix and population of bench/feed.py, in a fresh store.

With --store, the messages go to an existing store (a soak's, kept), after --warm messages that fill SQLite's
page cache; --feed realistic sends bench/feed.py's, their times --start minutes after the feed's origin (after
the store's last message, or a patient's long history is read whole: a late message's cost). The read system
calls per message (/proc/self/io) count SQLite's page reads. --cache-kib sets SQLite's page cache.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event  # noqa: E402

from bench.feed import Feed  # noqa: E402
from bench.messages import adt_a01  # noqa: E402
from bench.soak import reads  # noqa: E402
from consent_store.store import Store  # noqa: E402
from engine import config  # noqa: E402
from engine.pipeline import now_utc  # noqa: E402
from engine.assembly import build_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--profile", action="store_true", help="cProfile the store side")
    ap.add_argument("--store", help="an existing SQLite store (default: a fresh one)")
    ap.add_argument("--warm", type=int, default=0, help="messages applied before the measure")
    ap.add_argument("--feed", choices=("a01", "realistic"), default="a01")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--start", type=int, default=0, help="realistic feed: its first minute after its origin")
    ap.add_argument("--cache-kib", type=int, help="SQLite's page cache (its default: 2,000 KiB)")
    args = ap.parse_args()
    n = args.messages
    pipeline = build_pipeline(config.Config())
    if args.feed == "realistic":
        feed = Feed(seed=args.seed)
        feed.count = args.start
        texts = [feed.next() for _ in range(args.warm + n)]
    else:
        texts = [adt_a01(i, seed=args.seed) for i in range(args.warm + n)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{args.store or f'{tmp}/cpu.db'}")
        if args.cache_kib:
            event.listen(store.engine, "connect", lambda c, _: c.execute(f"PRAGMA cache_size=-{args.cache_kib}"))
        store.upgrade()
        store.engine.dispose()
        for i in range(0, args.warm, 100):
            works = [pipeline.prepare(t, t.encode(), now_utc()) for t in texts[i:min(args.warm, i + 100)]]
            with store.transaction() as uow:
                for w in works:
                    assert pipeline.apply_message(uow, w).code == "AA"
        texts = texts[args.warm:]
        started = time.thread_time()
        works = [pipeline.prepare(t, t.encode(), now_utc()) for t in texts]
        prepare = time.thread_time() - started
        prof = cProfile.Profile() if args.profile else None
        prof and prof.enable()
        started, before = time.thread_time(), reads(os.getpid())
        for i in range(0, n, args.batch):
            with store.transaction() as uow:
                for w in works[i:i + args.batch]:
                    o = pipeline.apply_message(uow, w)
                    assert o.code in ("AA", "AE") and not o.duplicate, o
        apply = time.thread_time() - started
        read_calls = reads(os.getpid())[0] - before[0]
        prof and prof.disable()
        store.dispose()
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    print(f"prepare {prepare / n * 1e6:.1f} µs/msg   apply {apply / n * 1e6:.1f} µs/msg   ({n} messages, "
          f"transactions of {args.batch})   {read_calls / n:.1f} read calls/msg")


if __name__ == "__main__":
    main()
