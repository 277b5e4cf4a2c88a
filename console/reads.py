"""The console's own read queries: the journal, the deliveries and the audit trail. Each takes a unit of
work (run by the group committer, as the API's reads) and returns plain values. The patient's consent state
is never read here: the pages read it through the pipeline (`find`, `view`), as GET /v1/patients does."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import case, func, select

from consent_store.tables import audit, delivery, episode, journal, movement, outbox

PAGE = 50
HANDLED = "console.refusal_handled"
_j = journal.c
_LIST_COLUMNS = (_j.id, _j.received_at, _j.sender_application, _j.sender_facility, _j.control_id, _j.event,
                 _j.ack_code, _j.error, _j.patient_id)


def _aware(dt):
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def feed_board(uow, now: datetime, silent_after: timedelta) -> list[dict]:
    """Per sender (MSH-3, MSH-4): last message, ACK codes over the last hour and day, silent or not."""
    senders: dict = {}
    day, hour = now - timedelta(days=1), now - timedelta(hours=1)
    for app, facility, code, n, n_hour in uow.conn.execute(
            select(_j.sender_application, _j.sender_facility, _j.ack_code, func.count(),
                   func.sum(case((_j.received_at >= hour, 1), else_=0)))
            .where(_j.received_at >= day).group_by(_j.sender_application, _j.sender_facility, _j.ack_code)):
        s = senders.setdefault((app or "", facility or ""), {"hour": {}, "day": {}, "last": None})
        s["day"][code] = n
        s["hour"][code] = int(n_hour or 0)
    # the last message of every sender ever seen: one index probe each (ix_journal_sender_time)
    for app, facility, last in uow.conn.execute(
            select(_j.sender_application, _j.sender_facility, func.max(_j.received_at))
            .group_by(_j.sender_application, _j.sender_facility)):
        s = senders.setdefault((app or "", facility or ""), {"hour": {}, "day": {}, "last": None})
        s["last"] = _aware(last)
    out = []
    for (app, facility), s in sorted(senders.items()):
        silent = s["last"] is None or now - s["last"] > silent_after
        out.append({"app": app, "facility": facility, "last": s["last"], "hour": s["hour"], "day": s["day"],
                    "silent": silent})
    return out


def outbox_board(uow, now: datetime) -> list[dict]:
    """Per destination: pending, done, dead, and the oldest pending delivery's age."""
    d = delivery.c
    dests: dict = {}
    for dest, status, n in uow.conn.execute(select(d.destination, d.status, func.count())
                                            .group_by(d.destination, d.status)):
        dests.setdefault(dest, {"pending": 0, "done": 0, "dead": 0, "oldest": None})[status] = n
    for dest, oldest in uow.conn.execute(
            select(d.destination, func.min(outbox.c.created_at)).join(outbox, outbox.c.seq == d.event_seq)
            .where(d.status == "pending").group_by(d.destination)):
        dests[dest]["oldest"] = now - _aware(oldest) if oldest else None
    return [{"destination": k, **v} for k, v in sorted(dests.items())]


def messages(uow, *, since: datetime, until: datetime, sender: str | None = None, event: str | None = None,
             ack: str | None = None, control_id: str | None = None, patient_ids: list | None = None,
             visit: str | None = None, before: int | None = None) -> list[dict]:
    """One page of the journal, newest first, in the time window; `before`: the page after that row id.
    Each filter reads an index with the reception time (migration 0007_console); the visit number, which the
    journal has no column for, is looked for in the raw bytes of the window's rows."""
    q = select(*_LIST_COLUMNS).where(_j.received_at >= since, _j.received_at < until)
    if control_id:
        q = q.where(_j.control_id == control_id)
    if sender:
        app, _, facility = sender.partition("|")
        q = q.where(_j.sender_application == app)
        if facility:
            q = q.where(_j.sender_facility == facility)
    if event:
        q = q.where(_j.event == event)
    if ack:
        q = q.where(_j.ack_code == ack)
    if patient_ids is not None:
        q = q.where(_j.patient_id.in_(patient_ids or [-1]))
    if visit:
        q = q.where(_j.raw.like(f"%{_like_escaped(visit)}%".encode(), escape="\\"))
    if before:
        q = q.where(_j.id < before)
    rows = uow.conn.execute(q.order_by(_j.received_at.desc(), _j.id.desc()).limit(PAGE + 1))
    return [{**r._mapping, "received_at": _aware(r.received_at)} for r in rows]


def _like_escaped(text: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", text)


def message(uow, journal_id: int) -> dict | None:
    """One journal row, all its columns (the ACK as sent, where the journal keeps it)."""
    r = uow.conn.execute(select(journal).where(_j.id == journal_id)).first()
    if r is None:
        return None
    row = dict(r._mapping)
    row["received_at"] = _aware(row["received_at"])
    return row


def patient_messages(uow, patient_ids: list, limit: int = 200) -> list[dict]:
    rows = uow.conn.execute(select(*_LIST_COLUMNS, _j.raw).where(_j.patient_id.in_(patient_ids or [-1]))
                            .order_by(_j.received_at.desc(), _j.id.desc()).limit(limit))
    return [{**r._mapping, "received_at": _aware(r.received_at)} for r in rows]


MOVEMENTS = 50
_MOVEMENT_COLUMNS = ("visit", "ordinal", "movement_id", "event", "action", "start", "historic", "nature",
                     "uf_medical", "uf_care", "cancelled")


def patient_movements(uow, patient_id: int, offset: int = 0, limit: int = MOVEMENTS) -> list[dict]:
    """One page of the patient's movements (`limit` + 1 rows: one more says there is a next page): by visit,
    the latest begun first, and in the visit's own order (as received). Read through the primary keys of
    movement and episode (patient, visit, ...): the patient's rows only, whatever the store holds."""
    m, e = movement.c, episode.c
    q = (select(*[m[n] for n in _MOVEMENT_COLUMNS])
         .join_from(movement, episode, (e.patient_id == m.patient_id) & (e.visit == m.visit))
         .where(m.patient_id == patient_id)
         .order_by(e.started_at.desc().nulls_last(), m.visit.desc(), m.ordinal)
         .offset(offset).limit(limit + 1))
    return [{**r._mapping, "start": _aware(r.start)} for r in uow.conn.execute(q)]


def refusals(uow, since: datetime) -> list[dict]:
    """AE/AR messages since `since`, grouped by ERR reason, without the ones marked handled."""
    handled = {}
    for (payload,) in uow.conn.execute(select(audit.c.payload).where(audit.c.patient_id.is_(None),
                                                                     audit.c.kind == HANDLED)):
        p = json.loads(payload)
        handled[p["group"]] = max(handled.get(p["group"], 0), int(p["through"]))
    groups: dict = {}
    for r in uow.conn.execute(select(_j.id, _j.received_at, _j.ack_code, _j.error, _j.event, _j.control_id,
                                     _j.sender_application, _j.sender_facility)
                              .where(_j.ack_code.in_(("AE", "AR")), _j.received_at >= since)
                              .order_by(_j.id.desc()).limit(10_000)):
        key = reason_group(r.ack_code, r.error)
        if r.id <= handled.get(key, 0):
            continue
        g = groups.setdefault(key, {"group": key, "ack": r.ack_code, "count": 0, "ids": [], "last": None,
                                    "example": r.error, "through": r.id})
        g["count"] += 1
        if len(g["ids"]) < 20:
            g["ids"].append({"id": r.id, "control_id": r.control_id, "event": r.event,
                             "received_at": _aware(r.received_at)})
        g["last"] = g["last"] or _aware(r.received_at)
    return sorted(groups.values(), key=lambda g: -g["count"])


_NUMBER = re.compile(r"(?<![A-Za-z0-9=\[-])[0-9]+")


def reason_group(ack: str, error: str | None) -> str:
    """What groups refusals: the ACK code and the first clause of the error (where and what), numbers out."""
    first = (error or "sans motif").split(";")[0].split(":")[0]
    # counts and values out (digits after a space or a quote), field paths (PID-3[5=PI]-1) kept
    return f"{ack} {_NUMBER.sub('N', first).strip()[:120]}"


def audit_console(uow, kinds: tuple, limit: int = 100) -> list[dict]:
    """The console's own audit entries (reveals, downloads, handled refusals), newest first."""
    rows = uow.conn.execute(select(audit).where(audit.c.kind.in_(kinds)).order_by(audit.c.seq.desc()).limit(limit))
    return [dict(seq=r.seq, at=_aware(r.at), kind=r.kind, patient_id=r.patient_id, payload=json.loads(r.payload))
            for r in rows]


def dead_letters(uow, limit: int = 200) -> list[dict]:
    return uow.deliveries(status="dead", limit=limit)


def events_of_message(uow, patient_ids: list, control_id: str | None, sender: str) -> tuple[dict | None, list]:
    """The audit entry of an applied message (mapping, facts, events) and the deliveries of its events."""
    if not patient_ids or not control_id:
        return None, []
    entry = None
    for e in uow.audit_entries(patient_ids):
        p = e["payload"]
        if e["kind"] == "message" and p.get("msh10") == control_id and p.get("sender") == sender:
            entry = e
    if entry is None:
        return None, []
    out = []
    for ev in entry["payload"].get("events", []):
        out += uow.deliveries(event_ref=ev["id"])
        if not any(d["event_id"] == ev["id"] for d in out):
            out.append({"event_id": ev["id"], "type": ev["type"], "destination": None, "status": None,
                        "attempts": 0, "last_error": None})
    return entry, out


__all__ = ["feed_board", "outbox_board", "messages", "message", "refusals", "reason_group", "audit_console",
           "dead_letters", "events_of_message", "patient_messages", "patient_movements", "PAGE", "MOVEMENTS",
           "HANDLED"]
