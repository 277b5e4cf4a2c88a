"""a patient's history as rows: the state documents become consent_fact, episode, movement, dmp_result and
break_glass_request rows, read by indexed queries; the patient row keeps its identifiers and counters

Revision ID: 0005_history_rows
Revises: 0005

Until 0004 each patient's history was one JSON document (patient.state), re-read and re-written whole by
every message, with consent_fact, episode and movement as projections of it. From here the rows are the
history: each message writes the rows it changes and reads only those its answer depends on. This
migration derives every row from the documents (the projections are rebuilt with the rest), on SQLite and
on PostgreSQL; the code that reads the documents is kept here, as the documents were written.
"""
import json
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0005_history_rows'
down_revision = '0005'   # 0005: applied_message.content_hash
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
DATE = sa.DateTime(timezone=True)
CHUNK = 500

_patient = sa.table('patient', sa.column('id', ID), sa.column('state', sa.Text), sa.column('merged_into', ID))
_fact = sa.table('consent_fact', *(sa.column(n, t) for n, t in (
    ('patient_id', ID), ('seq', sa.Integer), ('item', sa.String), ('value', sa.String), ('code', sa.String),
    ('visit', sa.String), ('collected_at', DATE), ('cancelled', sa.Boolean), ('source_msh10', sa.String),
    ('source_sender', sa.String), ('source_mapping', sa.String), ('collected_by', sa.Text))))
_episode = sa.table('episode', *(sa.column(n, t) for n, t in (
    ('patient_id', ID), ('visit', sa.String), ('nda', sa.String), ('patient_class', sa.String), ('uf', sa.String),
    ('admitted_at', DATE), ('discharged_at', DATE), ('cancelled', sa.Boolean), ('started_at', DATE))))
_movement = sa.table('movement', *(sa.column(n, t) for n, t in (
    ('patient_id', ID), ('visit', sa.String), ('ordinal', sa.Integer), ('movement_id', sa.String),
    ('event', sa.String), ('action', sa.String), ('start', DATE), ('historic', sa.Boolean), ('nature', sa.String),
    ('uf_medical', sa.String), ('uf_care', sa.String), ('cancelled', sa.Boolean))))
_dmp = sa.table('dmp_result', *(sa.column(n, t) for n, t in (
    ('patient_id', ID), ('user_id', sa.String), ('transaction', sa.String), ('result', sa.String), ('at', DATE))))
_break_glass = sa.table('break_glass_request', *(sa.column(n, t) for n, t in (
    ('patient_id', ID), ('user_id', sa.String), ('reason', sa.Text), ('at', DATE), ('visit', sa.String))))
LENGTHS = {'visit': 200, 'nda': 200, 'patient_class': 50, 'uf': 200, 'movement_id': 200, 'event': 20,
           'action': 20, 'nature': 50, 'uf_medical': 200, 'uf_care': 200, 'item': 50, 'value': 200, 'code': 200,
           'source_msh10': 200, 'source_sender': 401, 'source_mapping': 200, 'user_id': 200, 'transaction': 20,
           'result': 50}


def upgrade() -> None:
    op.add_column('episode', sa.Column('started_at', DATE, nullable=True))
    op.create_index('ix_episode_open', 'episode', ['patient_id', 'cancelled', 'discharged_at', 'started_at'])
    op.create_index('ix_episode_started', 'episode', ['patient_id', 'cancelled', 'started_at'])
    op.create_index('ix_consent_fact_latest', 'consent_fact',
                    ['patient_id', 'item', 'cancelled', 'collected_at', 'seq'])
    op.create_index('ix_consent_fact_visit', 'consent_fact',
                    ['patient_id', 'item', 'cancelled', 'visit', 'collected_at', 'seq'])
    op.create_table(
        'dmp_result',
        sa.Column('id', ID, primary_key=True, autoincrement=True),
        sa.Column('patient_id', ID, sa.ForeignKey('patient.id'), nullable=False),
        sa.Column('user_id', sa.String(length=200), nullable=False),
        sa.Column('transaction', sa.String(length=20), nullable=False),
        sa.Column('result', sa.String(length=50), nullable=False),
        sa.Column('at', DATE, nullable=False),
    )
    op.create_index('ix_dmp_result_last', 'dmp_result', ['patient_id', 'user_id', 'transaction', 'at'])
    op.create_table(
        'break_glass_request',
        sa.Column('id', ID, primary_key=True, autoincrement=True),
        sa.Column('patient_id', ID, sa.ForeignKey('patient.id'), nullable=False),
        sa.Column('user_id', sa.String(length=200), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('at', DATE, nullable=False),
        sa.Column('visit', sa.String(length=200), nullable=True),
    )
    op.create_index('ix_break_glass_request_patient', 'break_glass_request', ['patient_id', 'at'])
    convert(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("0005_history_rows: the state documents are not rebuilt; restore a backup")


# --- the state documents, as 0001-0004 wrote them ---

def _dt(s):
    if not s:
        return None
    d = datetime.fromisoformat(s)
    return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)


def _cut(row: dict) -> dict:
    return {k: (v[:LENGTHS[k]] if isinstance(v, str) and k in LENGTHS and len(v) > LENGTHS[k] else v)
            for k, v in row.items()}


def _text(value):
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)   # booleans of the blocks: "true" / "false"


def rows_of(pid: int, doc: dict) -> dict:
    """The rows of one state document (dates as datetimes); should two share a key, the later is kept."""
    episodes, moves, facts = {}, {}, {}
    for v in doc.get("visits", ()):
        movements = v.get("movements", ())
        starts = [_dt(m.get("start")) for m in movements if m.get("start")]
        admitted = _dt(v.get("admitted_at"))
        episodes[v["number"]] = _cut({
            'patient_id': pid, 'visit': v["number"], 'nda': v.get("nda"), 'patient_class': v.get("patient_class"),
            'uf': v.get("uf"), 'admitted_at': admitted, 'discharged_at': _dt(v.get("discharged_at")),
            'cancelled': bool(v.get("cancelled")), 'started_at': admitted or min(starts, default=None)})
        for i, m in enumerate(movements):
            moves[(v["number"], i)] = _cut({
                'patient_id': pid, 'visit': v["number"], 'ordinal': i, 'movement_id': m.get("id"),
                'event': m.get("event"), 'action': m.get("action"), 'start': _dt(m.get("start")),
                'historic': bool(m.get("historic")), 'nature': m.get("nature"), 'uf_medical': m.get("uf_medical"),
                'uf_care': m.get("uf_care"), 'cancelled': bool(m.get("cancelled"))})
    for f in doc.get("facts", ()):
        src = f.get("source") or {}
        by = src.get("collected_by")
        facts[(f["seq"], f["item"])] = _cut({
            'patient_id': pid, 'seq': f["seq"], 'item': f["item"], 'value': _text(f.get("value")) or "",
            'code': f.get("code"), 'visit': f.get("visit"), 'collected_at': _dt(f["collected_at"]),
            'cancelled': bool(f.get("cancelled")), 'source_msh10': src.get("msh10"),
            'source_sender': src.get("sender"),
            'source_mapping': src.get("mapping") or ("api" if src.get("api") else None),
            'collected_by': json.dumps(by, sort_keys=True, default=str) if by else None})
    return {
        _episode: list(episodes.values()), _movement: list(moves.values()), _fact: list(facts.values()),
        _dmp: [_cut({'patient_id': pid, 'user_id': r["user"], 'transaction': r["transaction"], 'result': r["result"],
                     'at': _dt(r["at"])}) for r in doc.get("dmp_results", ())],
        _break_glass: [_cut({'patient_id': pid, 'user_id': b["user"], 'reason': b.get("reason") or "",
                             'at': _dt(b["at"]), 'visit': b.get("visit")}) for b in doc.get("break_glass", ())],
    }


def header_of(doc: dict) -> dict:
    return {"identifiers": doc.get("identifiers", []), "next_seq": doc.get("next_seq", 1),
            "known": bool(doc.get("facts") or doc.get("visits"))}


def convert(conn) -> int:
    """Every state document into rows; merged patients (their survivor holds a copy of what they had) keep
    only their header."""
    for table in (_movement, _episode, _fact):   # the projections: rebuilt below with the rest
        conn.execute(table.delete())
    ids = [r[0] for r in conn.execute(sa.select(_patient.c.id).order_by(_patient.c.id))]
    for i in range(0, len(ids), CHUNK):
        chunk = conn.execute(sa.select(_patient.c.id, _patient.c.state, _patient.c.merged_into)
                             .where(_patient.c.id.in_(ids[i:i + CHUNK]))).all()
        batch: dict = {}
        for pid, state, merged_into in chunk:
            doc = json.loads(state) if state else {}
            if merged_into is None:
                for table, rows in rows_of(pid, doc).items():
                    batch.setdefault(table, []).extend(rows)
            conn.execute(_patient.update().where(_patient.c.id == pid).values(
                state=json.dumps(header_of(doc), separators=(",", ":"), ensure_ascii=False)))
        for table, rows in batch.items():
            if rows:
                conn.execute(table.insert(), rows)
    return len(ids)
