"""The restore drill (issue 16): `pamgate db backup` of a live SQLite store while a sender streams messages,
then the copy used as the store of a new folder: its audit chain holds, and every message ACKed before the
backup began is there and decides as it did on the original."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

from mllp.client import BlockingMLLPClient
from tests.builders import adt, zfa_2111
from tests.durability.support import wait_until
from tests.serving import Server, ack_code

MESSAGES = 400
AT = "2025-01-06T12:00:00+01:00"


def run(cwd, *args):
    env = {k: v for k, v in os.environ.items() if k != "PAMGATE_CONFIG"}
    return subprocess.run([sys.executable, "-m", "pamgate.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def patient(i):
    return {"id": f"77{i:04d}", "authority": "HOSP-T"}


class Stream(threading.Thread):
    """One patient per message, consent IC for odd ones and INC for even ones: (control id, ACK time)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.acked, self.error = port, {}, None

    def run(self):
        try:
            with BlockingMLLPClient("127.0.0.1", self.port, timeout=30) as c:
                for i in range(MESSAGES):
                    msg = adt("A01", ipp=patient(i)["id"], control_id=f"R{i:05d}",
                              zfa=zfa_2111("NA", "IC" if i % 2 else "INC"))
                    assert ack_code(c.send(msg)) == "AA"
                    self.acked[i] = time.monotonic()
                    time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 — reported by the test
            self.error = repr(e)


def decision(server, i):
    status, body = server.decide(patient(i), "consult", at=AT)
    assert status == 200, body
    return body["decision"], sorted(body["reasons"]) if isinstance(body["reasons"], list) else body["reasons"]


def test_backup_during_a_stream_restores(tmp_path):
    live, restored_dir = tmp_path / "live", tmp_path / "restored"
    live.mkdir(), restored_dir.mkdir()
    server = Server(live).start()
    copy = restored_dir / "pamgate.db"
    try:
        stream = Stream(server.mllp_port)
        stream.start()
        wait_until(lambda: len(stream.acked) >= MESSAGES // 4, timeout=60, every=0.01, what="a quarter sent")
        began = time.monotonic()
        backup = run(live, "db", "backup", str(copy), "--config", str(server.config_path))
        ended = time.monotonic()
        assert backup.returncode == 0, backup.stderr
        assert backup.stdout.startswith("pamgate: store ") and f"backed up to {copy}" in backup.stdout
        stream.join(120)
        assert stream.error is None and len(stream.acked) == MESSAGES
        before = sorted(i for i, t in stream.acked.items() if t < began)
        after = [i for i, t in stream.acked.items() if t > ended]
        assert before and after, "the backup did not run during the stream"
        original = {i: decision(server, i) for i in before}
    finally:
        server.stop()

    # a consistent copy: every message ACKed before the backup began is in it, no half-written state
    with sqlite3.connect(copy) as c:
        applied = {r[0] for r in c.execute("SELECT control_id FROM applied_message")}
    assert {f"R{i:05d}" for i in before} <= applied
    assert len(applied) < MESSAGES

    restored = Server(restored_dir, store_url=f"sqlite:///{copy}")
    verify = run(restored_dir, "audit", "verify", "--config", str(restored.config_path))
    assert verify.returncode == 0 and "audit chain intact" in verify.stdout, verify.stdout + verify.stderr
    restored.start()
    try:
        assert {i: decision(restored, i) for i in before} == original
        assert {d for d, _ in original.values()} == {"permit", "deny"}
    finally:
        restored.stop()


def test_backup_refuses_what_it_cannot_copy(tmp_path):
    pg = tmp_path / "pg.yaml"
    pg.write_text("store:\n  url: postgresql+psycopg://pamgate@127.0.0.1:5432/pamgate\n")
    done = run(tmp_path, "db", "backup", str(tmp_path / "x.db"), "--config", str(pg))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "pg_dump -Fc" in done.stderr
    (tmp_path / "here.yaml").write_text(f"store:\n  url: sqlite:///{tmp_path / 'none.db'}\n")
    done = run(tmp_path, "db", "backup", str(tmp_path / "x.db"), "--config", str(tmp_path / "here.yaml"))
    assert done.returncode == 2 and "no such file" in done.stderr and not (tmp_path / "x.db").exists()
