"""A patient's history must not make a message or a decision cost more (issue 13).

One patient gets N messages (a new visit each time, consent IC / INC alternating); then one more message
and one decision are measured on the store's driver connection: the statements run, the rows written and
read, and the bytes read and written. At history 10 and at history 1,000 they must be the same. Counts, not
times: a fold over the whole history, or a document that grows with it, shows up in the bytes; a query that
scans the patient's rows instead of seeking them shows up in SQLite's query plan.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event

from consent_store.store import Store
from engine.commit import run_batch
from engine.config import Config
from engine.domain import DecisionRequest
from engine.serve import build_pipeline
from tests.builders import adt, zfa_2111

T0 = datetime(2020, 1, 6, 9, 0, tzinfo=timezone.utc)
# the messages' reception: after every collection date they carry (a date ahead of the clock is refused)
RECEIVED = datetime(2080, 1, 1, tzinfo=timezone.utc)
IPP, AUTHORITY = "777001", "HOSP-H"
# the tables that hold a patient's history: read only by seeking an index, never by a scan
PATIENT_TABLES = ("consent_fact", "episode", "movement", "dmp_result", "break_glass_request", "identifier",
                  "patient")


@dataclass
class Work:
    on: bool = False
    statements: list = field(default_factory=list)   # (sql, rows written)
    rows_read: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    selects: list = field(default_factory=list)      # (sql, params) to explain
    steps: int = 0                                   # SQLite virtual machine instructions run

    def step(self):
        self.steps += 1
        return 0

    def wrote(self, sql, rows):
        self.statements.append((sql, len(rows)))
        self.bytes_written += sum(_size(r) for r in rows)
        if sql.lstrip().upper().startswith("SELECT") and rows:
            self.selects.append((sql, rows[0]))

    def read(self, rows):
        self.rows_read += len(rows)
        self.bytes_read += sum(_size(r) for r in rows)


def _size(values) -> int:
    """Bytes of a row or a parameter set; numbers count as 8, whatever their value."""
    if isinstance(values, dict):
        values = values.values()
    n = 0
    for v in values or ():
        n += len(v) if isinstance(v, (str, bytes)) else 8
    return n


WORK = Work()


class CountingCursor(sqlite3.Cursor):
    def execute(self, sql, params=()):
        if WORK.on:
            WORK.wrote(sql, [params])
        return super().execute(sql, params)

    def executemany(self, sql, seq):
        seq = list(seq)
        if WORK.on:
            WORK.wrote(sql, seq)
        return super().executemany(sql, seq)

    def fetchone(self):
        row = super().fetchone()
        if WORK.on and row is not None:
            WORK.read([row])
        return row

    def fetchmany(self, size=None):
        rows = super().fetchmany(size) if size is not None else super().fetchmany()
        if WORK.on:
            WORK.read(rows)
        return rows

    def fetchall(self):
        rows = super().fetchall()
        if WORK.on:
            WORK.read(rows)
        return rows

    def __next__(self):
        row = super().__next__()
        if WORK.on:
            WORK.read([row])
        return row


CONNECTIONS = []


class CountingConnection(sqlite3.Connection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        CONNECTIONS.append(self)

    def cursor(self, factory=CountingCursor):
        return super().cursor(factory)


def message(i: int) -> str:
    when = (T0 + timedelta(days=2 * i)).strftime("%Y%m%d%H%M%S")
    consult = "IC" if i % 2 else "INC"
    return adt("A04", ipp=IPP, authority=AUTHORITY, visit=f"V{i:06d}", movement=f"M{i:06d}", when=when,
               control_id=f"H{i:08d}", zfa=zfa_2111("NA", consult, when))


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(Config.model_validate({}))


def _store(tmp_path, name) -> Store:
    s = Store(f"sqlite:///{tmp_path / name}")
    event.listen(s.engine, "do_connect",
                 lambda dialect, rec, cargs, cparams: cparams.update(factory=CountingConnection))
    s.upgrade()
    return s


def _apply(store, pipeline, texts):
    works = [pipeline.prepare(t, t.encode(), RECEIVED) for t in texts]
    results, committed = run_batch(store, [(w.run, w.keys()) for w in works])
    assert committed and all(ok and v.code == "AA" for ok, v in results), results


def _measured(fn) -> Work:
    """The work of fn(): statements, rows, bytes, and the instructions SQLite's virtual machine ran (an
    index walked instead of sought shows there, though it returns one row)."""
    global WORK
    WORK = work = Work(on=True)
    _progress(work.step)
    try:
        fn()
    finally:
        WORK.on = False
        _progress(None)
    return WORK


def _progress(handler):
    for c in list(CONNECTIONS):
        try:
            c.set_progress_handler(handler, 1)
        except sqlite3.ProgrammingError:   # closed
            CONNECTIONS.remove(c)


def measure(tmp_path, pipeline, history: int) -> tuple[Work, Work]:
    store = _store(tmp_path, f"h{history}.db")
    try:
        for start in range(0, history, 100):
            _apply(store, pipeline, [message(i) for i in range(start, min(history, start + 100))])
        msg = _measured(lambda: _apply(store, pipeline, [message(history)]))
        now = T0 + timedelta(days=2 * history, hours=1)
        request = DecisionRequest(action="consult", user="dr-h", profession="10")

        def decide():
            with store.transaction() as uow:
                result = pipeline.decide(uow, {"id": IPP, "authority": AUTHORITY}, request, now)
            assert result["decision"] == ("permit" if history % 2 else "deny"), result
        dec = _measured(decide)
        _no_scans(store, msg.selects + dec.selects)
        return msg, dec
    finally:
        store.dispose()


def _no_scans(store, selects):
    """SQLite's plan of every SELECT run: a patient's rows are sought through an index, never scanned."""
    path = store.url.split("///", 1)[1]
    db = sqlite3.connect(path)
    try:
        for sql, params in selects:
            plan = [r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            scans = [p for p in plan if p.startswith("SCAN") and p.split()[1] in PATIENT_TABLES]
            assert not scans, (sql, plan)
    finally:
        db.close()


def _shape(work: Work):
    return [(sql, rows) for sql, rows in work.statements]


@pytest.fixture(scope="module")
def measured(tmp_path_factory, pipeline):
    tmp = tmp_path_factory.mktemp("history")
    return {h: measure(tmp, pipeline, h) for h in (10, 1000)}


@pytest.mark.parametrize("which", ["message", "decision"])
def test_the_work_of_one_more_message_or_decision_does_not_grow_with_history(measured, which):
    i = 0 if which == "message" else 1
    short, long_ = measured[10][i], measured[1000][i]
    # the same statements, each with the same number of rows, and the same rows read
    assert _shape(long_) == _shape(short)
    assert long_.rows_read == short.rows_read
    # and SQLite ran the same work for them: seeks, never a walk along the patient's rows
    assert long_.steps <= short.steps * 1.05, (short.steps, long_.steps)
    # and the same bytes: nothing that grows with the history (a state document) is read or written whole
    assert long_.bytes_read <= short.bytes_read + 64, (short.bytes_read, long_.bytes_read)
    assert long_.bytes_written <= short.bytes_written + 64, (short.bytes_written, long_.bytes_written)


def test_the_work_of_a_message_stays_within_its_count(measured):
    """The message path's statements and rows read, as counted when they were last cut (issue 13, the
    realistic feed): a statement added to it is a choice made knowingly, not a drift."""
    msg = measured[10][0]
    assert len(msg.statements) <= 20 and msg.rows_read <= 8, (len(msg.statements), msg.rows_read)


def test_an_identity_update_reads_none_of_the_history(tmp_path, pipeline):
    """An A31 that carries no consent value and names no visit (A28/A31 are over half of a real feed) reads
    no row of the patient's facts, visits or movements: the header is all its rules need
    (rules.changes_history); and the decision after it is the one before it."""
    store = _store(tmp_path, "identity.db")
    request = DecisionRequest(action="consult", user="dr-h", profession="10")
    now = T0 + timedelta(days=30)

    def decision():
        with store.transaction() as uow:
            return pipeline.decide(uow, {"id": IPP, "authority": AUTHORITY}, request, now)
    try:
        _apply(store, pipeline, [message(i) for i in range(10)])
        before = decision()
        update = adt("A31", ipp=IPP, authority=AUTHORITY, when=(T0 + timedelta(days=25)).strftime("%Y%m%d%H%M%S"),
                     name="DURAND^ÉLODIE")
        work = _measured(lambda: _apply(store, pipeline, [update]))
        history = [sql for sql, _ in work.statements
                   if any(f"FROM {t}" in sql or f"JOIN {t}" in sql for t in ("consent_fact", "episode", "movement"))]
        assert not history, history
        after = decision()
        assert {k: after[k] for k in ("decision", "reasons", "episode")} == \
            {k: before[k] for k in ("decision", "reasons", "episode")}
    finally:
        store.dispose()


def test_figures(measured, capsys):
    """Not a check: the counts, printed for BENCHMARKS.md (pytest -s)."""
    with capsys.disabled():
        for h, works in measured.items():
            for name, w in zip(("message", "decision"), works):
                print(f"\nhistory {h:>5} {name:<8}: {len(w.statements)} statements, "
                      f"{sum(n for _, n in w.statements)} row writes/executions, {w.rows_read} rows read, "
                      f"{w.bytes_read} bytes read, {w.bytes_written} bytes written, {w.steps} SQLite VM steps")
