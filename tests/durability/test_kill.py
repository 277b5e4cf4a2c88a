"""kill -9 of `pamgate serve` (SQLite) in the middle of a stream: every ACKed message is in the store, and
every message not ACKed, once resent, is applied exactly once."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from tests.durability.support import Connection, control_id, dump, msa, streams, wait_until
from tests.serving import Server

PATIENTS, PER_PATIENT, CONNECTIONS = 20, 30, 4
BASE = datetime.now(timezone.utc).replace(microsecond=0, second=0) - timedelta(days=1)


def lanes(plan) -> list[list[str]]:
    """One sequence per connection: its patients' messages, round-robin, each patient's in order."""
    ipps = sorted(plan)
    out = []
    for i in range(CONNECTIONS):
        mine = ipps[i::CONNECTIONS]
        out.append([plan[ipp][k] for k in range(PER_PATIENT) for ipp in mine])
    return out


def pipelined(port, sequence, acked: list, stop_at: int | None = None):
    """Write the whole sequence ahead (pipelining), read ACKs as they come; stop quietly when the server
    goes away. `acked` gets (control id, MSA-1) in order."""
    conn = Connection(port, timeout=60)
    errors = []

    def writer():
        try:
            for m in sequence:
                conn.write(m)
        except OSError as e:
            errors.append(e)

    w = threading.Thread(target=writer, daemon=True)
    w.start()
    try:
        for _ in sequence:
            code, cid = msa(conn.read_ack())
            acked.append((cid, code))
    except (OSError, ConnectionError):
        pass
    finally:
        conn.close()
        w.join(10)


def run_all(port, sequences):
    acks = [[] for _ in sequences]
    threads = [threading.Thread(target=pipelined, args=(port, seq, acks[i])) for i, seq in enumerate(sequences)]
    for t in threads:
        t.start()
    return threads, acks


def test_kill_9_loses_no_acked_message_and_a_resend_applies_the_rest_once(tmp_path):
    plan = streams(PATIENTS, PER_PATIENT, seed=9, base=BASE)
    sequences = lanes(plan)
    total = PATIENTS * PER_PATIENT
    (tmp_path / "ref").mkdir()
    reference = Server(tmp_path / "ref").start()
    try:
        threads, acks = run_all(reference.mllp_port, sequences)
        for t in threads:
            t.join(120)
        assert [len(a) for a in acks] == [len(s) for s in sequences]
        assert {code for a in acks for _, code in a} == {"AA"}
    finally:
        reference.stop()
    expected = dump(f"sqlite:///{tmp_path / 'ref' / 'store.db'}")

    (tmp_path / "victim").mkdir()
    url = f"sqlite:///{tmp_path / 'victim' / 'store.db'}"
    victim = Server(tmp_path / "victim").start()
    threads, acks = run_all(victim.mllp_port, sequences)
    # kill -9 once a third of the stream is acknowledged, with the rest in flight or on its way
    wait_until(lambda: sum(len(a) for a in acks) >= total // 3, timeout=120, every=0.002, what="a third ACKed")
    victim.kill()
    for t in threads:
        t.join(60)
    acked = [[cid for cid, code in a if code == "AA"] for a in acks]
    assert all(code == "AA" for a in acks for _, code in a)
    n_acked = sum(map(len, acked))
    assert total // 3 <= n_acked < total, n_acked

    # after restart, every ACKed message is in the store
    restarted = Server(tmp_path / "victim").start()
    try:
        after_crash = dump(url)
        missing = {cid for a in acked for cid in a} - after_crash["applied"]
        assert not missing, f"ACKed but not stored: {sorted(missing)[:5]}"
        assert after_crash["chain"][1:] == (None, None)
        committed_unacked = len(after_crash["applied"]) - n_acked

        # the sender resends what it has no ACK for, in order
        rest = [seq[len(a):] for seq, a in zip(sequences, acked)]
        assert [control_id(m) for seq, a in zip(sequences, acked) for m in seq[:len(a)]] == \
            [cid for a in acked for cid in a]
        threads, acks2 = run_all(restarted.mllp_port, rest)
        for t in threads:
            t.join(120)
        assert [len(a) for a in acks2] == [len(r) for r in rest]
        assert {code for a in acks2 for _, code in a} <= {"AA"}

        final = dump(url)
        assert len(final["applied"]) == total
        assert final["audits"] == {ipp: PER_PATIENT for ipp in plan}          # each applied exactly once
        assert final["facts"] == expected["facts"]
        for ipp in plan:
            assert final["states"][ipp] == expected["states"][ipp], ipp
        assert final["chain"][1:] == (None, None)
        print(f"\nkill -9 after {n_acked} ACKs of {total}; {committed_unacked} committed without their ACK; "
              f"{sum(map(len, rest))} resent")
    finally:
        restarted.stop()
