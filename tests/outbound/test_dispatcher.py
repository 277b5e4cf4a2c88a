"""The dispatcher in-process, on a real store, against real receivers on loopback that go down and come
back: nothing lost, nothing twice under one id, each patient's order kept, a failing patient alone held."""
from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
import pytest_twisted
import structlog
import structlog.testing
from twisted.internet import defer, reactor, task

from engine.config import Config
from engine import metrics
from mllp.ack import read_ack
from outbound.dispatcher import Dispatcher, backoff_delay
from outbound.http import HttpChannel
from tests.outbound.conftest import enqueue, envelope, statuses
from tests.outbound.receivers import segment

FAST = {"backoff": 0.05, "max_backoff": 0.3, "timeout": 5, "poll_interval": 0.05}


def config(*destinations) -> Config:
    return Config.model_validate({"destinations": list(destinations)})


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(0.05)


async def drained(store, total: int, timeout: float = 90.0) -> None:
    await until(lambda: statuses(store).get("done", 0) + statuses(store).get("dead", 0) >= total, timeout,
                f"{total} deliveries settled (now {statuses(store)})")


def order_by_patient(envelopes) -> dict:
    seen = defaultdict(list)
    for e in envelopes:
        seen[e["patient"]["id"]].append(e["data"]["n"])
    return seen


async def stop(dispatcher) -> None:
    await dispatcher.stop()


@pytest_twisted.ensureDeferred
async def test_http_receiver_down_then_back_nothing_lost_nothing_twice_order_kept(store, http_receiver):
    cfg = config({"name": "dpi", "type": "http", "url": http_receiver.url, "max_attempts": 1000, **FAST})
    routes = cfg.routes()
    patients = [f"P{i}" for i in range(6)]
    # a first wave while the receiver is down
    enqueue(store, [envelope(p, n) for n in range(5) for p in patients], routes)
    d = Dispatcher(store, cfg, reactor, metrics)
    await d.start()
    try:
        await sleep(1.0)
        assert http_receiver.accepted == []
        with store.transaction() as uow:
            failed = [r for r in uow.deliveries(status="pending") if r["attempts"] > 0]
        assert failed and all("connection refused" in r["last_error"] for r in failed)
        # back up; a second wave arrives while the first is delivered
        http_receiver.up()
        enqueue(store, [envelope(p, n) for n in range(5, 10) for p in patients], routes)
        await until(lambda: len(http_receiver.accepted) >= 20, what="some deliveries")
        http_receiver.down()                               # down again, in the middle of it
        enqueue(store, [envelope(p, n) for n in range(10, 15) for p in patients], routes)
        await sleep(0.5)
        http_receiver.up()
        await drained(store, 15 * len(patients))
    finally:
        await stop(d)
    assert statuses(store) == {"done": 15 * len(patients)}
    ids = [e["id"] for e in http_receiver.accepted]
    assert len(ids) == len(set(ids)) == 15 * len(patients)        # nothing lost, nothing twice
    assert order_by_patient(http_receiver.accepted) == {p: list(range(15)) for p in patients}
    first = http_receiver.accepted[0]
    assert "patient_key" not in first                              # internal ordering key stays home
    assert set(first) - {"_headers"} == {"id", "type", "time", "patient", "episode", "data", "source"}
    assert first["_headers"]["idempotency-key"] == first["id"]
    assert first["_headers"]["content-type"].startswith("application/json")
    datetime.fromisoformat(first["time"])                          # ISO 8601 times
    with store.transaction() as uow:
        assert all(r["claimed_by"] is None for r in uow.deliveries())   # leases released once recorded
        assert uow.outbox_depth() == 0


@pytest_twisted.ensureDeferred
async def test_a_failing_patient_holds_only_its_own_queue_then_goes_dead(sqlite_store, http_receiver):
    store = sqlite_store
    http_receiver.answer = lambda env: 500 if env["patient"]["id"] == "IPP-BAD" else 200
    http_receiver.body = lambda env: f"no such patient {env['patient']['id']}".encode()
    http_receiver.up()
    cfg = config({"name": "dpi", "type": "http", "url": http_receiver.url, "max_attempts": 3, **FAST})
    enqueue(store, [envelope(p, n) for n in range(4) for p in ("IPP-BAD", "G1", "G2")], cfg.routes())
    dead_before = metrics.deliveries.labels("dpi", "dead")._value.get()
    d = Dispatcher(store, cfg, reactor, metrics)
    saved = structlog.get_config()
    structlog.reset_defaults()              # another test may have set a level that hides info lines
    try:
        with structlog.testing.capture_logs() as logs:
            await d.start()
            try:
                await drained(store, 12)
            finally:
                await stop(d)
    finally:
        structlog.configure(**saved)
    # the receiver's answer quotes the patient: the log says only "HTTP 500", the delivery row says all.
    # (Exactly 16: a connection the receiver closed after answering is not a failed attempt.)
    failures = [e for e in logs if e["event"] in ("delivery.failed", "delivery.dead")]
    assert [e["event"] for e in failures].count("delivery.dead") == 4, failures
    assert len(failures) == 16 and all(e["error"] == "HTTP 500" for e in failures), [(e["event"], e["error"], e["event_id"][:6], e.get("attempt")) for e in failures]
    assert "IPP-BAD" not in repr(logs)
    assert order_by_patient(http_receiver.accepted) == {"G1": [0, 1, 2, 3], "G2": [0, 1, 2, 3]}
    # BAD's attempts: each event tried max_attempts times, never one before the earlier is settled
    tried = [e["data"]["n"] for e in http_receiver.attempts if e["patient"]["id"] == "IPP-BAD"]
    assert tried == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    with store.transaction() as uow:
        dead = uow.deliveries(status="dead")
    assert [r["envelope"]["data"]["n"] for r in dead] == [0, 1, 2, 3]
    assert all(r["attempts"] == 3 and r["last_error"] == "HTTP 500: no such patient IPP-BAD" for r in dead)
    assert metrics.deliveries.labels("dpi", "dead")._value.get() - dead_before == 4


@pytest_twisted.ensureDeferred
async def test_a_kept_connection_the_receiver_closed_is_retried_on_a_new_one_not_on_another_kept_one(
        http_receiver):
    """Two kept connections, each closed by the receiver when its next request comes: the first fails the
    POST, the one retry goes on a new connection (not the other kept one) and the event is delivered."""
    http_receiver.drops_kept_connections = True
    http_receiver.up()
    dest = config({"name": "dpi", "type": "http", "url": http_receiver.url, "concurrency": 2, **FAST}).destinations[0]
    channel = HttpChannel(dest, reactor)
    stored = [json.loads(json.dumps(envelope(p, n), default=str)) for p, n in (("P1", 0), ("P2", 0), ("P1", 1))]
    try:
        await defer.gatherResults([channel.deliver(stored[0]), channel.deliver(stored[1])])
        assert [len(kept) for kept in channel.pool._connections.values()] == [2]    # both connections kept
        await channel.deliver(stored[2])
    finally:
        await channel.close()
    assert sorted(e["id"] for e in http_receiver.accepted) == sorted(e["id"] for e in stored)


@pytest_twisted.ensureDeferred
async def test_a_slow_patient_does_not_hold_the_others(sqlite_store, http_receiver):
    """One patient's receiver call hangs past the timeout: the others are delivered meanwhile."""
    store = sqlite_store
    import threading
    release = threading.Event()

    def answer(env):
        if env["patient"]["id"] == "SLOW" and env["data"]["n"] == 0:
            release.wait(20)
        return 200
    http_receiver.answer = answer
    http_receiver.up()
    cfg = config({"name": "dpi", "type": "http", "url": http_receiver.url, "max_attempts": 50,
                  **{**FAST, "timeout": 3}})
    enqueue(store, [envelope("SLOW", n) for n in range(2)], cfg.routes())
    enqueue(store, [envelope(f"G{i}", n) for n in range(3) for i in range(4)], cfg.routes())
    d = Dispatcher(store, cfg, reactor, metrics)
    await d.start()
    try:
        await until(lambda: sum(1 for e in http_receiver.accepted if e["patient"]["id"] != "SLOW") == 12,
                    timeout=30, what="the other patients")
        # SLOW's first event is still hanging (or timed out): its second has not overtaken it
        assert [e["data"]["n"] for e in http_receiver.accepted if e["patient"]["id"] == "SLOW"] in ([], [0])
        release.set()
        await drained(store, 14)
    finally:
        release.set()
        await stop(d)
    slow = [e["data"]["n"] for e in http_receiver.accepted if e["patient"]["id"] == "SLOW"]
    assert slow[-1] == 1 and sorted(set(slow)) == [0, 1] and slow.index(1) > slow.index(0)


def _adt(control_id: str, patient: str, n: int) -> str:
    return "\r".join([
        f"MSH|^~\\&|GAM|HOSP-T|DPI|HOSP-T|20250106090000||ADT^A01^ADT_A01|{control_id}|P|2.5^FRA^2.11|||||FRA|"
        f"UNICODE UTF-8|||2.11^IHE_FRANCE-2.11-PAM",
        f"PID|1||{patient}^^^HOSP-T^PI||DUPONT^ÉLODIE",
        f"ZFA|ACTIF|20250106090000||||||INO|20250106090000|IC|2025010609{n:04d}"])


def forward(patient: str, n: int) -> dict:
    return envelope(patient, n, type_="adt.forward", message=_adt(f"C-{patient}-{n}", patient, n), event="A01")


@pytest_twisted.ensureDeferred
async def test_mllp_receiver_down_then_back_with_acks_checked(store, mllp_receiver):
    cfg = config({"name": "dpi-hl7", "type": "mllp", "endpoint": mllp_receiver.endpoint, "forward_adt": True,
                  "max_attempts": 1000, **FAST})
    routes = cfg.routes()
    assert routes == {"dpi-hl7": {"adt.forward"}}
    patients = ["P1", "P2", "P3"]
    # AE for P2's first message twice, then a wrong MSA-2 once: both are failures, retried
    refusals = {"C-P2-0": [("AE", None), ("AE", None), ("AA", "NOT-MINE")]}
    mllp_receiver.answer = lambda text: (refusals.get(segment(text, "MSH")[9]) or [("AA", None)]).pop(0) \
        if refusals.get(segment(text, "MSH")[9]) else ("AA", None)
    mllp_receiver.up()
    # a consent.changed routed by "*" elsewhere never reaches an mllp destination
    enqueue(store, [forward(p, n) for n in range(4) for p in patients] + [envelope("P1", 99)], routes)
    d = Dispatcher(store, cfg, reactor, metrics)
    await d.start()
    try:
        await until(lambda: len(mllp_receiver.accepted) >= 4, what="first messages")
        mllp_receiver.down()
        enqueue(store, [forward(p, n) for n in range(4, 8) for p in patients], routes)
        await sleep(0.6)
        mllp_receiver.up()
        await drained(store, 8 * len(patients))
    finally:
        await stop(d)
    assert statuses(store) == {"done": 24}
    cids = [segment(t, "MSH")[9] for t in mllp_receiver.accepted]
    assert len(cids) == len(set(cids)) == 24
    for p in patients:
        assert [c for c in cids if c.startswith(f"C-{p}-")] == [f"C-{p}-{n}" for n in range(8)]
    attempts_p2 = [segment(t, "MSH")[9] for t in mllp_receiver.attempts if segment(t, "MSH")[9] == "C-P2-0"]
    assert len(attempts_p2) == 4
    assert "ÉLODIE" in mllp_receiver.accepted[0] or "ÉLODIE" in mllp_receiver.accepted[1]


def ack_problem(ack: str, control_id: str) -> str | None:
    return read_ack(ack).problem(control_id)


def test_ack_problem_checks_code_and_msa2():
    ack = "MSH|^~\\&|DPI|H|GAM|H|20250106||ACK^A01^ACK|X1|P|2.5\rMSA|AA|C1"
    assert ack_problem(ack, "C1") is None
    assert ack_problem(ack.replace("MSA|AA", "MSA|CA"), "C1") is None
    assert ack_problem(ack, "C2") == "MSA-2 'C1' does not match the MSH-10 sent 'C2'"
    ae = ack.replace("MSA|AA|C1", "MSA|AE|C1\rERR||PID^1^3|101|E||||PID-3 missing")
    assert ack_problem(ae, "C1") == "ACK AE: PID-3 missing"
    assert ack_problem("MSH|^~\\&|X", "C1") == "the answer has no MSA segment"


def test_backoff_doubles_up_to_the_cap_with_a_little_jitter():
    assert [backoff_delay(n, 1.0, 10.0, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(3, 1.0, 10.0, rand=lambda: 1.0) == pytest.approx(3.2)


@pytest_twisted.ensureDeferred
async def test_file_destination_appends_json_lines(sqlite_store, tmp_path):
    store = sqlite_store
    path = tmp_path / "out" / "events.jsonl"
    cfg = config({"name": "journal", "type": "file", "path": str(path), "events": ["consent.changed"], **FAST})
    enqueue(store, [envelope(p, n) for n in range(5) for p in ("A", "B")] +
            [envelope("A", 9, type_="decision.made")], cfg.routes())
    d = Dispatcher(store, cfg, reactor, metrics)
    await d.start()
    try:
        await drained(store, 10)
    finally:
        await stop(d)
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert order_by_patient(lines) == {"A": [0, 1, 2, 3, 4], "B": [0, 1, 2, 3, 4]}   # decision.made not routed
    assert all("patient_key" not in x for x in lines)


@pytest_twisted.ensureDeferred
async def test_unwritable_file_is_retried_with_a_clear_error(sqlite_store, tmp_path):
    store = sqlite_store
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    cfg = config({"name": "journal", "type": "file", "path": str(blocker / "events.jsonl"),
                  "max_attempts": 2, **FAST})
    enqueue(store, [envelope("A", 0)], cfg.routes())
    d = Dispatcher(store, cfg, reactor, metrics)
    await d.start()
    try:
        await drained(store, 1)
    finally:
        await stop(d)
    with store.transaction() as uow:
        (row,) = uow.deliveries()
    assert row["status"] == "dead" and "not-a-dir" in row["last_error"] and "Traceback" not in row["last_error"]


@pytest_twisted.ensureDeferred
async def test_two_instances_share_one_outbox(tmp_path, http_receiver):
    """Several instances on one PostgreSQL store: each delivery is claimed by one of them only, and the
    per-patient order holds across them."""
    from tests.outbound.conftest import make_store
    store, cm = make_store("postgresql", tmp_path)
    try:
        http_receiver.delay = 0.01
        http_receiver.up()
        cfg = config({"name": "dpi", "type": "http", "url": http_receiver.url, "concurrency": 4, **FAST})
        patients = [f"P{i}" for i in range(8)]
        enqueue(store, [envelope(p, n) for n in range(12) for p in patients], cfg.routes())
        a, b = Dispatcher(store, cfg, reactor, metrics), Dispatcher(store, cfg, reactor, metrics)
        await defer.gatherResults([a.start(), b.start()])
        try:
            await drained(store, 96)
        finally:
            await defer.gatherResults([a.stop(), b.stop()])
        ids = [e["id"] for e in http_receiver.accepted]
        assert len(ids) == len(set(ids)) == 96
        assert order_by_patient(http_receiver.accepted) == {p: list(range(12)) for p in patients}
    finally:
        store.dispose()
        cm.__exit__(None, None, None)


def test_claims_head_only_and_leases_expire(store):
    """The claim takes the head of each patient's queue, skips a live lease, and takes over an expired one."""
    routes = {"dpi": {"*"}}
    enqueue(store, [envelope("A", 0), envelope("A", 1), envelope("B", 0)], routes)
    now = datetime.now(timezone.utc)
    with store.transaction() as uow:
        first = uow.claim_deliveries("dpi", "ghost", now, now + timedelta(seconds=60), 10)
    assert [(r["envelope"]["patient"]["id"], r["envelope"]["data"]["n"]) for r in first] == [("A", 0), ("B", 0)]
    with store.transaction() as uow:
        assert uow.claim_deliveries("dpi", "me", now, now + timedelta(seconds=60), 10) == []
        later = now + timedelta(seconds=61)
        taken = uow.claim_deliveries("dpi", "me", later, later + timedelta(seconds=60), 10)
        assert len(taken) == 2
        # the ghost's late record is ignored: the lease is no longer its own
        assert not uow.finish_delivery(taken[0]["event_seq"], "dpi", "ghost", later)
        assert uow.finish_delivery(taken[0]["event_seq"], "dpi", "me", later)
        nxt = uow.claim_deliveries("dpi", "me", later, later + timedelta(seconds=60), 10)
        assert [(r["envelope"]["patient"]["id"], r["envelope"]["data"]["n"]) for r in nxt] == [("A", 1)]
        assert uow.release_claims() == 2


def test_routes_star_never_takes_the_forwarded_adt(sqlite_store):
    enqueue(sqlite_store, [forward("A", 0), envelope("A", 1)], {"all": {"*"}, "hl7": {"adt.forward"}})
    with sqlite_store.transaction() as uow:
        rows = uow.deliveries()
    assert sorted((r["destination"], r["type"]) for r in rows) == [("all", "consent.changed"),
                                                                    ("hl7", "adt.forward")]


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_deliveries_in_flight_and_records_them(sqlite_store, http_receiver):
    import threading
    store = sqlite_store
    arrived = threading.Event()

    def answer(env):
        arrived.set()
        time.sleep(0.5)                     # still in flight when stop() is called
        return 200
    http_receiver.answer = answer
    http_receiver.up()
    cfg = config({"name": "dpi", "type": "http", "url": http_receiver.url, "concurrency": 2, **FAST})
    enqueue(store, [envelope(p, n) for n in range(3) for p in ("A", "B")], cfg.routes())
    d = Dispatcher(store, cfg, reactor, metrics)
    await d.start()
    await until(arrived.is_set, what="a delivery in flight")
    await d.stop()
    with store.transaction() as uow:
        rows = uow.deliveries()
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) == len(http_receiver.accepted) == 2          # the two in flight, recorded; no new claim
    assert all(r["claimed_by"] is None for r in rows)
    assert {r["status"] for r in rows} == {"done", "pending"}


@pytest.fixture
def full_disk(small_filesystem):
    """A 64 KiB filesystem: the file destination fills it."""
    return small_filesystem("64k")


@pytest_twisted.ensureDeferred
async def test_a_full_disk_leaves_no_torn_line_in_the_file_destination(sqlite_store, full_disk):
    """ENOSPC in the middle of a line: the part written is cut off, so that the retry's line is not glued
    to it (a JSON-lines reader would lose both); every event is there once when space comes back."""
    store = sqlite_store
    path = full_disk / "events.jsonl"
    earlier = json.dumps({"earlier": "x" * 3900}) + "\n"      # the file's last page nearly full
    path.write_text(earlier)
    filler = full_disk / "filler"
    with open(filler, "wb", buffering=0) as f:              # then no page left
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    cfg = config({"name": "journal", "type": "file", "path": str(path), "max_attempts": 1000, **FAST})
    enqueue(store, [envelope("A", n) for n in range(3)], cfg.routes())
    d = Dispatcher(store, cfg, reactor, metrics)
    await d.start()
    try:
        await until(lambda: statuses(store).get("pending", 0) and _attempted(store), what="a failed attempt")
        filler.unlink()
        await drained(store, 3)
    finally:
        await stop(d)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[0] == earlier
    assert order_by_patient(json.loads(x) for x in lines[1:]) == {"A": [0, 1, 2]}


def _attempted(store) -> bool:
    with store.transaction() as uow:
        return any(row["last_error"] for row in uow.deliveries())
