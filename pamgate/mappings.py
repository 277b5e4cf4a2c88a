"""`pamgate mappings check|explain`: the mapping files checked, or one message explained field by field."""
from __future__ import annotations

import sys
from datetime import datetime, timezone

from conformance.messages import read_message_file
from engine import config as configuration
from engine import rules
from engine.domain import DecisionRequest, PatientState
from engine.assembly import build_pipeline
from mappings.check import check_files
from mappings.explain import describe
from mappings.message import Message


def check(args) -> int:
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


def explain(args) -> int:
    """What the server would make of each message of the file: the mapping and its reading (the pipeline's
    own `read`), then the verdict of the pipeline's own `prepare`, and the decision in an empty store."""
    cfg = configuration.load(args.config)
    pipeline = build_pipeline(cfg)
    for text in read_message_file(args.message_file):
        now = datetime.now(timezone.utc)
        print(describe(*pipeline.read(Message.parse(text))))
        work = pipeline.prepare(text, text.encode("utf-8"), now)
        if work.outcome is not None or work.facts is None:
            print("decision: none — the message would be refused (see problems above)")
            continue
        facts = work.facts
        state, events = rules.apply(PatientState(), facts, {"msh10": facts.get("message.control_id")},
                                    pipeline.policy, now)
        at = rules.message_time(facts, now)
        print(f"decision, in an empty store, at the message's time {at.isoformat()}:")
        for action in ("consult", "feed"):
            d = rules.decide(state, DecisionRequest(action=action, user="explain", profession="10", at=at,
                                                    visit=facts.get("visit.number")), pipeline.policy, now)
            print(f"  {action}: {d.decision} {list(d.reasons)}")
        for e in events:
            print(f"  event: {e['type']} {e.get('data', {})}")
    return 0
