"""`pamgate mappings check|explain`: the mapping files checked, or one message explained field by field."""
from __future__ import annotations

import sys
from datetime import datetime, timezone

from conformance.messages import read_message_file
from engine import config as configuration
from engine import habilitation, rules
from engine.domain import DecisionRequest, PatientState
from engine.errors import CommandError
from engine.assembly import StartError, build_pipeline
from mappings.check import check_files
from mappings.explain import describe, show
from mappings.message import Message


def check(args) -> int:
    """The files named, or those of the configuration, then (no file named) the pipeline built from the
    configuration as `serve` builds it: the sender rules' mapping names and policies included."""
    files = args.files
    cfg = None
    if not files:
        cfg = configuration.load(args.config)
        files = [str(configuration.SHIPPED_MAPPINGS)] + cfg.mappings.paths + [cfg.habilitation_file()]
    problems = check_files(files)
    if cfg is not None and not problems:
        try:
            build_pipeline(cfg)
        except StartError as e:
            problems.append(str(e))
    for path in files:
        print(f"  checked {path}")
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 2
    print(f"pamgate: mappings ok ({len(files)} path(s) checked)")
    return 0


def explain(args) -> int:
    """What the server would make of each message of the file: the mapping and its reading (the pipeline's
    own `read`), then the verdict of the pipeline's own `prepare`, and the decision in an empty store."""
    cfg = configuration.load(args.config)
    pipeline = build_pipeline(cfg)
    doc_type, category = args.type, args.category
    if pipeline.policy.habilitation is not None and (doc_type or category):
        try:
            doc_type, category = habilitation.document(pipeline.policy.habilitation.reference, doc_type, category)
        except habilitation.UnknownDocument as e:
            raise CommandError(e.detail.replace("document.type", "--type").replace("document.category",
                                                                                   "--category")) from None
    refused = 0
    for text in read_message_file(args.message_file):
        now = datetime.now(timezone.utc)
        print(describe(*pipeline.read(Message.parse(text))))
        work = pipeline.prepare(text, text.encode("utf-8"), now)
        if work.outcome is not None or work.facts is None:
            print(f"decision: none — the message would be refused, ACK {work.outcome.code if work.outcome else 'AE'} "
                  f"(see problems above)")
            refused += 1
            continue
        facts = work.facts
        changes, events = rules.apply(PatientState(), facts, {"msh10": facts.get("message.control_id")},
                                      pipeline.policy, now)
        state = changes.state
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
            print(f"  event: {e['type']} {show(e.get('data', {}))}")
    # exit 1 when a message would be refused: a script can tell
    return 1 if refused else 0
