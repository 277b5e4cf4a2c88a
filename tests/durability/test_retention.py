"""Journal retention in `pamgate serve`: raw messages past `store.journal_retention` leave the journal; the
audit trail stays whole and duplicates are still recognised."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, update

from consent_store.store import Store
from consent_store.tables import applied, audit, journal
from tests.builders import adt, zfa_2111
from tests.durability.support import wait_until
from tests.serving import Server, ack_code


def counts(url):
    store = Store(url)
    try:
        with store.transaction() as uow:
            c = uow.conn
            return {"journal": sorted(r[0] for r in c.execute(select(journal.c.control_id))),
                    "applied": c.execute(select(func.count()).select_from(applied)).scalar(),
                    "audit": c.execute(select(func.count()).select_from(audit)).scalar(),
                    "chain": uow.verify_audit()[1:]}
    finally:
        store.dispose()


def test_old_raw_messages_leave_the_journal_and_duplicates_are_still_known(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    messages = [adt("A31", ipp=f"90{i}", control_id=f"r-{i}", zfa=zfa_2111("NA", "IC")) for i in range(3)]
    first = Server(tmp_path, store_url=url).start()
    try:
        assert [ack_code(first.send(m)) for m in messages] == ["AA"] * 3
    finally:
        first.stop()

    # two of them were received long ago
    store = Store(url)
    with store.transaction() as uow:
        uow.conn.execute(update(journal).where(journal.c.control_id.in_(["r-0", "r-1"])).values(
            received_at=datetime.now(timezone.utc) - timedelta(days=100)))
    store.dispose()
    before = counts(url)
    assert before["journal"] == ["r-0", "r-1", "r-2"] and before["applied"] == 3

    second = Server(tmp_path, {"store": {"journal_retention": "P90D"}}, store_url=url).start()
    try:
        after = wait_until(lambda: (c := counts(url))["journal"] == ["r-2"] and c, timeout=30,
                           what="the journal pruned at start")
        assert after["applied"] == 3 and after["audit"] == before["audit"] and after["chain"] == (None, None)
        # a resent old message is a duplicate: AA again, and not applied a second time
        assert ack_code(second.send(messages[0])) == "AA"
        again = counts(url)
        assert again["audit"] == before["audit"] and again["applied"] == 3
        assert again["journal"] == ["r-0", "r-2"]       # the resend is journaled, as every message is
        assert "journal.pruned" in second.stderr()
    finally:
        second.stop()
