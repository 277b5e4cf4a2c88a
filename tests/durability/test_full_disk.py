"""A store on a disk that fills up, over the outer interface: a real `pamgate serve` whose SQLite file lives
on a small tmpfs (mounted for the test; root only, else skipped). Every message once the disk is full gets
`AE` 207, never `AA`; nothing `AA` is lost; the API says 503; the server serves again by itself once space
comes back, and a resend of what was refused is applied once."""
from __future__ import annotations

import sqlite3

import pytest

from tests.builders import adt, zfa_2111
from tests.serving import Server, ack_code


@pytest.fixture
def small_disk(small_filesystem):
    return small_filesystem("16m")


def fill(where) -> None:
    with open(where / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_a_full_disk_gets_ae_207_never_aa_and_service_resumes_by_itself(tmp_path, small_disk):
    server = Server(tmp_path, store_url=f"sqlite:///{small_disk / 'store.db'}").start()
    try:
        messages = [adt("A01", ipp=f"FULL{i}", visit=f"VFULL{i}", control_id=f"FULL{i:04d}",
                        zfa=zfa_2111("INO", "IC")) for i in range(40)]
        assert ack_code(server.send(messages[0])) == "AA"
        fill(small_disk)
        codes = {}
        for m in messages[1:]:
            ack = server.send(m)
            code = ack_code(ack)
            codes[m.split("|")[9]] = code
            assert code == "AA" or (code == "AE" and "|207^" in ack), ack
        refused = [cid for cid, code in codes.items() if code != "AA"]
        assert len(refused) >= 30, codes                       # the disk did fill
        status, body = server.http("POST", "/v1/consents", {
            "patient": {"id": "FULL-API", "authority": "HOSP-T"}, "consult": "IC",
            "collected_at": "2025-01-06T10:00:00Z", "collected_by": {"id": "desk-1"}})
        assert (status, body["error"]) == (503, "store.unavailable")
        assert server.proc.poll() is None

        (small_disk / "filler").unlink()                       # space comes back: no restart needed
        again = [ack_code(server.send(m)) for m in messages]
        assert again == ["AA"] * len(messages)
        status, _ = server.http("GET", "/readyz")
        assert status == 200
    finally:
        server.stop()
    with sqlite3.connect(small_disk / "store.db") as db:
        applied = [r[0] for r in db.execute("SELECT control_id FROM applied_message")]
    assert sorted(applied) == sorted(f"FULL{i:04d}" for i in range(40))   # each once, none lost
