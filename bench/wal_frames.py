"""The pages SQLite writes to the WAL per message of the realistic feed, by b-tree (table or index).

    python bench/wal_frames.py [--batch 8] [--messages 3000] [--warm 3000] [--seed 3] [--top 40]

Each WAL frame is one 4 KiB page written at commit, then read and copied into the database at checkpoint:
the store side's I/O per message, whatever the disk. The feed (bench/feed.py) is applied as the group
commit applies it, `--batch` messages a transaction, to a fresh store (SQLite, WAL) upgraded by the
migrations, after `--warm` messages applied in transactions of 100 (they fill the tables so that the
measure does not see an empty store's few pages). The WAL is emptied (checkpoint), automatic checkpoints
are turned off, the measured messages are applied, then every frame of the WAL is counted and each page
number is given to the b-tree that owns it now (dbstat): a page written by several commits counts each time.
"""
from __future__ import annotations

import argparse
import collections
import sqlite3
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event  # noqa: E402

from bench.feed import Feed  # noqa: E402
from consent_store.store import Store  # noqa: E402
from engine import config  # noqa: E402
from engine.assembly import build_pipeline  # noqa: E402
from engine.pipeline import now_utc  # noqa: E402


def wal_pages(wal: bytes) -> list[int]:
    """The page number of each frame of a WAL file (its 32-byte header, then frames of 24 + page size)."""
    page_size = struct.unpack(">I", wal[8:12])[0]
    return [struct.unpack(">I", wal[off:off + 4])[0]
            for off in range(32, len(wal) - 24 - page_size + 1, 24 + page_size)]


def apply(store: Store, pipeline, texts: list[str], batch: int) -> None:
    works = [pipeline.prepare(t, t.encode(), now_utc()) for t in texts]
    for i in range(0, len(works), batch):
        with store.transaction() as uow:
            for w in works[i:i + batch]:
                o = pipeline.apply_message(uow, w)
                assert o.code in ("AA", "AE") and not o.duplicate, o


def measure(batch: int, messages: int, warm: int, seed: int) -> tuple[int, collections.Counter]:
    """(frames written, frames by b-tree name) for `messages` messages in transactions of `batch`."""
    pipeline = build_pipeline(config.Config())
    feed = Feed(seed=seed)
    texts = [feed.next() for _ in range(warm + messages)]
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/frames.db"
        store = Store(f"sqlite:///{path}")
        store.upgrade()
        store.engine.dispose()
        apply(store, pipeline, texts[:warm], 100)
        store.engine.dispose()
        with sqlite3.connect(path) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        event.listen(store.engine, "connect", lambda c, _: c.execute("PRAGMA wal_autocheckpoint=0"))
        apply(store, pipeline, texts[warm:], batch)
        wal = Path(path + "-wal").read_bytes()   # read before anything checkpoints it
        store.dispose()
        c = sqlite3.connect(path)
        c.execute("PRAGMA wal_autocheckpoint=0")
        owner = dict(c.execute("SELECT pageno, name FROM dbstat"))
        c.close()
    frames = wal_pages(wal)
    return len(frames), collections.Counter(owner.get(p, "?") for p in frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="messages a transaction")
    ap.add_argument("--messages", type=int, default=3000, help="messages measured")
    ap.add_argument("--warm", type=int, default=3000, help="messages applied before the measure")
    ap.add_argument("--seed", type=int, default=3, help="the feed's seed")
    ap.add_argument("--top", type=int, default=40, help="b-trees listed, most written first")
    args = ap.parse_args()
    total, by_tree = measure(args.batch, args.messages, args.warm, args.seed)
    n = args.messages
    print(f"{total / n:.2f} frames/msg, transactions of {args.batch} ({n} messages after {args.warm})")
    for name, count in by_tree.most_common(args.top):
        print(f"{count / n:6.2f} {name}")


if __name__ == "__main__":
    main()
