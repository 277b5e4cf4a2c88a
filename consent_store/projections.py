"""Queryable rows derived from a patient's state document: episodes, movements, consent facts.

The JSON state is the one source of truth (the rules fold it; point-in-time reads replay it). These rows
are a projection of it for SQL readers, written in the same transaction as the state. Saving a state
writes only the rows that differ from the state it replaces, so a long-lived patient costs no more to
update than a new one.

This module reads the state document as plain JSON (the shape `engine.domain.state_to_dict` writes); it
knows nothing of the rules.
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from sqlalchemy import and_, bindparam, delete, insert, select

from consent_store.sql import DriverCursor, Sql
from consent_store.tables import consent_fact, episode, movement, patients, storable

# column order of each row tuple; the first `key` columns identify a row
SHAPES = {
    "episode": (episode, ("patient_id", "visit", "nda", "patient_class", "uf", "admitted_at", "discharged_at",
                          "cancelled"), 2),
    "movement": (movement, ("patient_id", "visit", "ordinal", "movement_id", "event", "action", "start",
                            "historic", "nature", "uf_medical", "uf_care", "cancelled"), 3),
    "consent_fact": (consent_fact, ("patient_id", "seq", "item", "value", "code", "visit", "collected_at",
                                    "cancelled", "source_msh10", "source_sender", "source_mapping",
                                    "collected_by"), 3),
}
DATES = frozenset({"admitted_at", "discharged_at", "start", "collected_at"})


def _text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)   # booleans of the blocks: "true" / "false"


def rows(patient_id: int, doc: dict | None) -> dict[str, frozenset]:
    """The projection of one state document: per table, a set of row tuples (dates still as ISO text).
    Should two rows share a key (a state written by an older version), the later one is kept, so that a
    projection can never make a message fail."""
    doc = doc or {}
    eps, moves, facts = {}, {}, {}
    for v in doc.get("visits", ()):
        eps[v["number"]] = (patient_id, v["number"], v.get("nda"), v.get("patient_class"), v.get("uf"),
                            v.get("admitted_at"), v.get("discharged_at"), bool(v.get("cancelled")))
        for i, m in enumerate(v.get("movements", ())):
            moves[(v["number"], i)] = (
                patient_id, v["number"], i, m.get("id"), m.get("event"), m.get("action"), m.get("start"),
                bool(m.get("historic")), m.get("nature"), m.get("uf_medical"), m.get("uf_care"),
                bool(m.get("cancelled")))
    for f in doc.get("facts", ()):
        src = f.get("source") or {}
        by = src.get("collected_by")
        facts[(f["seq"], f["item"])] = (
            patient_id, f["seq"], f["item"], _text(f.get("value")) or "", f.get("code"), f.get("visit"), f["collected_at"],
            bool(f.get("cancelled")), src.get("msh10"), src.get("sender"),
            src.get("mapping") or ("api" if src.get("api") else None),
            json.dumps(by, sort_keys=True, default=str) if by else None)
    return {"episode": frozenset(eps.values()), "movement": frozenset(moves.values()),
            "consent_fact": frozenset(facts.values())}


def _lengths(table) -> dict:
    return {c.name: c.type.length for c in table.columns if getattr(c.type, "length", None)}


LENGTHS = {name: _lengths(table) for name, (table, _, _) in SHAPES.items()}
# built once, run on the driver's cursor (consent_store/sql.py)
DELETE_ROW = {name: Sql(delete(table).where(and_(*(table.c[n] == bindparam(f"k_{n}") for n in names[:key]))))
              for name, (table, names, key) in SHAPES.items()}
DELETE_PATIENT = {name: Sql(delete(table).where(table.c.patient_id == bindparam("k_patient_id")))
                  for name, (table, _, _) in SHAPES.items()}
INSERT = {name: Sql(insert(table), columns=list(names)) for name, (table, names, _) in SHAPES.items()}


# a state's dates repeat (a message's facts share one collection date): parse each text once
_parse_date = lru_cache(maxsize=4096)(datetime.fromisoformat)


def _converter(name: str, names: tuple):
    """row tuple -> column values: dates parsed; text checked against its column (tables.storable): a value
    that does not fit is refused (NotStorable), never cut, or two visits could become one row. Positions
    worked out once."""
    dates = tuple(i for i, n in enumerate(names) if n in DATES)
    texts = tuple((i, f"{name}.{n}") for i, n in enumerate(names) if n in LENGTHS[name])

    def values(row) -> dict:
        row = list(row)
        for i in dates:
            if row[i]:
                row[i] = _parse_date(row[i])
        for i, column in texts:
            v = row[i]
            if isinstance(v, str) and (len(v) > LENGTHS[name][names[i]] or "\x00" in v):
                storable(column, v)
        return dict(zip(names, row))
    return values


_ROW_VALUES = {name: _converter(name, names) for name, (_, names, _) in SHAPES.items()}
_KEY_VALUES = {name: _converter(name, names[:key]) for name, (_, names, key) in SHAPES.items()}


def write(run_many, patient_id: int, old: dict | None, new: dict) -> None:
    """Turn the rows of `old` into those of `new`; `old` None means "unknown": rewrite the patient.
    `run_many(Sql, rows)`: a DriverCursor's."""
    if old is None:
        clear(run_many, patient_id)
    for name in SHAPES:
        want = new[name]
        if old is None:
            gone, came = (), want
        else:
            have = old[name]
            gone, came = have - want, want - have
        if gone:
            keys = [_KEY_VALUES[name](r) for r in gone]
            run_many(DELETE_ROW[name], [{f"k_{n}": v for n, v in k.items()} for k in keys])
        if came:
            run_many(INSERT[name], [_ROW_VALUES[name](r) for r in came])


def clear(run_many, patient_id: int) -> None:
    for name in SHAPES:
        run_many(DELETE_PATIENT[name], [{"k_patient_id": patient_id}])


def backfill(conn) -> int:
    """Derive the rows of every patient not merged into another (migration 0003, or a repair)."""
    run_many = DriverCursor(conn).run_many
    ids = [r[0] for r in conn.execute(select(patients.c.id).where(patients.c.merged_into.is_(None))
                                      .order_by(patients.c.id))]
    for i in range(0, len(ids), 500):
        chunk = conn.execute(select(patients.c.id, patients.c.state).where(patients.c.id.in_(ids[i:i + 500]))).all()
        for pid, state in chunk:
            write(run_many, pid, None, rows(pid, json.loads(state) if state else {}))
    return len(ids)
