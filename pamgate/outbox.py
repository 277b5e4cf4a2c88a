"""`pamgate outbox list|show|retry`: the deliveries of the outbox, and dead letters put back in the queue."""
from __future__ import annotations

import json
from datetime import timezone

from engine.errors import CommandError
from outbound.delivery import public_envelope
from outbound.dispatcher import utcnow
from pamgate.db import reading

LIST_LIMIT = 1000


def outbox(args) -> int:
    with reading(args, "the outbox") as store:
        return {"list": _list, "show": _show, "retry": _retry}[args.outbox_command](store, args)


def delivery_id(row: dict) -> str:
    return f"{row['event_seq']}/{row['destination']}"


def _resolve(uow, ref: str) -> list[dict]:
    """ID: an event id, an outbox seq, or one delivery as SEQ/DESTINATION or EVENT_ID/DESTINATION."""
    ref = ref.strip()
    event, _, dest = ref.partition("/")
    rows = uow.deliveries(event_ref=event, destination=dest or None) if event else []
    if not rows:
        raise CommandError(f"{ref}: no such event or delivery in the outbox "
                           f"(give an event id, an outbox number, or NUMBER/DESTINATION)")
    return rows


def _when(dt) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if dt else "-"


def _list(store, args) -> int:
    with store.transaction() as uow:
        counts = uow.count_deliveries()
        rows = uow.deliveries(status=args.status, limit=LIST_LIMIT + 1)
        nowhere = uow.count_undelivered_events()
    print("outbox: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("pending", "done", "dead")))
    if nowhere:
        print(f"{nowhere} event(s) wait for no destination: none configured took their type when they were "
              f"recorded, so they are not delivered; add one under `destinations:` in the configuration "
              f"(README, Outbound events) and restart: events recorded from then on are delivered to it")
    if not rows:
        print(f"no {args.status + ' ' if args.status else ''}deliveries")
        return 0
    shown = rows[:LIST_LIMIT]
    table = [("DELIVERY", "STATUS", "TRIES", "TYPE", "EVENT ID", "CREATED", "NEXT / DONE", "LAST ERROR")]
    for r in shown:
        table.append((delivery_id(r), r["status"], str(r["attempts"]), r["type"], r["event_id"],
                      _when(r["created_at"]),
                      _when(r["delivered_at"] if r["status"] == "done" else
                            r["next_attempt_at"] if r["status"] == "pending" else None),
                      (r["last_error"] or "")[:80]))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    if len(rows) > LIST_LIMIT:
        print(f"(only the first {LIST_LIMIT} shown: narrow with --status)")
    return 0


def _show(store, args) -> int:
    with store.transaction() as uow:
        rows = _resolve(uow, args.id)
    first = rows[0]
    print(f"event {first['event_id']} (outbox #{first['event_seq']}), {first['type']}, "
          f"created {_when(first['created_at'])}")
    for r in rows:
        line = f"  delivery {delivery_id(r)}: {r['status']}, {r['attempts']} attempt(s)"
        if r["last_attempt_at"]:
            line += f", last {_when(r['last_attempt_at'])}"
        if r["status"] == "pending":
            line += f", next {_when(r['next_attempt_at'])}"
            if r["claimed_by"] and r["claimed_until"] and r["claimed_until"] > utcnow():
                line += f", being delivered by {r['claimed_by']}"
        if r["delivered_at"]:
            line += f", delivered {_when(r['delivered_at'])}"
        print(line)
        if r["last_error"]:
            print(f"    last error: {r['last_error']}")
    print(json.dumps(public_envelope(first["envelope"]), ensure_ascii=False, indent=2))
    return 0


def _retry(store, args) -> int:
    if bool(args.id) == bool(args.all_dead):
        raise CommandError("outbox retry: give either an ID or --all-dead")
    now = utcnow()
    with store.transaction() as uow:
        if args.all_dead:
            n = uow.retry_dead(now)
        else:
            rows = _resolve(uow, args.id)
            todo = [(r["event_seq"], r["destination"]) for r in rows if r["status"] != "done"]
            if not todo:
                raise CommandError(f"{args.id}: already delivered to every destination named; nothing to retry")
            n = uow.retry_deliveries(todo, now)
    print(f"pamgate: {n} deliver{'y' if n == 1 else 'ies'} back in the queue, due now")
    return 0
