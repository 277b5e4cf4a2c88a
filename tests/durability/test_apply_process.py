"""The apply process (engine/apply_process.py) killed in the middle of a stream: what it held is answered
AE (never AA), a new one starts by itself, and senders that resend on AE end with every message applied
exactly once, as a server that was never hurt would have it."""
from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.durability.support import Connection, control_id, dump, err3, msa, streams, wait_until
from tests.serving import Server

PATIENTS, PER_PATIENT, CONNECTIONS = 12, 25, 4
BASE = datetime.now(timezone.utc).replace(microsecond=0, second=0) - timedelta(days=1)


def apply_process_of(server_pid: int) -> int | None:
    """The pid of the serve process's child running engine.apply_process."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server_pid and b"engine.apply_process" in cmdline:
            return int(stat.parent.name)
    return None


def sender(port, sequence, answers: list):
    """A real feed: one message at a time; on AE it waits a little and sends the same message again."""
    conn = Connection(port, timeout=60)
    try:
        for m in sequence:
            while True:
                conn.write(m)
                ack = conn.read_ack()
                code, cid = msa(ack)
                answers.append((cid, code, err3(ack)))
                if code == "AA":
                    break
                time.sleep(0.05)
    finally:
        conn.close()


def test_a_killed_apply_process_answers_ae_restarts_and_loses_nothing(tmp_path):
    plan = streams(PATIENTS, PER_PATIENT, seed=21, base=BASE)
    ipps = sorted(plan)
    sequences = [[plan[ipp][k] for k in range(PER_PATIENT) for ipp in ipps[i::CONNECTIONS]]
                 for i in range(CONNECTIONS)]
    total = PATIENTS * PER_PATIENT
    (tmp_path / "ref").mkdir()
    reference = Server(tmp_path / "ref").start()
    try:
        answers = [[] for _ in sequences]
        threads = [threading.Thread(target=sender, args=(reference.mllp_port, s, answers[i]))
                   for i, s in enumerate(sequences)]
        [t.start() for t in threads]
        [t.join(120) for t in threads]
        assert {code for a in answers for _, code, _ in a} == {"AA"}
    finally:
        reference.stop()
    expected = dump(f"sqlite:///{tmp_path / 'ref' / 'store.db'}")

    (tmp_path / "victim").mkdir()
    server = Server(tmp_path / "victim").start()
    try:
        first = apply_process_of(server.proc.pid)
        assert first is not None
        answers = [[] for _ in sequences]
        threads = [threading.Thread(target=sender, args=(server.mllp_port, s, answers[i]))
                   for i, s in enumerate(sequences)]
        [t.start() for t in threads]
        wait_until(lambda: sum(len(a) for a in answers) >= total // 3, timeout=120, every=0.002,
                   what="a third answered")
        os.kill(first, signal.SIGKILL)
        # /healthz tells a load balancer while the apply process starts again, then is well again
        wait_until(lambda: server.http("GET", "/healthz")[0] == 503, timeout=10, every=0.01, what="503")
        assert server.http("GET", "/healthz")[1]["error"] == "apply.not_ready"
        wait_until(lambda: server.http("GET", "/healthz")[0] == 200, timeout=30, every=0.05, what="200 again")
        [t.join(120) for t in threads]
        assert not any(t.is_alive() for t in threads)

        codes = [code for a in answers for _, code, _ in a]
        refused = [(cid, code, e) for a in answers for cid, code, e in a if code != "AA"]
        assert refused, "the kill should have caught messages in flight or arriving while it restarted"
        assert {(code, e) for _, code, e in refused} == {("AE", "207")}   # store unavailable, retry later
        assert codes.count("AA") == total
        second = apply_process_of(server.proc.pid)
        assert second is not None and second != first
        assert "apply.process_ended" in server.stderr()
        scraped = server.http("GET", "/metrics")[1].decode()
        assert "pamgate_apply_process_restarts_total 1.0" in scraped
        assert "pamgate_apply_process_in_flight 0.0" in scraped      # every message was answered

        final = dump(f"sqlite:///{tmp_path / 'victim' / 'store.db'}")
        assert final["applied"] == {control_id(m) for s in sequences for m in s}
        assert final["audits"] == {ipp: PER_PATIENT for ipp in plan}       # each applied exactly once
        assert final["states"] == expected["states"]
        assert final["chain"][1:] == (None, None)
    finally:
        server.stop()
    # a graceful stop ends the apply process too
    assert apply_process_of(server.proc.pid) is None


def test_an_in_memory_store_is_refused_at_start_with_one_line(tmp_path):
    server = Server(tmp_path, store_url="sqlite://")
    try:
        server.start(timeout=30)
        raise AssertionError("serve started on an in-memory store")
    except RuntimeError as e:
        assert "store.url: sqlite://: an in-memory store cannot be served" in str(e)
    finally:
        server.stop()


def test_an_apply_process_that_cannot_start_says_why_in_one_line_and_is_tried_again(tmp_path):
    from tests.builders import adt
    from tests.serving import ack_code
    server = Server(tmp_path).start()
    good = server.config_path.read_text()
    try:
        wait_until(lambda: server.http("GET", "/healthz")[0] == 200, timeout=30, every=0.05, what="ready")
        # the configuration file goes bad after the start: the next apply process cannot start
        server.config_path.write_text(good + "\nnot_a_key: 1\n")
        os.kill(apply_process_of(server.proc.pid), signal.SIGKILL)
        wait_until(lambda: "apply process: cannot start" in server.stderr(), timeout=30, what="the one line")
        assert server.http("GET", "/healthz")[0] == 503
        assert ack_code(server.send(adt("A01", ipp="810001"))) == "AE"            # 207, nothing applied
        line = next(x for x in server.stderr().splitlines() if "apply process: cannot start" in x)
        assert "not_a_key" in line and "Traceback" not in server.stderr()
        # mended: a later attempt starts, and messages are applied again
        server.config_path.write_text(good)
        wait_until(lambda: server.http("GET", "/healthz")[0] == 200, timeout=30, every=0.1, what="ready again")
        assert ack_code(server.send(adt("A01", ipp="810001"))) == "AA"
    finally:
        server.stop()
