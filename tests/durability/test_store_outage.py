"""PostgreSQL stopped in the middle of a stream: no false AA, and service resumes by itself once it is back.

The test runs a PostgreSQL server of its own (initdb into a temporary folder, pg_ctl on a free port), so
that stopping it harms nothing else."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

from tests.builders import adt, zfa_2111
from tests.durability.support import (Connection, control_id, dump, err3, msa, private_postgres, streams,
                                      wait_until)
from tests.serving import Server

PATIENTS, PER_PATIENT, SENDERS = 12, 20, 3
BASE = datetime.now(timezone.utc).replace(microsecond=0, second=0) - timedelta(days=1)


class Sender(threading.Thread):
    """What a well-behaved ADT sender does: one message at a time, and on AE 207 the same message again.
    Half-way it waits for `go_on`, so that the second half is sent during the outage, however fast the
    first half went."""

    def __init__(self, port, messages, deadline, go_on: threading.Event):
        super().__init__(daemon=True)
        self.port, self.messages, self.deadline, self.go_on = port, messages, deadline, go_on
        self.aa: list[tuple[str, float]] = []     # (control id, when)
        self.refusals: list[tuple[str, str, float]] = []
        self.error = None

    def run(self):
        conn = Connection(self.port, timeout=60)
        try:
            for i, m in enumerate(self.messages):
                if i == len(self.messages) // 2:
                    self.go_on.wait(60)
                while True:
                    code, cid = msa(ack := conn.send(m))
                    assert cid == control_id(m)
                    if code == "AA":
                        self.aa.append((cid, time.monotonic()))
                        break
                    self.refusals.append((cid, f"{code} {err3(ack)}", time.monotonic()))
                    if time.monotonic() > self.deadline:
                        raise TimeoutError(f"{cid} still refused: {code} {err3(ack)}")
                    time.sleep(0.1)
        except Exception as e:  # noqa: BLE001 — reported by the test
            self.error = repr(e)
        finally:
            conn.close()


def test_postgresql_outage_gives_no_false_aa_and_service_resumes(tmp_path):
    plan = streams(PATIENTS, PER_PATIENT, seed=3, base=BASE)
    ipps = sorted(plan)
    total = PATIENTS * PER_PATIENT
    with private_postgres() as pg:
        server = Server(tmp_path, store_url=pg.url).start()
        try:
            deadline, go_on = time.monotonic() + 150, threading.Event()
            senders = [Sender(server.mllp_port, [plan[ipp][k] for k in range(PER_PATIENT)
                                                 for ipp in ipps[i::SENDERS]], deadline, go_on)
                       for i in range(SENDERS)]
            for s in senders:
                s.start()
            wait_until(lambda: sum(len(s.aa) for s in senders) >= total // 4, timeout=60, every=0.01,
                       what="a quarter applied")

            pg.stop("immediate")                # as a crash: no goodbye to the clients
            down_at = time.monotonic()
            go_on.set()
            wait_until(lambda: any(r[2] > down_at for s in senders for r in s.refusals), timeout=30,
                       what="a refusal during the outage")
            status, body = server.http("GET", "/healthz")
            assert status == 503 and body["error"] == "store.unavailable"
            time.sleep(2)                       # the senders keep trying while it is down
            pg.start()
            up_at = time.monotonic()

            for s in senders:
                s.join(max(1, deadline - time.monotonic()))
            assert [s.error for s in senders] == [None] * SENDERS
            assert server.proc.poll() is None, "pamgate was not restarted: the same process serves on"

            refusals = [r for s in senders for r in s.refusals]
            during = [r for r in refusals if down_at <= r[2] <= up_at]
            assert during and {r[1] for r in refusals} == {"AE 207"}, {r[1] for r in refusals}
            aa_during = [cid for s in senders for cid, t in s.aa if down_at <= t <= up_at]

            # a new message after the restart is applied, by the same process
            late = adt("A31", ipp=ipps[0], authority="HOSP-D", facility="HOSP-D", control_id="after-restart",
                       zfa=zfa_2111("NA", "IC"))
            assert msa(Connection(server.mllp_port).send(late))[0] == "AA"
            assert server.http("GET", "/healthz")[0] == 200

            stored = dump(pg.url)
            acked = {cid for s in senders for cid, _ in s.aa}
            assert len(acked) == total
            assert acked <= stored["applied"], f"AA without a commit: {sorted(acked - stored['applied'])[:5]}"
            counts = {ipp: PER_PATIENT for ipp in plan}
            counts[ipps[0]] += 1
            assert stored["audits"] == counts                 # each message applied once, retries included
            assert stored["chain"][1:] == (None, None)
            print(f"\noutage of {up_at - down_at:.1f} s: {len(during)} AE 207 answered meanwhile, "
                  f"{len(aa_during)} AA (commits before the stop), all {total} stored once")
        finally:
            server.stop()
