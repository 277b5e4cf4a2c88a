"""`pamgate journal list|show|export`: the messages received, as the journal keeps them (raw message, the ACK
as sent, the errors), found by time, sender, event, ACK code, MSH-10, IPP or visit. No identity is printed
unless --show-identities: the raw message is shown masked (names, IPP, INS, NDA, visit, birth date…)."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from conformance.identities import MASK, mask
from engine import config as configuration
from engine.errors import CommandError
from outbound.dispatcher import utcnow
from pamgate.db import reading
from pamgate.outbox import _when

LIST_LIMIT = 1000


def journal(args) -> int:
    zone = ZoneInfo(configuration.load(args.config).timezone)
    filters = _filters(args, zone) if args.journal_command != "show" else None
    if args.journal_command == "export":
        _export_folder(args.folder)
    with reading(args, "the journal") as store, store.transaction() as uow:
        if args.journal_command == "show":
            return _show(uow, args)
        rows = uow.journal_entries(**filters, limit=LIST_LIMIT + 1)
        if args.journal_command == "list":
            return _list(rows, args)
        return _export(rows, args)


def instant(text: str, zone: ZoneInfo, option: str, now: datetime) -> datetime:
    """An ISO 8601 date-time (without an offset: the configured time zone's), or a duration back from now
    (`PT2H`, `P1D`)."""
    text = text.strip()
    if text[:1] in "Pp":
        try:
            p = configuration.period(text.upper())
        except Exception:  # noqa: BLE001
            raise CommandError(f"{option} {text!r}: not an ISO 8601 duration (e.g. PT2H, P1D)") from None
        return p.before(now, zone.key).astimezone(timezone.utc)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{option} {text!r}: not an ISO 8601 date-time (e.g. 2026-01-31T14:00, "
                           f"2026-01-31T13:00Z) or duration (PT2H)") from None
    return (at.replace(tzinfo=zone) if at.tzinfo is None else at).astimezone(timezone.utc)


def _filters(args, zone) -> dict:
    now = utcnow()
    since = instant(args.since, zone, "--since", now) if args.since else now - timedelta(hours=1)
    until = instant(args.until, zone, "--until", now) if args.until else None
    if until is not None and until <= since:
        raise CommandError(f"--until {args.until} is not after --since ({since.isoformat()})")
    app, facility = None, None
    if args.sender:
        app, _, facility = args.sender.partition("|")
        facility = facility or None
    if args.ack and args.ack.upper() not in ("AA", "AE", "AR"):
        raise CommandError(f"--ack {args.ack!r}: give AA, AE or AR")
    return dict(since=since, until=until, app=app, facility=facility, event=args.event,
                ack_code=args.ack.upper() if args.ack else None, control_id=args.msh10, ipp=args.ipp,
                visit=args.visit)


def _identity(value, show: bool) -> str:
    return (value or "-") if show else (MASK if value else "-")


def _list(rows, args) -> int:
    if not rows:
        print("no message in the journal matches (default window: the last hour; see --since)")
        return 0
    head = ("ID", "RECEIVED", "SENDER", "EVENT", "MSH-10", "ACK", "IPP", "VISIT", "ERROR")
    table = [head]
    for r in rows[:LIST_LIMIT]:
        table.append((str(r["id"]), _when(r["received_at"]),
                      f"{r['sender_application'] or ''}|{r['sender_facility'] or ''}", r["event"] or "-",
                      r["control_id"] or "-", r["ack_code"], _identity(r["patient_ipp"], args.show_identities),
                      _identity(r["visit"], args.show_identities), (r["error"] or "")[:80]))
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    if len(rows) > LIST_LIMIT:
        print(f"(only the first {LIST_LIMIT} shown: narrow the window with --since/--until)")
    return 0


def _text(raw: bytes) -> str:
    from mllp.decoding import decode_leniently
    return decode_leniently(raw)


def _show(uow, args) -> int:
    ref = args.ref.strip()
    rows = uow.journal_entries(ids=[int(ref)]) if ref.isdigit() else []
    rows = rows or uow.journal_entries(control_id=ref)
    if not rows:
        raise CommandError(f"{ref}: no such journal id or MSH-10 in the journal")
    show = args.show_identities
    for n, r in enumerate(rows):
        if n:
            print()
        sender = f"{r['sender_application'] or ''}|{r['sender_facility'] or ''}"
        print(f"journal #{r['id']}: received {_when(r['received_at'])} from {sender}, "
              f"event {r['event'] or '-'}, MSH-10 {r['control_id'] or '-'}, ACK {r['ack_code']}")
        text = _text(r["raw"])
        print("message" + ("" if show else " (identities masked; --show-identities shows them)") + ":")
        for seg in (text if show else mask(text)).replace("\r\n", "\r").replace("\n", "\r").split("\r"):
            if seg:
                print(f"  {seg}")
        print("ACK as sent:" if r["ack"] else "ACK as sent: not kept (journaled before pamgate kept it, or "
                                                "answered by the listener itself)")
        for seg in (r["ack"] or "").split("\r"):
            if seg:
                print(f"  {seg}")
        print(f"errors: {r['error']}" if r["error"] else "errors: none")
        if r["patient_id"] is not None:
            ids = uow.patient_identifiers(r["patient_id"])
            named = ", ".join(f"{i['kind']} {_identity(i['value'], show)} ({i['authority'] or '-'})" for i in ids)
            print(f"patient: #{r['patient_id']} {named}")
        else:
            print("patient: none (the message changed no patient)")
        events = uow.events_of_message(r["control_id"], sender) if r["control_id"] and r["ack_code"] == "AA" \
            and r["patient_id"] is not None else []
        print(f"events: {len(events)}")
        for e in events:
            print(f"  {e['type']} {e['event_id']} (outbox #{e['seq']}; pamgate outbox show {e['seq']})")
    return 0


def _export_folder(folder: str) -> None:
    p = Path(folder)
    if p.exists() and not p.is_dir():
        raise CommandError(f"{folder}: not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(f"{folder}: cannot create the folder: {e.strerror or e}") from None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _export(rows, args) -> int:
    folder = Path(args.folder)
    rows = rows[:LIST_LIMIT]
    for r in rows:
        name = f"{r['id']:08d}-{_UNSAFE.sub('_', r['control_id'] or 'no-msh10')[:60]}.hl7"
        (folder / name).write_bytes(r["raw"])
    print(f"pamgate: {len(rows)} message(s) written to {folder} as received (they hold identities); "
          f"replay them with: pamgate replay {folder}")
    return 0
