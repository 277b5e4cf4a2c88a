"""The message browser's search over 1,000,000 journal rows answers in under 300 ms (issue 14), by the
indexes of migration 0007_console."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from consent_store.store import Store
from console import reads

ROWS = 1_000_000
LIMIT = 0.300


def _fill(store: Store, now: datetime) -> None:
    start = now - timedelta(days=30)
    step = timedelta(days=30) / ROWS
    raw = b"MSH|^~\\&|GAM|CH|PAMGATE|CH|20250101||ADT^A01|X|P|2.5\rPID|1||1^^^CH^PI\rPV1|1|I\r"
    codes = ("AA",) * 97 + ("AE", "AR", "AE")
    with store.engine.begin() as c:
        cur = c.connection.driver_connection.cursor()
        batch = []
        for i in range(ROWS):
            batch.append(((start + step * i).isoformat(sep=" "), f"APP{i % 7}", f"FAC{i % 3}", f"C{i:07d}",
                          ("A01", "A02", "A03", "Z99")[i % 4], codes[i % 100], None, i % 50_000 + 1, raw))
            if len(batch) == 50_000:
                cur.executemany("INSERT INTO journal (received_at, sender_application, sender_facility, control_id,"
                                " event, ack_code, error, patient_id, raw) VALUES (?,?,?,?,?,?,?,?,?)", batch)
                batch = []
        cur.execute("ANALYZE")


def test_searches_over_a_million_rows_answer_under_300_ms(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'big.db'}")
    store.upgrade()
    now = datetime.now(timezone.utc)
    _fill(store, now)
    searches = {
        "default window (last hour)": dict(since=now - timedelta(hours=1), until=now),
        "MSH-10 over everything": dict(since=now - timedelta(days=3650), until=now, control_id="C0500000"),
        "sender, last day": dict(since=now - timedelta(days=1), until=now, sender="APP3|FAC1"),
        "ACK AR, last week": dict(since=now - timedelta(days=7), until=now, ack="AR"),
        "patient, everything": dict(since=now - timedelta(days=3650), until=now, patient_ids=[4242]),
        "event, last day": dict(since=now - timedelta(days=1), until=now, event="A02"),
        "next page": dict(since=now - timedelta(days=3650), until=now, before=600_000),
    }
    slow = {}
    with store.engine.connect() as conn:
        from consent_store.store import UnitOfWork
        uow = UnitOfWork(conn, False)
        for name, kw in searches.items():
            best = min(_timed(uow, kw) for _ in range(3))
            if best > LIMIT:
                slow[name] = round(best * 1000)
        assert reads.messages(uow, **searches["MSH-10 over everything"])[0]["control_id"] == "C0500000"
    store.dispose()
    assert not slow, f"searches over {ROWS} rows slower than {LIMIT * 1000:.0f} ms: {slow}"


def _timed(uow, kw) -> float:
    t = time.perf_counter()
    reads.messages(uow, **kw)
    return time.perf_counter() - t
