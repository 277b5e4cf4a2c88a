"""The unit of work: one transaction holds the dedup check, the state, the audit entry and the outbox rows.

The store takes and returns plain values (dicts, strings, datetimes). It knows nothing of HL7 nor of the
consent rules. SQLite (WAL, synchronous=FULL) is the embedded default; PostgreSQL serves several instances,
which then order their work per patient with advisory locks.
"""
from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from functools import lru_cache
from datetime import datetime, timezone

import orjson
from sqlalchemy import (DateTime, String, and_, bindparam, case, create_engine, event, func, insert, or_, select, text,
                        union, union_all, update)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from consent_store.sql import DriverCursor, Sql
from consent_store.tables import applied as applied_message
from consent_store.tables import (audit, audit_head, break_glass_request, consent_fact, delivery, dmp_result,
                                  episode, identifiers, journal, metadata, movement, outbox, patients,
                                  sender_sequence, storable, unstorable, users)

GENESIS = "0" * 64
# the kind of the audit entry that records a verification of the chain (`pamgate audit verify`, the console)
AUDIT_VERIFICATION = "audit.verification"
Q_LAST_VERIFICATION = (select(audit.c.seq, audit.c.at, audit.c.payload).where(audit.c.kind == AUDIT_VERIFICATION)
                       .order_by(audit.c.seq.desc()).limit(1))


# The statements of the message path: Core, built once, run on the driver's cursor (consent_store/sql.py says
# why and how).
_am = applied_message.c
_id = identifiers.c
Q_APPLIED = Sql(select(_am.content_hash).where(_am.sender_application == bindparam("b_app"),
                                             _am.sender_facility == bindparam("b_facility"),
                                             _am.control_id == bindparam("b_control_id")))
I_JOURNAL = Sql(insert(journal), columns=["received_at", "sender_application", "sender_facility", "control_id",
                                          "event", "ack_code", "error", "raw", "patient_id", "ack", "patient_ipp",
                                          "visit"], returns=journal.c.id)
I_APPLIED = Sql(insert(applied_message), columns=["sender_application", "sender_facility", "control_id",
                                                  "journal_id", "content_hash"])
Q_FIND = Sql(select(_id.patient_id, patients.c.merged_into, patients.c.state)
             .join_from(identifiers, patients, _id.patient_id == patients.c.id)
             .where(_id.kind == bindparam("b_kind"), _id.authority == bindparam("b_authority"),
                    _id.value == bindparam("b_value"), _id.active.is_(True)))
Q_MERGED_INTO = Sql(select(patients.c.merged_into).where(patients.c.id == bindparam("b_pid")))
_q_state = select(patients.c.state).where(patients.c.id == bindparam("b_pid"))
Q_STATE = Sql(_q_state)
Q_STATE_FOR_UPDATE = Sql(_q_state.with_for_update())
I_PATIENT = Sql(insert(patients), columns=["state", "version", "updated_at"], returns=patients.c.id)
U_STATE = Sql(update(patients).where(patients.c.id == bindparam("b_pid")).values(
    state=bindparam("b_state"), version=patients.c.version + 1, updated_at=bindparam("b_now")))

# A patient's history: rows appended or updated by key, read by the indexes of consent_store/tables.py.
_cf, _ep, _mv, _dr, _bg = consent_fact.c, episode.c, movement.c, dmp_result.c, break_glass_request.c
FACT_NAMES = ("seq", "item", "value", "code", "visit", "collected_at", "cancelled", "source_msh10",
              "source_sender", "source_mapping", "collected_by")
EPISODE_NAMES = ("visit", "nda", "patient_class", "uf", "admitted_at", "discharged_at", "cancelled", "started_at")
MOVEMENT_NAMES = ("visit", "ordinal", "movement_id", "event", "action", "start", "historic", "nature",
                  "uf_medical", "uf_care", "cancelled")
DMP_NAMES = ("user_id", "transaction", "result", "at")
BREAK_GLASS_NAMES = ("user_id", "reason", "at", "visit")
DATES = frozenset({"collected_at", "admitted_at", "discharged_at", "started_at", "start", "at"})
_EPISODE_DATES = tuple(n for n in EPISODE_NAMES if n in DATES)
_MOVEMENT_DATES = tuple(n for n in MOVEMENT_NAMES if n in DATES)
_DATE_NAMES: dict = {}   # a row's names -> those that are dates (UnitOfWork._rows)
_FACT_COLS = [_cf[n] for n in FACT_NAMES]
_EPISODE_COLS = [_ep[n] for n in EPISODE_NAMES]
I_FACT = Sql(insert(consent_fact), columns=["patient_id", *FACT_NAMES])
I_DMP_RESULT = Sql(insert(dmp_result), columns=["patient_id", *DMP_NAMES])
I_BREAK_GLASS = Sql(insert(break_glass_request), columns=["patient_id", *BREAK_GLASS_NAMES])


def _upsert(table, key, names):
    return {name: Sql(ins(table).on_conflict_do_update(
        index_elements=[table.c[k] for k in key],
        set_={n: getattr(ins(table).excluded, n) for n in names if n not in key}),
        columns=["patient_id", *names])
        for name, ins in (("sqlite", sqlite_insert), ("postgresql", pg_insert))}


U_EPISODE = _upsert(episode, ("patient_id", "visit"), EPISODE_NAMES)
# the patient's longest visit, grown (never shrunk) as a visit is written with a start and a discharge
U_LONGEST_VISIT = Sql(update(patients).where(
    patients.c.id == bindparam("b_pid"),
    or_(patients.c.longest_visit.is_(None), patients.c.longest_visit < bindparam("b_seconds"))).values(
    longest_visit=bindparam("b_seconds")))


def visit_seconds(started_at, discharged_at) -> int | None:
    """How long a visit lasted, in whole seconds rounded up, plus one (the bound of Q_VISITS_AT stays at or
    before the visit's start whatever the rounding of SQLite's date arithmetic); None: not discharged, never
    begun, or discharged before it began (then no instant falls in it)."""
    if started_at is None or discharged_at is None or discharged_at < started_at:
        return None
    return math.ceil((discharged_at - started_at).total_seconds()) + 1


U_MOVEMENT = _upsert(movement, ("patient_id", "visit", "ordinal"), MOVEMENT_NAMES)
# a cancelled admission cancels the consents collected on its visit (the rules' own rule, on the rows)
U_CANCEL_CONSENT = Sql(update(consent_fact).where(
    _cf.patient_id == bindparam("b_pid"), _cf.item == "consult", _cf.visit == bindparam("b_visit"),
    _cf.cancelled == False).values(cancelled=True))   # noqa: E712
# a value resent: the facts of one item collected at one date
Q_FACTS_AT = Sql(select(*_FACT_COLS).where(_cf.patient_id == bindparam("b_pid"), _cf.item == bindparam("b_item"),
                                           _cf.cancelled == False, _cf.collected_at == bindparam("b_at")))  # noqa: E712
ANY_VISIT, NO_VISIT, THE_VISIT = "any", "none", "visit"


def _latest_fact(item: str, cancelled: bool, visit: str, bounded: bool):
    q = select(*_FACT_COLS).where(_cf.patient_id == bindparam("b_pid"), _cf.item == item,
                                  _cf.cancelled == cancelled)
    if visit == NO_VISIT:
        q = q.where(_cf.visit.is_(None))
    elif visit == THE_VISIT:
        q = q.where(_cf.visit == bindparam("b_visit"))
    if bounded:
        q = q.where(_cf.collected_at <= bindparam("b_at"))
    return q.order_by(_cf.collected_at.desc(), _cf.seq.desc()).limit(1).subquery()


def _union(subqueries):
    subqueries = list(subqueries)
    if len(subqueries) == 1:
        return select(*subqueries[0].c)
    return union_all(*(select(*q.c) for q in subqueries))


class _SecondsBefore(ColumnElement):
    """`at` minus a number of seconds, as a date the column compares with: SQLite keeps dates as text
    (strftime's milliseconds compare at or below the stored microseconds), PostgreSQL as timestamptz."""
    inherit_cache = True
    type = DateTime(timezone=True)

    def __init__(self, at, seconds):
        self.at, self.seconds = at, seconds


@compiles(_SecondsBefore, "sqlite")
def _seconds_before_sqlite(e, compiler, **kw):
    return (f"strftime('%Y-%m-%d %H:%M:%f', {compiler.process(e.at, **kw)}, "
            f"'-' || ({compiler.process(e.seconds, **kw)}) || ' seconds')")


@compiles(_SecondsBefore, "postgresql")
def _seconds_before_pg(e, compiler, **kw):
    return f"({compiler.process(e.at, **kw)} - make_interval(secs => ({compiler.process(e.seconds, **kw)})))"


def _visits_begun(which: str):
    """The latest visit begun by `b_at`: of all ("begun"), of those never discharged ("open"), of those
    discharged at or after it ("spanning"). Each a seek and a walk back that stops at its first row."""
    q = select(*_EPISODE_COLS).where(_ep.patient_id == bindparam("b_pid"), _ep.cancelled == False,  # noqa: E712
                                     _ep.started_at <= bindparam("b_at", type_=DateTime(timezone=True)))
    if which == "open":
        q = q.where(_ep.discharged_at.is_(None))
    elif which == "spanning":
        # begun no further back than the patient's longest visit: the walk back along ix_episode_started
        # stops there, or at the first visit discharged at or after the instant, whichever comes first (a
        # bound on discharged_at alone would read every visit discharged after the instant: all of them,
        # for an instant before the history)
        longest = select(patients.c.longest_visit).where(patients.c.id == bindparam("b_pid")).scalar_subquery()
        q = q.where(_ep.started_at >= _SecondsBefore(bindparam("b_at", type_=DateTime(timezone=True)), longest),
                    _ep.discharged_at >= bindparam("b_at"))
    return q.order_by(_ep.started_at.desc()).limit(1).subquery()


# the visits an instant can fall in, enough for rules.current_visit: the latest begun by then, and the latest
# begun by then not ended before it (never discharged, or discharged at or after it)
Q_VISITS_AT = Sql(_union(_visits_begun(k) for k in ("open", "spanning", "begun")))


def _with_movements(episodes):
    """Episode rows (a subquery of EPISODE_NAMES), each with its movements joined, in the order of the visits
    then of the movements: a visit and its movements in one statement (a visit without any: one row, its
    movement columns NULL)."""
    return (select(*[episodes.c[n] for n in EPISODE_NAMES], *[_mv[n].label(f"m_{n}") for n in MOVEMENT_NAMES])
            .select_from(episodes.outerjoin(movement, and_(_mv.patient_id == bindparam("b_pid"),
                                                           _mv.visit == episodes.c.visit)))
            .order_by(episodes.c.visit, _mv.ordinal))


# the visits an instant can fall in (Q_VISITS_AT's, each once) with their movements: what rules.current_visit
# reads, in one statement
Q_VISITS_AROUND = Sql(_with_movements(union(*(select(*q.c) for q in (
    _visits_begun(k) for k in ("open", "spanning", "begun")))).subquery("v")))


def _last_result(transaction: str):
    return (select(*[_dr[n] for n in DMP_NAMES]).where(
        _dr.patient_id == bindparam("b_pid"), _dr.user_id == bindparam("b_user"), _dr.transaction == transaction,
        _dr.at <= bindparam("b_at")).order_by(_dr.at.desc(), _dr.id).limit(1).subquery())


Q_LAST_RESULTS = Sql(_union(_last_result(t) for t in ("TD0.2", "TD0.3")))
_LATEST_SQL: dict = {}   # (picks, bounded) -> Sql, built at first use
_VISITS_SQL: dict = {}   # number of visits -> (episodes, movements)


def _checked(table: str):
    """row -> row, or NotStorable for a text its column cannot hold as received (too long, a NUL byte):
    refused, never cut, or two visits could become one row. Per table, the columns worked out once; the
    test inline, as it runs for every row written."""
    columns = [(c.name, f"{table}.{c.name}", getattr(c.type, "length", None) or 1 << 62)
               for c in metadata.tables[table].columns if isinstance(c.type, String)]

    def check(row: dict) -> dict:
        for name, key, limit in columns:
            v = row.get(name)
            if v.__class__ is str and (len(v) > limit or "\x00" in v):
                storable(key, v)
        return row
    return check


_FACT_ROW, _EPISODE_ROW, _MOVEMENT_ROW, _DMP_ROW, _BREAK_GLASS_ROW = (
    _checked(t) for t in ("consent_fact", "episode", "movement", "dmp_result", "break_glass_request"))


# SQLite gives dates back as text on the driver's cursor: each parsed once, kept as the aware date it becomes
@lru_cache(maxsize=8192)
def _parse_date(text: str) -> datetime:
    v = datetime.fromisoformat(text)
    return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v


def _date(v):
    if v.__class__ is str:
        return _parse_date(v)
    if v is None:
        return None
    return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v
Q_IDENTIFIERS_OF = Sql(select(_id.kind, _id.authority, _id.value, _id.active)
                       .where(_id.patient_id == bindparam("b_pid")))
# set_identifiers: each identifier a patient holds points at it, active, whether or not it was known (an INS
# given back, an IPP of a merged patient); one upsert per dialect, the same statement in both
_IDENTIFIER_KEY = [_id.kind, _id.authority, _id.value]
U_IDENTIFIER_POINT = {
    name: Sql(ins(identifiers).on_conflict_do_update(
        index_elements=_IDENTIFIER_KEY, set_={"patient_id": ins(identifiers).excluded.patient_id, "active": True}),
        columns=["kind", "authority", "value", "patient_id", "active"])
    for name, ins in (("sqlite", sqlite_insert), ("postgresql", pg_insert))}
U_IDENTIFIER_OFF = Sql(update(identifiers).where(_id.kind == bindparam("b_kind"), _id.authority == bindparam(
    "b_authority"), _id.value == bindparam("b_value")).values(active=False))
_q_head = select(audit_head.c.hash).where(audit_head.c.id == 1)
Q_HEAD = Sql(_q_head)
Q_HEAD_FOR_UPDATE = Sql(_q_head.with_for_update())
U_HEAD = Sql(update(audit_head).where(audit_head.c.id == 1).values(hash=bindparam("b_hash")))
I_AUDIT = Sql(insert(audit), columns=["at", "patient_id", "kind", "payload", "prev_hash", "hash", "user_id"])
I_OUTBOX = Sql(insert(outbox), columns=["event_id", "type", "patient_key", "created_at", "envelope"],
               returns=outbox.c.seq)
I_DELIVERY = Sql(insert(delivery), columns=["event_seq", "destination", "patient_key", "status", "attempts",
                                            "next_attempt_at"])
# the professionals' reminders: read by every decision, written when one is due
Q_REMINDED = Sql(select(users.c.last_reminded_at).where(users.c.id == bindparam("b_user")))
U_REMINDED = {
    name: Sql(ins(users).on_conflict_do_update(
        index_elements=[users.c.id], set_={"last_reminded_at": ins(users).excluded.last_reminded_at}),
        columns=["id", "last_reminded_at"])
    for name, ins in (("sqlite", sqlite_insert), ("postgresql", pg_insert))}
# the sequence number protocol (MSH-13), for the senders that use it: read once per transaction, then kept
_ss = sender_sequence.c
Q_SEQUENCE = Sql(select(_ss.last_accepted).where(_ss.sender_application == bindparam("b_app"),
                                                 _ss.sender_facility == bindparam("b_facility")))
U_SEQUENCE = {
    name: Sql(ins(sender_sequence).on_conflict_do_update(
        index_elements=[_ss.sender_application, _ss.sender_facility],
        set_={"last_accepted": ins(sender_sequence).excluded.last_accepted,
              "updated_at": ins(sender_sequence).excluded.updated_at}),
        columns=["sender_application", "sender_facility", "last_accepted", "updated_at"])
    for name, ins in (("sqlite", sqlite_insert), ("postgresql", pg_insert))}
# SQLite: journal and outbox rows take their keys from the transaction (max + 1, as SQLite itself would: it
# holds the write lock since BEGIN IMMEDIATE), so that they too are written at flush, one executemany a batch
I_JOURNAL_KEYED = Sql(insert(journal), columns=["id"] + I_JOURNAL.columns)
I_OUTBOX_KEYED = Sql(insert(outbox), columns=["seq"] + I_OUTBOX.columns)
Q_LAST_KEY = {"journal": Sql(select(func.max(journal.c.id))), "outbox": Sql(select(func.max(outbox.c.seq)))}
# written after the rows they point at
_LATER_AFTER = ("applied_message", "delivery")
# event types the pipeline writes for one destination kind only: a "*" route does not take them
INTERNAL_TYPES = frozenset({"adt.forward"})


def _aware(dt):
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


# orjson writes the same text as json.dumps(separators=(",", ":"), ensure_ascii=False, default=...), five to ten
# times faster; dates and dataclasses go through `default`, as with json. What orjson refuses (a lone
# surrogate, an integer over 64 bits) is written by json itself.
_ORJSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _dumps(value, default, sort_keys: bool = False) -> str:
    try:
        return orjson.dumps(value, default=default,
                            option=_ORJSON | orjson.OPT_SORT_KEYS if sort_keys else _ORJSON).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), default=default, ensure_ascii=False)


def _json(value) -> str:
    """An audit payload: hashed into the chain, so its keys are sorted."""
    return _dumps(value, str, sort_keys=True)


def _state_json(state: dict) -> str:
    """A state document: not hashed nor compared as text, so its keys need no sorting."""
    return _dumps(state, str)


def _iso_default(o):
    return o.isoformat() if isinstance(o, datetime) else str(o)


def _envelope_json(env: dict) -> str:
    """The envelope as delivered: ISO 8601 times, so receivers parse them as such."""
    return _dumps(env, _iso_default)


def chain_hash(prev: str, at: datetime, patient_id, kind: str, payload: str) -> str:
    body = "\x1f".join([prev, _aware(at).astimezone(timezone.utc).isoformat(), str(patient_id or ""), kind, payload])
    return hashlib.sha256(body.encode()).hexdigest()


def make_engine(url: str, deferred_sync: bool = False) -> Engine:
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(eng, "connect")
        def _sqlite_pragmas(dbapi_conn, _):
            # WAL lets readers run beside the writer; FULL keeps an ACKed message across a power cut.
            # Deferred (the apply process, the group commit): a commit does not wait for the disk; their
            # consent_store.durability makes the WAL durable before any answer leaves, and checkpoints it,
            # off the writer's thread.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL" if deferred_sync else "PRAGMA synchronous=FULL")
            if deferred_sync:
                # its checkpoints run on a WalCheckpoint's thread, not in the commits that answer
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            # pysqlite's own BEGIN comes late (before the first write, after the reads), so two writers
            # (the group commit, the dispatcher, a CLI) could fail at once with "database is locked" instead
            # of waiting; and its SAVEPOINTs are unreliable. SQLAlchemy's documented fix: begin ourselves.
            dbapi_conn.isolation_level = None

        @event.listens_for(eng, "begin")
        def _sqlite_begin(conn):
            # IMMEDIATE takes the write lock first: writers queue on the busy timeout, never deadlock; a
            # snapshot (Store.snapshot) only reads, so it takes no lock and holds no writer back
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("snapshot") else "BEGIN IMMEDIATE")

        return eng
    # pre_ping: a connection that died with the server is replaced at the next checkout, so the service
    # resumes by itself once PostgreSQL is back; connect_timeout bounds each attempt while it is away.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                         connect_args={"connect_timeout": 10})


def configured_sqlite_file(url: str) -> str | None:
    """The file of a SQLite store, or None (another backend, or in memory)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return u.database


class Store:
    def __init__(self, url: str, deferred_sync: bool = False):
        """`deferred_sync` (SQLite files only): commits return before the disk has them; the caller makes
        them durable with a WalSync before it answers anyone. Elsewhere each commit is durable."""
        self.url = url
        self.path = configured_sqlite_file(url)
        self.deferred_sync = deferred_sync and self.path is not None
        self.engine = make_engine(url, self.deferred_sync)
        self.is_postgres = self.engine.dialect.name == "postgresql"

    def upgrade(self) -> None:
        """Apply the Alembic migrations; idempotent."""
        from consent_store.migrate import upgrade
        upgrade(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(text("SELECT 1"))

    @contextmanager
    def transaction(self):
        with self.engine.begin() as conn:
            uow = UnitOfWork(conn, self.is_postgres)
            yield uow
            uow.flush()

    @contextmanager
    def snapshot(self):
        """A unit of work that only reads, on one consistent snapshot, taking no write lock: for a long read
        beside the writers, which go on meanwhile (SQLite in WAL: a deferred BEGIN; PostgreSQL: REPEATABLE
        READ). Whatever it wrote would be rolled back."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**({"isolation_level": "REPEATABLE READ"} if self.is_postgres
                                              else {"snapshot": True}))
            with conn.begin() as t:
                yield UnitOfWork(conn, self.is_postgres)
                t.rollback()

    def verify_audit(self) -> dict:
        """The audit chain walked from its start on one snapshot (the writers go on): what a verification
        records (`UnitOfWork.record_audit_verification`) - entries checked, the snapshot's last entry (`through`,
        a seq), the first broken entry's seq and why (None: intact), when it started and how long it took."""
        started = datetime.now(timezone.utc)
        with self.snapshot() as uow:
            n, broken, why = uow.verify_audit()
            last = uow.conn.execute(select(func.max(audit.c.seq))).scalar()
        seconds = (datetime.now(timezone.utc) - started).total_seconds()
        return {"entries": n, "through": last, "ok": why is None, "broken_at": broken, "why": why,
                "started_at": started.isoformat(), "seconds": round(seconds, 3)}

    def restart_wal(self, wait_ms: int = 50) -> str | None:
        """Let a SQLite store's WAL start over (a RESTART checkpoint: the frames not yet in the database are
        copied, then the next write begins the file again). Waits at most `wait_ms` for a reader of an older
        snapshot; past that it copies what it can and the WAL starts over another time. Between two
        transactions of the writer that asks (consent_store.durability.WalCheckpoint). Never raises: the
        WAL only grows until the next try, so a failure (a full disk) is returned, as one line, to be logged."""
        try:
            raw = self.engine.raw_connection()      # no BEGIN: a checkpoint cannot run inside a transaction
            try:
                cur = raw.driver_connection
                cur.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
                try:
                    cur.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                finally:
                    cur.execute("PRAGMA busy_timeout=30000")
            finally:
                raw.close()
        except Exception as e:  # noqa: BLE001 — see above
            return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        return None

    def dispose(self) -> None:
        self.engine.dispose()


def advisory_key(key: str) -> int:
    """A patient key as a signed 64-bit PostgreSQL advisory lock id."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


class UnitOfWork:
    """One transaction on the store, opened by `Store.transaction()`: everything a message or an API call
    reads and writes (dedup of MSH-10, the journal, patients and their identifiers, the audit chain, the
    outbox and its deliveries, the senders' sequence numbers) goes through its methods, and commits or rolls
    back as one. It takes and returns plain values (dicts, ids, datetimes); it knows no HL7 and no domain
    types. It owns its connection and nothing else; outside consent_store, nothing reaches the connection."""
    def __init__(self, conn: Connection, is_postgres: bool):
        self._conn = conn
        self.is_postgres = is_postgres
        # patients with history rows kept for later: written before that patient's rows are read
        self._pending: set[int] = set()
        # the audit chain's head: read once per transaction, written once before the commit (flush)
        self._head: str | None = None
        self._head_stored: str | None = None
        # patients created in this transaction that hold no identifier yet
        self._bare: set[int] = set()
        self.sql = DriverCursor(conn)
        self._run, self._run_many, self._insert = self.sql.run, self.sql.run_many, self.sql.insert
        # Rows that nothing reads back within the transaction (audit entries, projection rows) are written
        # at flush, one executemany per statement for the whole batch: each driver call hands the GIL to
        # the reactor thread and waits to get it back. Per table, in the order they were asked for.
        self._later: dict[str, list] = {}
        self._last_key: dict[str, int] = {}      # SQLite: the last key given per table (journal, outbox)
        self._applied_later: dict[tuple, str] = {}  # duplicate keys (and hashes) among the rows kept for later
        self._sequences: dict[tuple, int | None] = {}   # sender -> last accepted MSH-13, as this transaction has it
        # SQLite: patient id -> its state text, read with the identifier that led to it (find_patient), taken
        # by the next patient_header of that patient (one statement fewer a message); any write drops them
        self._headers: dict[int, str] = {}

    @contextmanager
    def savepoint(self):
        head = (self._head, self._head_stored)
        try:
            with self.conn.begin_nested():
                yield self
                self.write_later_rows()   # inside: a row refused fails this operation alone
        except BaseException:
            # what was loaded or written inside is rolled back: forget it
            self._pending.clear()
            self._bare.clear()
            self._later.clear()
            self._applied_later.clear()
            self._sequences.clear()
            self._headers.clear()
            self._head, self._head_stored = head
            raise

    @property
    def conn(self) -> Connection:
        """The transaction's connection, for SQL of one's own: the rows kept for later are written first, so
        that it reads them."""
        if self._later:
            self.write_later_rows()
        return self._conn

    def ping(self) -> None:
        """Raises when the store does not answer (`Store.ping`, inside this transaction: `/healthz`)."""
        self._conn.exec_driver_sql("SELECT 1").scalar()

    def _write_later(self, q: Sql, rows: list[dict]) -> None:
        ops = self._later.setdefault(q.stmt.table.name, [])
        if ops and ops[-1][0] is q:
            ops[-1][1].extend(rows)
        else:
            ops.append((q, list(rows)))

    def write_later_rows(self) -> None:
        later, self._later = self._later, {}
        self._pending.clear()
        self._applied_later.clear()   # from now on in the table, where already_applied reads them
        for name in _LATER_AFTER:     # the rows pointed at first (foreign keys)
            if name in later:
                later[name] = later.pop(name)
        for ops in later.values():
            for q, rows in ops:
                self._run_many(q, rows)

    def flush(self) -> None:
        """Before the commit: the rows kept for later, then the chain's head row takes the hash of the last
        entry written."""
        self.write_later_rows()
        if self._head is not None and self._head != self._head_stored:
            self._run(U_HEAD, {"b_hash": self._head})
            self._head_stored = self._head

    # --- ordering between instances ---
    def lock_keys(self, keys) -> None:
        """Serialise work on the same patients across instances (PostgreSQL).

        Locks are always taken in one order: the patients' advisory locks (sorted), then the audit chain's
        head row, then whatever rows the operations touch. The head is taken here rather than at the first
        audit entry, so that no transaction holds a patient row while waiting for the head that another,
        waiting for that row, holds: two instances cannot deadlock, whatever identifiers (IPP, INS, a merged
        IPP) lead their operations to the same patient.
        """
        if not self.is_postgres:
            return   # SQLite: one writer, the group commit's thread
        ids = sorted({advisory_key(k) for k in keys})
        if not ids:
            return
        self.conn.execute(text("SELECT count(pg_advisory_xact_lock(k)) FROM "
                               "(SELECT unnest(CAST(:ids AS bigint[])) AS k ORDER BY 1) AS s"), {"ids": ids})
        self.conn.execute(select(audit_head.c.id).where(audit_head.c.id == 1).with_for_update())

    # --- journal and duplicates ---
    def _next_key(self, table: str) -> int:
        last = self._last_key.get(table)
        if last is None:
            last = self._run(Q_LAST_KEY[table]).fetchone()[0] or 0
        self._last_key[table] = last + 1
        return last + 1

    def already_applied(self, app: str, facility: str, control_id: str) -> bool:
        return self.applied_hash(app, facility, control_id) is not None

    def applied_hash(self, app: str, facility: str, control_id: str) -> str | None:
        """None when no message was applied under this MSH-3/4/10; else the content hash it was applied with
        ("" when unknown: applied before the hash was kept)."""
        key = (app or "", facility or "", control_id)
        if key in self._applied_later:
            return self._applied_later[key]
        if any(unstorable(f"applied_message.{c}", v) for c, v in zip(
                ("sender_application", "sender_facility", "control_id"), key)):
            return None   # a key that could never be stored was never applied
        row = self._run(Q_APPLIED, {"b_app": key[0], "b_facility": key[1], "b_control_id": key[2]}).fetchone()
        return None if row is None else (row[0] or "")

    def journal(self, *, received_at, app, facility, control_id, event, ack_code, error, raw: bytes,
                patient_id=None, applied: bool = False, content_hash: str | None = None, ack: str | None = None,
                ipp: str | None = None, visit: str | None = None) -> int:
        """Journal one message, whatever it holds: the raw bytes keep it whole; a header value that its
        column cannot hold as received (too long, a NUL byte) is left NULL there rather than cut. An applied
        message's key must be storable (NotStorable): it detects its duplicates."""
        if applied and control_id:
            for column, value in (("sender_application", app or ""), ("sender_facility", facility or ""),
                                  ("control_id", control_id)):
                storable(f"applied_message.{column}", value)
        header = {column: None if unstorable(f"journal.{column}", value) else value
                  for column, value in (("sender_application", app), ("sender_facility", facility),
                                        ("control_id", control_id), ("event", event), ("patient_ipp", ipp),
                                        ("visit", visit))}
        row = {"received_at": received_at, **header, "ack_code": ack_code,
               "error": error.replace("\x00", "\\x00") if error else error, "raw": raw, "patient_id": patient_id,
               "ack": ack.replace("\x00", "\\x00") if ack else ack}
        if self.is_postgres:
            jid = self._insert(I_JOURNAL, row)
        else:
            jid = row["id"] = self._next_key("journal")
            self._write_later(I_JOURNAL_KEYED, [row])
        if applied and control_id:
            applied_row = {"sender_application": app or "", "sender_facility": facility or "",
                           "control_id": control_id, "journal_id": jid, "content_hash": content_hash}
            if self.is_postgres:
                self._run(I_APPLIED, applied_row)
            else:
                self._write_later(I_APPLIED, [applied_row])
                self._applied_later[(app or "", facility or "", control_id)] = content_hash or ""
        return jid

    def journal_entries(self, *, since=None, until=None, app=None, facility=None, event=None, ack_code=None,
                        control_id=None, ipp=None, visit=None, ids=None, limit=None) -> list[dict]:
        """Journal rows, oldest first, each filter optional: [since, until) on the time received, the sender
        (MSH-3, MSH-4), MSH-9-2, the ACK code, MSH-10, the IPP and the visit the mapping read, or row ids."""
        j = journal.c
        q = select(journal).order_by(j.received_at, j.id)
        for column, value in ((j.sender_application, app), (j.sender_facility, facility), (j.event, event),
                              (j.ack_code, ack_code), (j.control_id, control_id), (j.patient_ipp, ipp),
                              (j.visit, visit)):
            if value is not None:
                q = q.where(column == value)
        if since is not None:
            q = q.where(j.received_at >= since)
        if until is not None:
            q = q.where(j.received_at < until)
        if ids is not None:
            q = q.where(j.id.in_(list(ids)))
        if limit:
            q = q.limit(limit)
        return [dict(r._mapping) for r in self.conn.execute(q)]

    def events_of_message(self, control_id: str, sender: str) -> list[dict]:
        """The outbox events a message caused (their envelope's source names its MSH-10 and sender)."""
        q = select(outbox).order_by(outbox.c.seq)
        if json.dumps(control_id, ensure_ascii=False)[1:-1] == control_id:   # as the envelope's JSON holds it
            like = "%" + control_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            q = q.where(outbox.c.envelope.like(like, escape="\\"))
        rows = self.conn.execute(q)
        out = []
        for r in rows:
            env = json.loads(r.envelope)
            if (env.get("source") or {}).get("msh10") == control_id and env["source"].get("sender") == sender:
                out.append({"seq": r.seq, "event_id": r.event_id, "type": r.type, "envelope": env})
        return out

    def prune_journal(self, before: datetime, limit: int | None = None) -> int:
        """Journal retention: raw messages received before `before` go, and so do the events of the outbox
        written before it whose every delivery is done; at most `limit` of each (oldest first), so that a long
        backlog is pruned in short transactions. The audit trail never goes, nor do the applied_message
        rows (a duplicate is still known once its raw bytes are gone), nor pending or dead deliveries."""
        from sqlalchemy import delete
        # the newest row of each table stays, so that keys taken as max + 1 are never handed out again
        q = (select(journal.c.id).where(journal.c.received_at < before,
                                        journal.c.id < select(func.max(journal.c.id)).scalar_subquery())
             .order_by(journal.c.id))
        if limit:
            q = q.limit(limit)
        n = self.conn.execute(delete(journal).where(journal.c.id.in_(q.scalar_subquery()))).rowcount
        open_ = select(delivery.c.event_seq).where(delivery.c.status != "done")
        done = (select(outbox.c.seq).where(outbox.c.created_at < before, outbox.c.seq.not_in(open_),
                                           outbox.c.seq < select(func.max(outbox.c.seq)).scalar_subquery())
                .order_by(outbox.c.seq))
        if limit:
            done = done.limit(limit)
        seqs = [r[0] for r in self.conn.execute(done)]
        if seqs:
            self.conn.execute(delete(delivery).where(delivery.c.event_seq.in_(seqs)))
            self.conn.execute(delete(outbox).where(outbox.c.seq.in_(seqs)))
        return max(n, len(seqs))

    # --- the sequence number protocol (MSH-13) ---
    def last_sequence(self, app: str, facility: str) -> int | None:
        """The sender's last accepted sequence number; None when the next one accepted sets it (the link never
        started, or was resynchronised with -1). Read once per transaction, then as this transaction left it,
        so a second message of the sender in the same batch sees the first. On PostgreSQL the sender's key is
        locked with the patients' (MessageWork.keys), so two instances take its messages one after the other."""
        key = (app or "", facility or "")
        if key in self._sequences:
            return self._sequences[key]
        row = self._run(Q_SEQUENCE, {"b_app": key[0], "b_facility": key[1]}).fetchone()
        value = self._sequences[key] = row[0] if row else None
        return value

    def set_sequence(self, app: str, facility: str, last_accepted: int | None, now: datetime) -> None:
        """Store the sender's last accepted sequence number (None: the next one accepted sets it), in this
        transaction: it commits with the effects of the message it counts, or not at all."""
        key = (storable("sender_sequence.sender_application", app or ""),
               storable("sender_sequence.sender_facility", facility or ""))
        self._run(U_SEQUENCE[self._conn.dialect.name], {"sender_application": key[0], "sender_facility": key[1],
                                                         "last_accepted": last_accepted, "updated_at": now})
        self._sequences[key] = last_accepted

    # --- patients ---
    def find_patient(self, kind: str, authority: str | None, value: str) -> int | None:
        """The patient an identifier leads to, following merges to the survivor. A deactivated identifier
        (an INS deleted by A47 with "") leads nowhere; an old IPP stays active and still leads here."""
        row = self._run(Q_FIND, {"b_kind": kind, "b_authority": authority or "", "b_value": value}).fetchone()
        if row is None:
            return None
        pid, nxt, state = row
        if nxt is None and not self.is_postgres:   # PostgreSQL: patient_header locks the row as it reads it
            self._headers[pid] = state
        # follow merges to the survivor (identifiers are moved at the merge, so this is rare)
        for _ in range(32):
            if nxt is None:
                return pid
            pid = nxt
            nxt = self._run(Q_MERGED_INTO, {"b_pid": pid}).fetchone()[0]
        return pid

    def create_patient(self, header: dict, now: datetime) -> int:
        pid = self._insert(I_PATIENT, {"state": _state_json(header), "version": 1, "updated_at": now})
        self._bare.add(pid)
        return pid

    def patient_header(self, patient_id: int) -> dict:
        """What the patient row keeps (identifiers held, counters): bounded, whatever the history. On
        PostgreSQL the row is locked, as the patient's advisory lock already orders its writers."""
        state = self._headers.pop(patient_id, None)
        if state is None:
            row = self._run(Q_STATE_FOR_UPDATE if self.is_postgres else Q_STATE, {"b_pid": patient_id}).fetchone()
            state = row[0] if row else None
        return orjson.loads(state) if state else {}

    def save_header(self, patient_id: int, header: dict, now: datetime) -> None:
        self._headers.clear()
        self._run(U_STATE, {"b_pid": patient_id, "b_state": _state_json(header), "b_now": now})

    # a patient's history, read by indexed queries: each returns a few rows whatever the history's length
    def _fresh(self, patient_id: int) -> None:
        """Rows of this patient kept for later are written before its rows are read."""
        if patient_id in self._pending:
            self.write_later_rows()

    def _rows(self, cur, names) -> list[dict]:
        dates = _DATE_NAMES.get(names)
        if dates is None:
            dates = _DATE_NAMES[names] = tuple(DATES.intersection(names))
        out = []
        for row in cur.fetchall():
            d = dict(zip(names, row))
            for n in dates:
                d[n] = _date(d[n])
            out.append(d)
        return out

    def _visits_with_movements(self, cur) -> list[tuple[dict, list[dict]]]:
        """The rows of a _with_movements statement: each visit once, with its movements in their order."""
        out, moves, last = [], None, None
        n = len(EPISODE_NAMES)
        for row in cur.fetchall():
            if row[0] != last:
                e = dict(zip(EPISODE_NAMES, row[:n]))
                for d in _EPISODE_DATES:
                    e[d] = _date(e[d])
                last, moves = row[0], []
                out.append((e, moves))
            if row[n] is not None:
                m = dict(zip(MOVEMENT_NAMES, row[n:]))
                for d in _MOVEMENT_DATES:
                    m[d] = _date(m[d])
                moves.append(m)
        return out

    def facts_collected_at(self, patient_id: int, item: str, at: datetime) -> list[dict]:
        """The facts (not cancelled) of one item collected at exactly `at`: where a resent value is."""
        self._fresh(patient_id)
        return self._rows(self._run(Q_FACTS_AT, {"b_pid": patient_id, "b_item": item, "b_at": at}), FACT_NAMES)

    def latest_facts(self, patient_id: int, picks: tuple, at: datetime | None, visit: str | None) -> list[dict]:
        """For each pick (item, cancelled, ANY_VISIT / NO_VISIT / THE_VISIT), the fact collected last (by date,
        then arrival) by `at` (None: ever): one statement, an index seek per pick."""
        self._fresh(patient_id)
        key = (picks, at is not None)
        q = _LATEST_SQL.get(key)
        if q is None:
            q = _LATEST_SQL[key] = Sql(_union(_latest_fact(i, c, v, at is not None) for i, c, v in picks))
        return self._rows(self._run(q, {"b_pid": patient_id, "b_at": at, "b_visit": visit}),
                          FACT_NAMES)

    def visits_at(self, patient_id: int, at: datetime) -> list[str]:
        """The visits `at` can fall in: the latest begun by then without a discharge, those discharged after
        it; the latest begun by then."""
        self._fresh(patient_id)
        return [r[0] for r in self._run(Q_VISITS_AT, {"b_pid": patient_id, "b_at": at}).fetchall()]

    def visits_around(self, patient_id: int, at: datetime) -> list[tuple[dict, list[dict]]]:
        """The visits `at` can fall in (those of visits_at), each with its movements in their order: one
        statement."""
        self._fresh(patient_id)
        return self._visits_with_movements(self._run(Q_VISITS_AROUND, {"b_pid": patient_id, "b_at": at}))

    def visits(self, patient_id: int, numbers) -> list[tuple[dict, list[dict]]]:
        """These visits of the patient, each with its movements in their order: one statement."""
        numbers = sorted({n for n in numbers if n})
        if not numbers:
            return []
        self._fresh(patient_id)
        q = _VISITS_SQL.get(len(numbers))
        if q is None:
            binds = [bindparam(f"b_v{i}") for i in range(len(numbers))]
            q = _VISITS_SQL[len(numbers)] = Sql(_with_movements(
                select(*_EPISODE_COLS).where(_ep.patient_id == bindparam("b_pid"), _ep.visit.in_(binds)).subquery("e")))
        values = {"b_pid": patient_id, **{f"b_v{i}": n for i, n in enumerate(numbers)}}
        return self._visits_with_movements(self._run(q, values))

    def last_dmp_results(self, patient_id: int, user: str, at: datetime) -> list[dict]:
        """The user's last TD0.2 and last TD0.3 results by `at`."""
        self._fresh(patient_id)
        return self._rows(self._run(Q_LAST_RESULTS, {"b_pid": patient_id, "b_user": user, "b_at": at}), DMP_NAMES)

    def patient_history(self, patient_id: int) -> dict:
        """Every row of the patient's history (GET /v1/patients: the history is the answer)."""
        conn = self.conn

        def rows(table, names, *order):
            q = select(*[table.c[n] for n in names]).where(table.c.patient_id == patient_id).order_by(*order)
            return [{n: (_date(v) if n in DATES else v) for n, v in zip(names, r)} for r in conn.execute(q)]
        return {"facts": rows(consent_fact, FACT_NAMES, _cf.seq, _cf.item),
                "episodes": rows(episode, EPISODE_NAMES, _ep.started_at, _ep.visit),
                "movements": rows(movement, MOVEMENT_NAMES, _mv.visit, _mv.ordinal),
                "dmp_results": rows(dmp_result, DMP_NAMES, _dr.id),
                "break_glass": rows(break_glass_request, BREAK_GLASS_NAMES, _bg.id)}

    # a patient's history, written: only the rows a message changes, at flush
    def _later_rows(self, patient_id: int, q: Sql, rows: list[dict]) -> None:
        self._pending.add(patient_id)
        self._write_later(q, [{"patient_id": patient_id, **r} for r in rows])

    def add_facts(self, patient_id: int, rows: list[dict]) -> None:
        self._later_rows(patient_id, I_FACT, [_FACT_ROW(r) for r in rows])

    def put_visit(self, patient_id: int, row: dict, movements: list[dict]) -> None:
        """The visit's row, and those of its movements that changed (by ordinal)."""
        self._later_rows(patient_id, U_EPISODE[self._conn.dialect.name], [_EPISODE_ROW(row)])
        seconds = visit_seconds(row.get("started_at"), row.get("discharged_at"))
        if seconds is not None:
            self._write_later(U_LONGEST_VISIT, [{"b_pid": patient_id, "b_seconds": seconds}])
        if movements:
            self._later_rows(patient_id, U_MOVEMENT[self._conn.dialect.name], [_MOVEMENT_ROW(m) for m in movements])

    def cancel_consents_of_visit(self, patient_id: int, visit: str) -> None:
        self._pending.add(patient_id)
        self._write_later(U_CANCEL_CONSENT, [{"b_pid": patient_id, "b_visit": visit}])

    def add_dmp_result(self, patient_id: int, row: dict) -> None:
        self._later_rows(patient_id, I_DMP_RESULT, [_DMP_ROW(row)])

    def add_break_glass(self, patient_id: int, row: dict) -> None:
        self._later_rows(patient_id, I_BREAK_GLASS, [_BREAK_GLASS_ROW(row)])

    def set_identifiers(self, patient_id: int, ids) -> None:
        """Point each (kind, authority, value) at this patient; ids no longer held are deactivated."""
        want = {(storable("identifier.kind", k), storable("identifier.authority", a or ""),
                 storable("identifier.value", v)) for k, a, v in ids}
        # a patient created in this transaction holds none yet: nothing to read, nothing to deactivate
        have = () if patient_id in self._bare else [
            (k, a, v) for k, a, v, active in self._run(Q_IDENTIFIERS_OF, {"b_pid": patient_id}).fetchall()
            if active]
        if want:
            self._run_many(U_IDENTIFIER_POINT[self._conn.dialect.name], [
                {"kind": k, "authority": a, "value": v, "patient_id": patient_id, "active": True}
                for k, a, v in sorted(want)])
        self._bare.discard(patient_id)
        for key in have:
            if key not in want and key[0] != "PI":
                # an INS deleted (A47 with "") no longer leads here; an old IPP still does, for A47/A40
                self._run(U_IDENTIFIER_OFF, {"b_kind": key[0], "b_authority": key[1], "b_value": key[2]})

    def active_identifier(self, kind: str, authority: str | None, value: str) -> bool:
        return bool(self.conn.execute(select(identifiers.c.active).where(
            identifiers.c.kind == kind, identifiers.c.authority == (authority or ""),
            identifiers.c.value == value)).scalar())

    def merge_patient(self, absorbed_id: int, survivor_id: int, seq_offset: int, now: datetime) -> None:
        """A40: the absorbed patient's identifiers lead to the survivor, and its history moves there: its facts
        numbered after the survivor's (`seq_offset`), its visits but those the survivor knows by the same
        number, its DMP results and break-glass requests. Its audit entries stay as they were. This costs what
        it moves; merges are rare."""
        self._headers.clear()
        conn = self.conn
        conn.execute(update(patients).where(patients.c.id == absorbed_id).values(
            merged_into=survivor_id, updated_at=now))
        conn.execute(update(identifiers).where(identifiers.c.patient_id == absorbed_id).values(
            patient_id=survivor_id))
        conn.execute(update(consent_fact).where(_cf.patient_id == absorbed_id).values(
            patient_id=survivor_id, seq=_cf.seq + seq_offset))
        known = select(_ep.visit).where(_ep.patient_id == survivor_id).scalar_subquery()
        conn.execute(movement.delete().where(_mv.patient_id == absorbed_id, _mv.visit.in_(known)))
        conn.execute(episode.delete().where(_ep.patient_id == absorbed_id, _ep.visit.in_(known)))
        for table in (movement, episode, dmp_result, break_glass_request):
            conn.execute(update(table).where(table.c.patient_id == absorbed_id).values(patient_id=survivor_id))
        # the visits brought may have lasted longer than the survivor's (Q_VISITS_AT looks back that far)
        seconds = conn.execute(select(patients.c.longest_visit).where(patients.c.id == absorbed_id)).scalar()
        if seconds is not None:
            conn.execute(U_LONGEST_VISIT.stmt, {"b_pid": survivor_id, "b_seconds": seconds})
        # the consents brought to a visit the survivor had cancelled are cancelled with it
        cancelled = select(_ep.visit).where(_ep.patient_id == survivor_id, _ep.cancelled == True)  # noqa: E712
        conn.execute(update(consent_fact).where(
            _cf.patient_id == survivor_id, _cf.item == "consult", _cf.cancelled == False,  # noqa: E712
            _cf.visit.in_(cancelled.scalar_subquery())).values(cancelled=True))
        self._bare.discard(survivor_id)   # it holds the absorbed patient's identifiers now

    def patient_ids_merged_into(self, survivor_id: int) -> list[int]:
        out, todo = [], [survivor_id]
        while todo:
            pid = todo.pop()
            kids = [r[0] for r in self.conn.execute(select(patients.c.id).where(patients.c.merged_into == pid))]
            out += kids
            todo += kids
        return out

    def patient_identifiers(self, patient_id: int) -> list[dict]:
        return [dict(kind=r.kind, authority=r.authority, value=r.value, active=r.active)
                for r in self.conn.execute(select(identifiers).where(identifiers.c.patient_id == patient_id))]

    # --- audit chain ---
    def audit(self, *, at: datetime, patient_id, kind: str, payload: dict, user: str | None = None) -> str:
        """Append one entry to the chain. The head row is read (and locked, on PostgreSQL) at the first entry
        of the transaction and written once, before the commit (flush)."""
        body = _json(payload)
        prev = self._head
        if prev is None:
            row = self._run(Q_HEAD_FOR_UPDATE if self.is_postgres else Q_HEAD).fetchone()
            prev = row[0] if row else None
            if prev is None:
                # a store older than migration 0003, which seeds the head
                prev = GENESIS
                self.conn.execute(insert(audit_head).values(id=1, hash=GENESIS))
            self._head_stored = prev
        h = chain_hash(prev, at, patient_id, kind, body)
        self._write_later(I_AUDIT, [{"at": at, "patient_id": patient_id, "kind": kind, "payload": body,
                                     "prev_hash": prev, "hash": h, "user_id": user}])
        self._head = h
        return h

    def audit_entries(self, patient_ids=None, *, user: str | None = None, since: datetime | None = None,
                      until: datetime | None = None, after: int | None = None, limit: int | None = None,
                      audit_id: str | None = None) -> list[dict]:
        """Audit entries oldest first, each filter optional: the patients', a user's, from `since` (included)
        to `until` (excluded), past the entry `after` (a seq: the paging cursor), at most `limit`; or the
        one entry whose hash is `audit_id`."""
        a = audit.c
        q = select(audit).order_by(a.seq)
        if patient_ids is not None:
            q = q.where(a.patient_id.in_(list(patient_ids)))
        if user is not None:
            q = q.where(a.user_id == user)
        if since is not None:
            q = q.where(a.at >= since)
        if until is not None:
            q = q.where(a.at < until)
        if after is not None:
            q = q.where(a.seq > after)
        if audit_id is not None:
            q = q.where(a.hash == audit_id)
        if limit is not None:
            q = q.limit(limit)
        return [dict(seq=r.seq, at=_aware(r.at), kind=r.kind, user=r.user_id, payload=json.loads(r.payload),
                     hash=r.hash, audit_id=r.hash) for r in self.conn.execute(q)]

    def verify_audit(self) -> tuple[int, int | None, str | None]:
        """Walk the chain: (entries checked, seq of the first broken link or None, why)."""
        self.flush()
        prev, n = GENESIS, 0
        for r in self.conn.execute(select(audit).order_by(audit.c.seq)).yield_per(1000):
            n += 1
            if r.prev_hash != prev:
                return n, r.seq, "prev_hash does not match the previous entry's hash"
            if chain_hash(r.prev_hash, r.at, r.patient_id, r.kind, r.payload) != r.hash:
                return n, r.seq, "hash does not match the entry's content"
            prev = r.hash
        head = self.conn.execute(select(audit_head.c.hash)).scalar()
        if head is not None and head != prev:
            return n, None, "the chain's head does not match its last entry (entries removed at the end)"
        return n, None, None

    def record_audit_verification(self, result: dict, at: datetime, by: str | None, via: str, **who) -> str:
        """A verification of the chain (`Store.verify_audit`'s result), as an entry of the chain itself: who ran
        it, how (`via`: cli, console), and what it found. Appended after the head like any entry, so a chain
        broken at its end shows the break at this entry next time."""
        return self.audit(at=at, patient_id=None, kind=AUDIT_VERIFICATION,
                          payload={**result, "by": by, "via": via, **who})

    def last_audit_verification(self) -> dict | None:
        """The latest verification recorded (ix_audit_kind: one index probe), or None."""
        r = self.conn.execute(Q_LAST_VERIFICATION).first()
        return None if r is None else {"seq": r.seq, "at": _aware(r.at), **json.loads(r.payload)}

    # --- outbox ---
    def enqueue(self, envelopes: list[dict], routes: dict, now: datetime) -> None:
        """Write events and, for each destination that takes its type, a pending delivery.

        "*" takes every public type; internal types (`adt.forward`) go only where they are named.
        """
        deliveries = []
        for env in envelopes:
            storable("outbox.patient_key", env.get("patient_key"))
            row = {"event_id": env["id"], "type": env["type"], "patient_key": env.get("patient_key"),
                   "created_at": now, "envelope": _envelope_json(env)}
            if self.is_postgres:
                seq = self._insert(I_OUTBOX, row)
            else:
                seq = row["seq"] = self._next_key("outbox")
                self._write_later(I_OUTBOX_KEYED, [row])
            for dest, types in routes.items():
                if env["type"] in types or ("*" in types and env["type"] not in INTERNAL_TYPES):
                    deliveries.append({"event_seq": seq, "destination": dest, "patient_key": env.get("patient_key"),
                                       "status": "pending", "attempts": 0, "next_attempt_at": now})
        if deliveries:
            if self.is_postgres:
                self._run_many(I_DELIVERY, deliveries)
            else:
                self._write_later(I_DELIVERY, deliveries)

    def outbox_depth(self) -> int:
        return self.conn.execute(select(func.count()).select_from(delivery).where(
            delivery.c.status == "pending")).scalar()

    def outbox_summary(self) -> dict:
        """Per destination: {"pending": n, "dead": n, "oldest_pending_at": datetime | None}, from the
        pending and dead rows only (ix_delivery_pending), never the delivered ones."""
        d = delivery.c
        out: dict[str, dict] = {}
        for dest, status, n, first in self.conn.execute(
                select(d.destination, d.status, func.count(), func.min(d.event_seq))
                .where(d.status.in_(("pending", "dead"))).group_by(d.destination, d.status)):
            row = out.setdefault(dest, {"pending": 0, "dead": 0, "oldest_pending_at": None})
            row[status] = n
            if status == "pending":
                # the first pending seq is the oldest event waiting: its outbox row by primary key
                row["oldest_pending_at"] = _aware(self.conn.execute(
                    select(outbox.c.created_at).where(outbox.c.seq == first)).scalar())
        return out

    def journal_rows(self) -> int:
        """The journal's rows from its first and last ids (two primary-key look-ups, not a count)."""
        first, last = self.conn.execute(select(func.min(journal.c.id), func.max(journal.c.id))).one()
        return 0 if first is None else last - first + 1

    def outbox_events(self, patient_key: str | None = None, limit: int = 1000) -> list[dict]:
        q = select(outbox).order_by(outbox.c.seq).limit(limit)
        if patient_key:
            q = q.where(outbox.c.patient_key == patient_key)
        return [json.loads(r.envelope) for r in self.conn.execute(q)]

    # --- deliveries (the dispatcher and `pamgate outbox`) ---
    def claim_deliveries(self, destination: str, owner: str, now: datetime, lease_until: datetime,
                         limit: int) -> list[dict]:
        """Lease the deliveries due now that head their patient's queue to `destination`.

        A delivery is a head when it is its patient's first pending one to that destination, so a patient's
        later event never overtakes an earlier one. On PostgreSQL the heads are locked `FOR UPDATE SKIP
        LOCKED` so several instances share the outbox; SQLite's transaction holds the write lock already.

        Plain statements on purpose: the heads are one GROUP BY over the pending rows (an index-only scan of
        ix_delivery_patient_order), then primary-key lookups. A correlated "first pending" test was planned
        as a quadratic join by PostgreSQL on fresh rows that autovacuum had not analysed yet.
        """
        d = delivery.c
        pending = (d.destination == destination, d.status == "pending")
        heads = [r[0] for r in self.conn.execute(
            select(func.min(d.event_seq)).where(*pending, d.patient_key.is_not(None)).group_by(d.patient_key))]
        heads += [r[0] for r in self.conn.execute(select(d.event_seq).where(*pending, d.patient_key.is_(None)))]
        heads.sort()
        claimed: list[int] = []
        for i in range(0, len(heads), 500):
            if len(claimed) >= limit:
                break
            q = (select(d.event_seq)
                 .where(*pending, d.event_seq.in_(heads[i:i + 500]), d.next_attempt_at <= now,
                        or_(d.claimed_until.is_(None), d.claimed_until < now))
                 .order_by(d.event_seq).limit(limit - len(claimed)))
            if self.is_postgres:
                q = q.with_for_update(skip_locked=True)
            claimed += [r[0] for r in self.conn.execute(q)]
        if not claimed:
            return []
        self.conn.execute(update(delivery).where(d.destination == destination, d.event_seq.in_(claimed))
                          .values(claimed_by=owner, claimed_until=lease_until))
        rows = self.conn.execute(
            select(d.event_seq, d.attempts, outbox.c.event_id, outbox.c.type, outbox.c.envelope)
            .join(outbox, outbox.c.seq == d.event_seq)
            .where(d.destination == destination, d.event_seq.in_(claimed)).order_by(d.event_seq))
        return [dict(event_seq=r.event_seq, attempts=r.attempts, event_id=r.event_id, type=r.type,
                     envelope=json.loads(r.envelope)) for r in rows]

    def finish_delivery(self, event_seq: int, destination: str, owner: str, now: datetime, *,
                        error: str | None = None, retry_at: datetime | None = None) -> bool:
        """Record one attempt: done (no error), pending again at `retry_at`, or dead (error, no retry_at).

        Only the holder of the lease records it; a lease taken over by another instance is left alone.
        """
        d = delivery.c
        values = dict(attempts=d.attempts + 1, last_attempt_at=now, claimed_by=None, claimed_until=None)
        if error is None:
            values.update(status="done", delivered_at=now)
        elif retry_at is not None:
            values.update(next_attempt_at=retry_at, last_error=error[:2000])
        else:
            values.update(status="dead", last_error=error[:2000])
        return self.conn.execute(update(delivery).where(
            d.event_seq == event_seq, d.destination == destination, d.claimed_by == owner,
            d.status == "pending").values(**values)).rowcount == 1

    def release_claims(self) -> int:
        """Drop every lease: for a store that only one instance uses (SQLite), at its start."""
        return self.conn.execute(update(delivery).where(delivery.c.claimed_by.is_not(None)).values(
            claimed_by=None, claimed_until=None)).rowcount

    def deliveries(self, *, status: str | None = None, event_ref: str | None = None,
                   destination: str | None = None, limit: int | None = None) -> list[dict]:
        """Deliveries with their event, oldest first. `event_ref` is an event id or an outbox seq."""
        d = delivery.c
        q = (select(d.event_seq, d.destination, d.patient_key, d.status, d.attempts, d.next_attempt_at,
                    d.last_error, d.delivered_at, d.last_attempt_at, d.claimed_by, d.claimed_until,
                    outbox.c.event_id, outbox.c.type, outbox.c.created_at, outbox.c.envelope)
             .join(outbox, outbox.c.seq == d.event_seq).order_by(d.event_seq, d.destination))
        if status:
            q = q.where(d.status == status)
        if destination:
            q = q.where(d.destination == destination)
        if event_ref is not None:
            q = q.where(outbox.c.event_id == event_ref if not event_ref.isdigit()
                        else or_(outbox.c.event_id == event_ref, d.event_seq == int(event_ref)))
        if limit:
            q = q.limit(limit)
        out = []
        for r in self.conn.execute(q):
            row = dict(r._mapping)
            row["envelope"] = json.loads(row["envelope"])
            for k in ("next_attempt_at", "delivered_at", "last_attempt_at", "claimed_until", "created_at"):
                row[k] = _aware(row[k])
            out.append(row)
        return out

    def count_undelivered_events(self) -> int:
        """Events of the outbox with no delivery: recorded while no destination took their type."""
        return self.conn.execute(select(func.count()).select_from(outbox).where(
            ~select(delivery.c.event_seq).where(delivery.c.event_seq == outbox.c.seq).exists())).scalar()

    def count_deliveries(self) -> dict:
        return {r[0]: r[1] for r in self.conn.execute(
            select(delivery.c.status, func.count()).group_by(delivery.c.status))}

    def retry_deliveries(self, keys, now: datetime) -> int:
        """Put (event_seq, destination) deliveries back in the queue, due now, with a fresh attempt count.

        Dead ones are revived; pending ones are only made due now. Delivered ones are left as they are.
        """
        n = 0
        for seq, dest in keys:
            d = delivery.c
            n += self.conn.execute(update(delivery).where(
                d.event_seq == seq, d.destination == dest, d.status.in_(("dead", "pending"))).values(
                status="pending", attempts=case((d.status == "dead", 0), else_=d.attempts),
                next_attempt_at=now)).rowcount
        return n

    def retry_dead(self, now: datetime) -> int:
        return self.conn.execute(update(delivery).where(delivery.c.status == "dead").values(
            status="pending", attempts=0, next_attempt_at=now)).rowcount

    # --- professionals (on every decision: the driver's statements, nothing kept for later is written first,
    # as these rows are never kept for later) ---
    def last_reminded(self, user_id: str):
        row = self._run(Q_REMINDED, {"b_user": user_id}).fetchone()
        return None if row is None else _date(row[0])

    def set_reminded(self, user_id: str, at: datetime) -> None:
        storable("professional.id", user_id)
        self._run(U_REMINDED[self._conn.dialect.name], {"id": user_id, "last_reminded_at": at})


__all__ = ["Store", "UnitOfWork", "metadata", "chain_hash", "AUDIT_VERIFICATION"]
