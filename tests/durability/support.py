"""What the durability tests share: a pipelining MLLP connection, per-patient message streams, a dump of a
store's patients, and a private PostgreSQL server that a test may stop and start."""
from __future__ import annotations

import glob
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections import deque
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from consent_store.store import Store
from mllp.ack import read_ack
from mllp.frame import MLLPReceiver, frame
from tests.builders import adt, zfa_2111

AUTHORITY = "HOSP-D"


# --- MLLP --------------------------------------------------------------------------------------------

class _Frames(MLLPReceiver):
    MAX_LENGTH = 1 << 20

    def __init__(self):
        super().__init__()
        self.frames = deque()

    def frameReceived(self, raw: bytes) -> None:
        self.frames.append(raw)

    def frameTooLong(self, head: bytes, size: int) -> None:
        raise AssertionError(f"an ACK of {size} bytes")


class Connection:
    """One persistent MLLP connection. `write` may run ahead of `read_ack` (pipelining): the listener
    answers a connection's frames in the order they came."""

    def __init__(self, port: int, timeout: float = 60.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._frames = _Frames()

    def write(self, message: str) -> None:
        self.sock.sendall(frame(message.encode("utf-8") + b"\r"))

    def read_ack(self) -> str:
        while not self._frames.frames:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before the ACK")
            self._frames.dataReceived(data)
        return self._frames.frames.popleft().decode("utf-8", "replace")

    def send(self, message: str) -> str:
        self.write(message)
        return self.read_ack()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def msa(ack: str) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK."""
    read = read_ack(ack)
    assert read.has_msa, f"no MSA in {ack!r}"
    return read.code, read.control_id


def err3(ack: str) -> str | None:
    for seg in ack.split("\r"):
        if seg.startswith("ERR|"):
            f = seg.split("|")
            return f[3].split("^")[0] if len(f) > 3 else None
    return None


# --- messages ------------------------------------------------------------------------------------------

def ts(dt: datetime) -> str:
    return dt.strftime("%Y%m%d%H%M%S")


def patient_stream(ipp: str, count: int, rng: random.Random, base: datetime) -> list[str]:
    """`count` messages of one patient: an admission, then consent and feed-opposition changes (A31,
    Z99, a second visit). Collection dates rise by pairs: two messages share a date, so within a pair
    the arrival order decides (the later one wins), and applying them out of order changes the state."""
    out = [adt("A01", ipp=ipp, authority=AUTHORITY, facility=AUTHORITY, visit=f"{ipp}-1", when=ts(base),
               control_id=f"{ipp}-000", zfa=zfa_2111("INO", "NA", ts(base)))]
    for k in range(1, count):
        when = ts(base + timedelta(minutes=(k + 1) // 2))
        consult = rng.choice(["IC", "INC", "NA"])
        feed = rng.choice(["INO", "IO", "NA", "NA"])
        zfa = zfa_2111(feed, consult, when)
        cid = f"{ipp}-{k:03d}"
        kind = rng.random()
        if kind < 0.6:
            out.append(adt("A31", ipp=ipp, authority=AUTHORITY, facility=AUTHORITY, when=when, control_id=cid,
                           zfa=zfa))
        elif kind < 0.9 or k < count // 2:
            out.append(adt("Z99", ipp=ipp, authority=AUTHORITY, facility=AUTHORITY, visit=f"{ipp}-1", when=when,
                           control_id=cid, zbe_action="UPDATE", original="A01", zfa=zfa))
        else:
            out.append(adt("A01", ipp=ipp, authority=AUTHORITY, facility=AUTHORITY, visit=f"{ipp}-2", when=when,
                           control_id=cid, movement=f"M{k}", zfa=zfa))
    return out


def streams(patients: int, per_patient: int, seed: int, base: datetime) -> dict[str, list[str]]:
    rng = random.Random(seed)
    return {f"{9000 + p:06d}": patient_stream(f"{9000 + p:06d}", per_patient, rng, base) for p in range(patients)}


def control_id(message: str) -> str:
    return message.split("\r", 1)[0].split("|")[9]


# --- reading a store -----------------------------------------------------------------------------------

def dump(url: str) -> dict:
    """Each patient's state document by IPP, and the counts that say how often messages were applied."""
    store = Store(url)
    try:
        with store.transaction() as uow:
            c = uow.conn
            states = {ipp: json.loads(state) for ipp, state in c.execute(text(
                "SELECT i.value, p.state FROM identifier i JOIN patient p ON p.id = i.patient_id "
                "WHERE i.kind = 'PI' AND p.merged_into IS NULL"))}
            audits = dict(c.execute(text(
                "SELECT i.value, count(*) FROM audit a JOIN identifier i ON i.patient_id = a.patient_id "
                "WHERE i.kind = 'PI' AND a.kind = 'message' GROUP BY i.value")).all())
            facts = dict(c.execute(text(
                "SELECT i.value, count(*) FROM consent_fact f JOIN identifier i ON i.patient_id = f.patient_id "
                "WHERE i.kind = 'PI' GROUP BY i.value")).all())
            applied = {r[0] for r in c.execute(text("SELECT control_id FROM applied_message"))}
            chain = uow.verify_audit()
        return {"states": states, "audits": audits, "facts": facts, "applied": applied, "chain": chain}
    finally:
        store.dispose()


# --- a PostgreSQL server of the test's own ---------------------------------------------------------------

def _bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found and os.path.exists(os.path.join(os.path.dirname(found[-1]), "initdb")) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """initdb into a temporary folder and pg_ctl on a free port: stopping it harms nothing else."""

    def __init__(self):
        self.bin = _bin()
        if self.bin is None:
            pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin: "
                        "PostgreSQL outage test skipped")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            import pwd
            try:
                self.owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root without a postgres user to run initdb: PostgreSQL outage test skipped")
        self.dir = tempfile.mkdtemp(prefix="pamgate-pg-", dir="/tmp")
        if self.as_root:
            os.chown(self.dir, self.owner.pw_uid, self.owner.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args, timeout=120):
        cmd = [os.path.join(self.bin, args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {r.stdout[-2000:]} {r.stderr[-2000:]}")
        return r

    def init(self):
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        return self

    def start(self):
        # fsync off only spares the disk: a stopped server keeps every commit it acknowledged
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        return self

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        cmd = [os.path.join(self.bin, "pg_ctl"), "-D", self.data, "status"]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, cwd=self.dir, capture_output=True).returncode == 0

    def cleanup(self):
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def private_postgres():
    pg = PrivatePostgres()
    try:
        yield pg.init().start()
    finally:
        pg.cleanup()


def wait_until(predicate, timeout: float, every: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        time.sleep(every)
