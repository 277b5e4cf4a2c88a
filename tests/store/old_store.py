"""A store written by `main` before migration 0005, and the answers it gives.

    python tests/store/old_store.py fill URL PATH...   # replay PATHs, record DMP results, an API consent

`fill` runs with the code of the commit before 0005 first on the path (the migration test runs it so), and
uses only what that version has: Store, run_batch, build_pipeline, Pipeline.record_dmp_result /
record_consent, conformance.messages.collect. `ask` runs with today's code, in the test's process.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone

NOW = datetime(2027, 1, 1, 12, 0, tzinfo=timezone.utc)
USER = {"id": "dr-migration", "profession": "10"}


def _patients(paths):
    """(authority, IPP) -> the instants of its messages (MSH-7) and its visits (PV1-19), in replay order."""
    from conformance.messages import _pi_of, collect
    out = {}
    for m in collect(paths).messages:
        pi = _pi_of(m, "PID", 3)
        if not pi:
            continue
        p = out.setdefault((pi["authority"], pi["id"]), {"instants": set(), "visits": set()})
        ts = m.field("MSH", 7)
        if len(ts) >= 12 and ts[:12].isdigit():
            p["instants"].add(datetime.strptime(ts[:12], "%Y%m%d%H%M").replace(tzinfo=timezone.utc))
        if m.field("PV1", 19):
            p["visits"].add(m.field("PV1", 19))
    return out


def fill(url, paths):
    from conformance.messages import collect
    from consent_store.store import Store
    from engine.commit import run_batch
    from engine.config import Config
    from engine.serve import build_pipeline
    pipeline = build_pipeline(Config())
    store = Store(url)
    store.upgrade()
    for m in collect(paths).messages:
        work = pipeline.prepare(m.text, m.text.encode(), NOW - timedelta(days=1))
        run_batch(store, [(work.run, work.keys())])
    patients = sorted(_patients(paths))
    with store.transaction() as uow:
        for i, (authority, ipp) in enumerate(patients[:3]):
            pipeline.record_dmp_result(uow, {"id": ipp, "authority": authority}, {"id": USER["id"]}, "TD0.2",
                                       ("INTERDIT", "VALIDE", "NON_EXISTE")[i], NOW - timedelta(hours=2))
        if patients:
            authority, ipp = patients[-1]
            pipeline.record_consent(uow, {"id": ipp, "authority": authority},
                                    {"consult": "consent", "consult.code": "IC"}, None, NOW - timedelta(hours=3),
                                    {"id": "rpps-7", "name": "Dr Y"}, NOW)
    store.dispose()


def ask(url, paths, *, documents: bool = False) -> dict:
    """The views, then the decisions, of every patient of PATHS. `documents`: on a store before 0005, by
    today's rules over each patient's whole state document (read as 0001-0004 wrote it); else through
    today's pipeline, over the history rows."""
    from consent_store.store import Store
    from engine import rules
    from engine.config import Config
    from engine.domain import DecisionRequest
    from engine.serve import build_pipeline
    from sqlalchemy import text
    pipeline = build_pipeline(Config())
    store = Store(url)
    answers = {}

    def state_of(uow, pid):
        return state_from_document(json.loads(uow.conn.execute(
            text("SELECT state FROM patient WHERE id = :p"), {"p": pid}).scalar()))

    try:
        patients = _patients(paths)
        for authority, ipp in sorted(patients):
            with store.transaction() as uow:
                pid = pipeline.find(uow, {"id": ipp, "authority": authority})
                if pid is None:
                    view = None
                elif documents:
                    view = pipeline.described(state_of(uow, pid), uow.patient_identifiers(pid), NOW)
                else:
                    view = pipeline.view(uow, pid, NOW)
            if view is not None:
                # the API lists episodes by start (before 0005: in the order they were last written)
                view["episodes"] = sorted(view["episodes"], key=lambda e: e["visit"])
            answers[f"{authority}|{ipp}|view"] = view
        for (authority, ipp), seen in sorted(patients.items()):
            patient = {"id": ipp, "authority": authority}
            instants = sorted(seen["instants"]) + [NOW]
            asks = [(at + timedelta(minutes=1), None) for at in instants]
            asks += [(NOW, v) for v in sorted(seen["visits"])]
            for at, visit in asks:
                for action, mode, reason in (("consult", "normal", None), ("feed", "normal", None),
                                             ("consult", "bris_de_glace", "urgence")):
                    req = DecisionRequest(action=action, user=USER["id"], profession="10", mode=mode, reason=reason,
                                          visit=visit, at=at)
                    with store.transaction() as uow:
                        if documents:
                            pid = pipeline.find(uow, patient)
                            d = None if pid is None else rules.decide(state_of(uow, pid), req, pipeline.policy, NOW)
                            r = ({"decision": "deny", "reasons": ["patient.unknown"], "episode": None, "triggers": []}
                                 if d is None else {"decision": d.decision, "reasons": list(d.reasons),
                                                    "episode": d.episode, "triggers": list(d.triggers)})
                        else:
                            r = pipeline.decide(uow, patient, req, NOW)
                    answers[f"{authority}|{ipp}|{at.isoformat()}|{visit}|{action}|{mode}"] = {
                        "decision": r["decision"], "reasons": r["reasons"], "episode": r["episode"],
                        "triggers": [t["type"] for t in r["triggers"]]}
    finally:
        store.dispose()
    return json.loads(json.dumps(answers, default=_plain, sort_keys=True))


def state_from_document(d: dict | None):
    """A state document as 0001-0004 wrote it (engine.domain.state_from_dict then), as a whole PatientState."""
    from engine.domain import BreakGlassRequest, DmpResult, Fact, Movement, PatientState, Visit

    def dt(s):
        return datetime.fromisoformat(s) if s else None
    d = d or {}
    return PatientState(
        identifiers=tuple(tuple(i) for i in d.get("identifiers", ())),
        facts=tuple(Fact(**{**f, "collected_at": dt(f["collected_at"])}) for f in d.get("facts", ())),
        visits=tuple(
            Visit(**{**v, "admitted_at": dt(v["admitted_at"]), "discharged_at": dt(v["discharged_at"]),
                     "movements": tuple(Movement(**{**m, "start": dt(m["start"])}) for m in v["movements"])})
            for v in d.get("visits", ())),
        break_glass=tuple(BreakGlassRequest(**{**b, "at": dt(b["at"])}) for b in d.get("break_glass", ())),
        dmp_results=tuple(DmpResult(**{**r, "at": dt(r["at"])}) for r in d.get("dmp_results", ())),
        next_seq=d.get("next_seq", 1))


def _plain(o):
    if isinstance(o, datetime):
        return (o if o.tzinfo else o.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
    return str(o)


if __name__ == "__main__":
    command, url, *paths = sys.argv[1:]
    assert command == "fill", command
    fill(url, paths)
