"""A large store must not make a message read more of its file (issue 13, the soak).

A message seeks a few rows by index in a dozen tables. SQLite keeps the pages it has read in a per-connection
cache of 2 MiB by default; once the store's indexes outgrow it, every message reads their pages back from the
file, and more of them as the store grows (the soak: 36 read system calls a message at 265,000 messages, 39 at
375,000). Counted here: the read system calls of this process (/proc/self/io) while messages about patients
already in a store of several MiB are applied, with the checkpoint off so that only page reads count.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event

from consent_store.store import Store
from engine.commit import run_batch
from engine.config import Config
from engine.serve import build_pipeline
from tests.builders import adt, zfa_2111

PATIENTS = 1500
T0 = datetime(2021, 3, 1, 8, 0, tzinfo=timezone.utc)
IO = Path("/proc/self/io")


def _reads() -> int:
    return int(dict(line.split(": ") for line in IO.read_text().splitlines())["syscr"])


def _messages(round_: int) -> list[str]:
    """One new visit for each patient, consent IC or INC."""
    when = (T0 + timedelta(days=round_)).strftime("%Y%m%d%H%M%S")
    return [adt("A04", ipp=f"{500000 + p}", authority="HOSP-C", visit=f"V{p}-{round_}", movement=f"M{p}-{round_}",
                when=when, control_id=f"C{round_}-{p}", zfa=zfa_2111("NA", "IC" if (p + round_) % 2 else "INC", when))
            for p in range(PATIENTS)]


def _apply(store, pipeline, texts, batch=16):
    works = [pipeline.prepare(t, t.encode(), T0) for t in texts]
    for i in range(0, len(works), batch):
        results, committed = run_batch(store, [(w.run, w.keys()) for w in works[i:i + batch]])
        assert committed and all(ok and v.code == "AA" for ok, v in results), results


@pytest.mark.skipif(not IO.exists(), reason="needs Linux's /proc/self/io to count read system calls")
def test_a_message_reads_no_page_of_the_file_once_the_store_is_in_the_cache(tmp_path):
    pipeline = build_pipeline(Config.model_validate({}))
    store = Store(f"sqlite:///{tmp_path / 'cache.db'}")
    # the checkpoint reads the WAL back: off, so that the reads counted are the page cache's misses
    event.listen(store.engine, "connect", lambda c, _: c.execute("PRAGMA wal_autocheckpoint=0"))
    store.upgrade()
    store.engine.dispose()        # the migration's connections had no such pragma
    try:
        for round_ in range(3):       # the store: several MiB, its indexes above SQLite's default cache
            _apply(store, pipeline, _messages(round_), batch=100)
        size = sum(f.stat().st_size for f in tmp_path.glob("cache.db*"))
        assert size > 8 * 2**20, size
        _apply(store, pipeline, _messages(3))      # every patient's pages seen once more
        before = _reads()
        _apply(store, pipeline, _messages(4))
        reads = _reads() - before
    finally:
        store.dispose()
    assert reads / PATIENTS < 0.1, f"{reads} page reads for {PATIENTS} messages"
