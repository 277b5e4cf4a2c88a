"""The `amqp` destination against the machine's real RabbitMQ (127.0.0.1:5672, guest/guest), through a real
`pamgate serve`: delivery with its properties, the broker stopped mid-stream (nothing lost, each patient's
order kept), and a confirm refused (basic.nack) ending as a dead letter that a retry sends."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict

import pytest

from consent_store.store import Store
from tests.builders import adt, zfa_2111
from tests.durability.support import wait_until
from tests.serving import Server, ack_code

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
FAST = {"backoff": 0.2, "max_backoff": 1.0, "timeout": 5, "poll_interval": 0.1, "max_attempts": 1000}
SKIP = "no RabbitMQ at 127.0.0.1:5672 (guest/guest): the AMQP tests are skipped"
# one test stops the broker: under pytest-xdist (scripts/test) these tests run on one worker, one at a time
pytestmark = pytest.mark.xdist_group("rabbitmq")


def broker():
    import pika
    try:
        return pika.BlockingConnection(pika.URLParameters(URL + "?connection_attempts=1&socket_timeout=3"))
    except Exception:  # noqa: BLE001
        return None


@pytest.fixture
def exchange():
    """An exchange of the test's own (pamgate declares it the same way: topic, durable) and a durable queue
    bound to it for every routing key; both deleted afterwards."""
    conn = broker()
    if conn is None:
        pytest.skip(SKIP)
    name = f"pamgate-test-{uuid.uuid4().hex[:8]}"
    ch = conn.channel()
    ch.exchange_declare(name, exchange_type="topic", durable=True)
    ch.queue_declare(name, durable=True)
    ch.queue_bind(name, name, routing_key="#")
    conn.close()
    yield name
    conn = broker()
    if conn is not None:
        ch = conn.channel()
        ch.queue_delete(name)
        ch.queue_delete(name + "-small")
        ch.exchange_delete(name)
        conn.close()


def drain(queue: str) -> list[tuple]:
    """Every message in the queue now: (method, properties, body), acknowledged."""
    conn = broker()
    ch = conn.channel()
    out = []
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        out.append((method, props, body))
    conn.close()
    return out


def serve(tmp_path, exchange, **overrides):
    dest = {"name": "bus", "type": "amqp", "url": URL, "exchange": exchange, **FAST, **overrides}
    return Server(tmp_path, config={"destinations": [dest]})


def outbox(tmp_path) -> list[dict]:
    with Store(f"sqlite:///{tmp_path / 'store.db'}").transaction() as uow:
        return [e for e in uow.outbox_events(limit=100000) if e["type"] != "adt.forward"]


def counts(tmp_path) -> dict:
    with Store(f"sqlite:///{tmp_path / 'store.db'}").transaction() as uow:
        return uow.count_deliveries()


def rabbitmqctl(*args):
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120)


def test_events_are_published_with_confirms_as_persistent_messages(tmp_path, exchange):
    server = serve(tmp_path, exchange).start()
    try:
        for ipp in ("610001", "610002"):
            assert ack_code(server.send(adt("A01", ipp=ipp, zfa=zfa_2111("INO", "IC")))) == "AA"
        assert server.decide({"id": "610001", "authority": "HOSP-T"}, "consult")[0] == 200
        wait_until(lambda: len(outbox(tmp_path)) >= 3 and counts(tmp_path) == {"done": len(outbox(tmp_path))},
                   timeout=30, what="every event delivered")
    finally:
        server.stop()
    events = {e["id"]: e for e in outbox(tmp_path)}
    got = drain(exchange)
    assert {p.message_id for _, p, _ in got} == set(events)
    for method, props, body in got:
        event = events[props.message_id]
        assert method.exchange == exchange and method.routing_key == event["type"]
        assert props.delivery_mode == 2 and props.content_type == "application/json"
        assert props.headers["patient_key"] == event["patient_key"]
        doc = json.loads(body)
        assert doc["id"] == event["id"] and doc["type"] == event["type"] and "patient_key" not in doc
    assert {m.routing_key for m, _, _ in got} >= {"consent.changed", "decision.made"}


def test_broker_stopped_mid_stream_loses_nothing_and_keeps_each_patients_order(tmp_path, exchange):
    if rabbitmqctl("status").returncode != 0:
        pytest.skip("rabbitmqctl cannot reach the broker here: the broker-stop test is skipped")
    server = serve(tmp_path, exchange).start()
    patients = [f"62000{i}" for i in range(4)]
    sent = threading.Event()
    errors = []

    def stream():
        try:
            for k in range(12):
                for ipp in patients:
                    zfa = zfa_2111("INO" if k % 2 else "IO", "IC" if k % 3 else "INC", f"202501{k + 1:02d}090000")
                    m = adt("A01" if k == 0 else "A31", ipp=ipp, zfa=zfa, when=f"202501{k + 1:02d}090000")
                    assert ack_code(server.send(m)) == "AA"
                time.sleep(0.1)
        except Exception as e:  # noqa: BLE001 — reported by the test
            errors.append(repr(e))
        finally:
            sent.set()

    stopped = False
    try:
        threading.Thread(target=stream, daemon=True).start()
        store = Store(f"sqlite:///{tmp_path / 'store.db'}")

        def done():
            with store.transaction() as uow:
                return uow.count_deliveries().get("done", 0)
        wait_until(lambda: done() >= 4, timeout=30, what="the first deliveries")
        assert rabbitmqctl("stop_app").returncode == 0
        stopped = True
        time.sleep(3)                       # the stream goes on; deliveries fail and are retried
        with store.transaction() as uow:
            assert uow.count_deliveries().get("pending", 0) > 0
        assert rabbitmqctl("start_app").returncode == 0
        stopped = False
        rabbitmqctl("await_startup")
        assert sent.wait(60) and errors == []
        wait_until(lambda: done() == len(outbox(tmp_path)), timeout=90, what="the outbox drained")
    finally:
        if stopped:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
        server.stop()
    events = outbox(tmp_path)
    expected = defaultdict(list)
    for e in events:
        expected[e["patient_key"]].append(e["id"])
    got, seen = defaultdict(list), set()
    for _, props, _ in drain(exchange):
        # at least once: a message whose confirm was lost in the stop comes again under the same id
        if props.message_id not in seen:
            seen.add(props.message_id)
            got[props.headers["patient_key"]].append(props.message_id)
    assert dict(got) == dict(expected)      # nothing lost, each patient's events in order


def test_a_refused_confirm_is_retried_then_dead(tmp_path, exchange):
    # a second queue that takes one message and refuses more (reject-publish: the broker answers basic.nack)
    conn = broker()
    ch = conn.channel()
    small = exchange + "-small"
    ch.queue_declare(small, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.queue_bind(small, exchange, routing_key="#")
    conn.close()
    server = serve(tmp_path, exchange, max_attempts=2, backoff=0.1).start()
    try:
        for ipp in ("630001", "630002", "630003"):
            assert ack_code(server.send(adt("A01", ipp=ipp, zfa=zfa_2111("INO", "IC")))) == "AA"
        store = Store(f"sqlite:///{tmp_path / 'store.db'}")

        def dead():
            with store.transaction() as uow:
                return uow.deliveries(status="dead")
        wait_until(lambda: len(dead()) == len(outbox(tmp_path)) - 1, timeout=30, what="the refused ones dead")
        assert {d["last_error"] for d in dead()} == {"the broker refused the message (basic.nack)"}
        assert len(drain(small)) == 1
        # once the small queue is gone, a retry of the dead letters delivers them
        conn = broker()
        conn.channel().queue_delete(small)
        conn.close()
        retried = subprocess.run([sys.executable, "-m", "pamgate.cli", "outbox", "retry", "--all-dead", "--config",
                                  str(server.config_path)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert retried.returncode == 0, retried.stderr
        total = len(outbox(tmp_path))
        wait_until(lambda: counts(tmp_path) == {"done": total}, timeout=30,
                   what="the dead letters delivered after the retry")
    finally:
        server.stop()


def test_amqp_destinations_are_checked_at_load(tmp_path):
    from engine import config as configuration

    def problem(dest):
        path = tmp_path / f"c{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(json.dumps({"destinations": [{"name": "bus", **dest}]}))
        with pytest.raises(configuration.ConfigError) as e:
            configuration.load(str(path), environ={})
        return str(e.value)

    assert "needs exchange" in problem({"type": "amqp", "url": URL})
    assert "needs url" in problem({"type": "amqp", "exchange": "x"})
    bad = problem({"type": "amqp", "url": "http://guest:s3cret@h/", "exchange": "x"})
    assert "amqp://" in bad and "s3cret" not in bad
    assert "broker's" in problem({"type": "amqp", "url": URL, "exchange": "amq.topic"})
    assert "amqp destinations only" in problem({"type": "http", "url": "http://h/", "exchange": "x"})
    path = tmp_path / "ok.yaml"
    path.write_text(json.dumps({"destinations": [{"name": "bus", "type": "amqp", "url": URL, "exchange": "x"}]}))
    assert configuration.load(str(path), environ={}).destinations[0].exchange == "x"
