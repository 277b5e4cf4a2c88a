"""SIGTERM: stop accepting, finish and ACK what is in flight, commit, exit 0."""
import signal
import socket
import threading

from mllp.client import BlockingMLLPClient
from tests.builders import adt
from tests.serving import Server, ack_code


def test_sigterm_acks_in_flight_then_exits(tmp_path):
    server = Server(tmp_path).start()
    acks, errors = [], []
    per_sender = {n: 0 for n in range(4)}

    def sender(n):
        try:
            with BlockingMLLPClient("127.0.0.1", server.mllp_port, timeout=30) as c:
                for i in range(200):
                    acks.append(ack_code(c.send(adt("A01", ipp=f"SD{n}", visit=f"V{n}-{i}", control_id=f"SD-{n}-{i}"))))
                    per_sender[n] += 1
        except Exception as e:  # noqa: BLE001 — the connection is closed by the shutdown
            errors.append(e)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while len(acks) < 50:
        pass
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0
    for t in threads:
        t.join(30)
    assert set(acks) == {"AA"}
    # nothing listens any more
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", server.mllp_port)) != 0
    # every ACKed message is in the store: restart on the same file and count the duplicates
    again = Server(tmp_path, {"store": {"url": f"sqlite:///{tmp_path / 'store.db'}"}}).start()
    try:
        for n, acked in per_sender.items():
            status, body = again.http("GET", f"/v1/audit?authority=HOSP-T&id=SD{n}")
            applied = sum(1 for e in body["entries"] if e["kind"] == "message") if status == 200 else 0
            assert applied >= acked
    finally:
        again.stop()
