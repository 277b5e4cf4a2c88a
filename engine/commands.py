"""What each `pamgate` subcommand does, once its arguments are parsed."""
from __future__ import annotations

import sys

from engine import config as configuration


class CommandError(Exception):
    """One line for stderr."""


def run(args) -> int:
    cmd = args.command
    if cmd == "serve":
        from engine.serve import serve
        return serve(args.config)
    if cmd == "db":
        return db_upgrade(args)
    if cmd == "audit":
        return audit_verify(args)
    if cmd == "mappings":
        return mappings_check(args) if args.mappings_command == "check" else mappings_explain(args)
    if cmd == "replay":
        from conformance.replay import main as replay
        return replay(args)
    if cmd == "outbox":
        from engine.dispatch import outbox_command
        return outbox_command(args)
    if cmd == "console":
        from console.cli import hash_password
        return hash_password()
    raise CommandError(f"unknown command {cmd}")


def _store(args, upgrade: bool):
    from engine.serve import open_store
    cfg = configuration.load(getattr(args, "config", None))
    if not upgrade:
        cfg.store.auto_upgrade = False
    return open_store(cfg)


def db_upgrade(args) -> int:
    store = _store(args, upgrade=True)
    print(f"pamgate: store {store.engine.url.render_as_string(hide_password=True)} is at the latest schema")
    return 0


def audit_verify(args) -> int:
    store = _store(args, upgrade=False)
    try:
        with store.transaction() as uow:
            n, broken, why = uow.verify_audit()
    except Exception as e:  # noqa: BLE001
        raise CommandError(f"cannot read the audit trail: {str(e).splitlines()[0]}") from None
    if why:
        where = f"entry {broken}" if broken is not None else "the chain's end"
        print(f"pamgate: audit chain broken at {where}: {why} ({n} entries read)", file=sys.stderr)
        return 1
    print(f"pamgate: audit chain intact: {n} entries")
    return 0


def mappings_check(args) -> int:
    from mappings.check import check_files
    files = args.files
    if not files:
        cfg = configuration.load(args.config)
        files = [str(configuration.SHIPPED_MAPPINGS)] + cfg.mappings.paths + [cfg.habilitation_file()]
    problems = check_files(files)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    print(f"pamgate: mappings ok ({len(files)} path(s) checked)")
    return 0


def read_message_file(path: str) -> list[str]:
    """The messages of one file: any line ending, with or without a BOM, batch envelopes skipped."""
    from mllp.decoding import decode_leniently
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        raise CommandError(f"{path}: {e.strerror}") from None
    text = decode_leniently(raw)
    messages, current = [], []
    for seg in text.split("\r"):
        if not seg.strip():
            continue
        if seg.startswith("MSH"):
            if current:
                messages.append("\r".join(current))
            current = [seg]
        elif seg[:3] in ("FHS", "BHS", "BTS", "FTS"):
            continue
        elif current:
            current.append(seg)
    if current:
        messages.append("\r".join(current))
    if not messages:
        raise CommandError(f"{path}: no HL7 message (no MSH segment) in this file")
    return messages


def mappings_explain(args) -> int:
    from datetime import datetime, timezone

    from engine import habilitation, rules
    from engine.domain import PatientState, DecisionRequest
    from engine.pipeline import localise
    from engine.serve import build_pipeline
    from mappings.explain import describe
    from mappings.message import Message

    cfg = configuration.load(args.config)
    pipeline = build_pipeline(cfg)
    doc_type, category = args.type, args.category
    if pipeline.policy.habilitation is not None and (doc_type or category):
        try:
            doc_type, category = habilitation.document(pipeline.policy.habilitation.reference, doc_type, category)
        except habilitation.UnknownDocument as e:
            raise CommandError(e.detail.replace("document.type", "--type").replace("document.category",
                                                                                   "--category")) from None
    for text in read_message_file(args.message_file):
        msg = Message.parse(text)
        selection = pipeline.mappings.select(msg)
        extraction = selection.mapping.extract(msg)
        print(describe(selection, extraction))
        if extraction.rejection or extraction.problems:
            print("decision: none — the message would be refused (see problems above)")
            continue
        facts = localise(extraction.facts, pipeline.tz)
        now = datetime.now(timezone.utc)
        state, events = rules.apply(PatientState(), facts, {"msh10": facts.get("message.control_id")},
                                    pipeline.policy, now)
        at = rules.message_time(facts, now)
        print(f"decision, in an empty store, at the message's time {at.isoformat()}:")
        for action in ("consult", "feed"):
            d = rules.decide(state, DecisionRequest(
                action=action, user="explain", profession=args.profession, role=args.role, at=at,
                visit=facts.get("visit.number"), document_type=doc_type, category=category), pipeline.policy, now)
            print(f"  {action}: {d.decision} {list(d.reasons)}")
            if d.habilitation is not None:
                print(f"    habilitation {habilitation.describe(d.habilitation)}")
        for e in events:
            print(f"  event: {e['type']} {e.get('data', {})}")
    return 0
