"""Two `pamgate serve` on one PostgreSQL database receive the same 2,000 messages, every message sent to
both at once, and end in exactly the state that one process reaches alone."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from sqlalchemy import text

from consent_store.store import Store
from tests.durability.support import AUTHORITY, Connection, dump, msa, streams
from tests.serving import Server
from tests.stores import pg_database

PATIENTS, PER_PATIENT, THREADS = 50, 40, 10
BASE = datetime.now(timezone.utc).replace(microsecond=0, second=0) - timedelta(days=2)


def drive(ports: list[int], plan: dict[str, list[str]]) -> list[tuple[str, str, int]]:
    """THREADS client threads, each with one connection per instance and its own patients. Round k sends
    the k-th message of each of its patients to every instance at once, and reads all the ACKs before
    round k+1: a patient's messages stay in order, while both instances race for each one."""
    ipps = sorted(plan)
    shares = [ipps[i::THREADS] for i in range(THREADS)]
    acks, failures = [], []

    def client(share, turn):
        conns = [Connection(p) for p in ports]
        try:
            for k in range(PER_PATIENT):
                order = conns if (k + turn) % 2 == 0 else conns[::-1]   # alternate which instance hears first
                for ipp in share:
                    for c in order:
                        c.write(plan[ipp][k])
                for c in order:
                    for ipp in share:
                        code, cid = msa(c.read_ack())
                        acks.append((cid, code, ports.index(c.sock.getpeername()[1])))
        except Exception as e:  # noqa: BLE001 — reported by the test
            failures.append(repr(e))
        finally:
            for c in conns:
                c.close()

    threads = [threading.Thread(target=client, args=(s, i)) for i, s in enumerate(shares)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not failures and not any(t.is_alive() for t in threads), failures
    return acks


def folder(tmp_path, name):
    (tmp_path / name).mkdir()
    return tmp_path / name


def view(server, ipp, at):
    status, body = server.http("GET", f"/v1/patients/{AUTHORITY}/{ipp}/consent?at={quote(at)}")
    assert status == 200, body
    return body


def test_two_instances_reach_the_state_of_one(tmp_path):
    plan = streams(PATIENTS, PER_PATIENT, seed=5, base=BASE)
    assert sum(len(v) for v in plan.values()) == 2000
    with pg_database() as shared_url, pg_database() as alone_url:
        a, b = Server(folder(tmp_path, "a"), store_url=shared_url), Server(folder(tmp_path, "b"), store_url=shared_url)
        alone = Server(folder(tmp_path, "alone"), store_url=alone_url)
        # both instances start at once on an empty database: one migrates, the other waits for it
        start_errors = []

        def start(server):
            try:
                server.start()
            except Exception as e:  # noqa: BLE001 — reported below
                start_errors.append(repr(e))
        starters = [threading.Thread(target=start, args=(s,)) for s in (a, b)]
        for t in starters:
            t.start()
        alone.start()
        for t in starters:
            t.join(120)
        try:
            assert not start_errors, start_errors
            started = time.monotonic()
            both = drive([a.mllp_port, b.mllp_port], plan)
            took_both = time.monotonic() - started
            single = drive([alone.mllp_port], plan)

            assert len(both) == 4000 and {code for _, code, _ in both} == {"AA"}
            assert len(single) == 2000 and {code for _, code, _ in single} == {"AA"}

            shared, reference = dump(shared_url), dump(alone_url)
            assert len(reference["states"]) == PATIENTS and len(reference["applied"]) == 2000
            assert shared["applied"] == reference["applied"]
            assert shared["audits"] == reference["audits"] == {ipp: PER_PATIENT for ipp in plan}
            assert shared["facts"] == reference["facts"]
            for ipp in plan:   # one patient at a time, so a failure names it
                assert shared["states"][ipp] == reference["states"][ipp], ipp
            assert shared["chain"][1:] == reference["chain"][1:] == (None, None)
            assert shared["chain"][0] == reference["chain"][0]

            # each message was applied by one instance, and seen as a duplicate by the other
            store = Store(shared_url)
            try:
                with store.transaction() as uow:
                    by_ack = dict(uow.conn.execute(text(
                        "SELECT CASE WHEN error LIKE 'duplicate%' THEN 'duplicate' ELSE 'applied' END, count(*) "
                        "FROM journal GROUP BY 1")).all())
            finally:
                store.dispose()
            assert by_ack == {"applied": 2000, "duplicate": 2000}

            # and the API of either instance answers what the lone one answers
            at = (BASE + timedelta(minutes=PER_PATIENT)).isoformat()
            for ipp in sorted(plan)[:10]:
                assert view(a, ipp, at) == view(alone, ipp, at) == view(b, ipp, at)
            print(f"\ntwo instances: 4000 deliveries of 2000 messages in {took_both:.1f} s")
        finally:
            for s in (a, b, alone):
                s.stop()
