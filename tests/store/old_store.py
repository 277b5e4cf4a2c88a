"""Fill a store and ask it decisions, with whichever pamgate is first on the path: the migration test runs
this with the code of `main` before migration 0005 (the state documents), then asks again with today's.

    python tests/store/old_store.py fill URL PATH...   # replay PATHs, record a DMP result, an API consent
    python tests/store/old_store.py ask URL PATH...    # print the decisions and views as JSON

Only the interfaces both versions share are used: Store, run_batch, build_pipeline, Pipeline.decide / view /
record_dmp_result / record_consent, conformance.messages.collect.
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


def ask(url, paths) -> dict:
    from consent_store.store import Store
    from engine.config import Config
    from engine.domain import DecisionRequest
    from engine.serve import build_pipeline
    pipeline = build_pipeline(Config())
    store = Store(url)
    answers = {}
    try:
        for (authority, ipp), seen in sorted(_patients(paths).items()):
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
                        r = pipeline.decide(uow, patient, req, NOW)
                    answers[f"{authority}|{ipp}|{at.isoformat()}|{visit}|{action}|{mode}"] = {
                        "decision": r["decision"], "reasons": r["reasons"], "episode": r["episode"],
                        "triggers": [t["type"] for t in r["triggers"]]}
        # the views once every decision is asked: a patient reached by two identifiers (A40, A47) has the
        # break-glass requests of both
        for authority, ipp in sorted(_patients(paths)):
            with store.transaction() as uow:
                pid = pipeline.find(uow, {"id": ipp, "authority": authority})
                view = pipeline.view(uow, pid, NOW) if pid is not None else None
            if view is not None:
                # the API lists episodes by start (before 0005: in the order they were last written)
                view["episodes"] = sorted(view["episodes"], key=lambda e: e["visit"])
                # the break-glass requests of every run of `ask` so far: the same ones, each run
                view["break_glass_requests"] = sorted(
                    {json.dumps(b, default=_plain, sort_keys=True) for b in view["break_glass_requests"]})
            answers[f"{authority}|{ipp}|view"] = view
    finally:
        store.dispose()
    return json.loads(json.dumps(answers, default=_plain, sort_keys=True))


def _plain(o):
    if isinstance(o, datetime):
        return (o if o.tzinfo else o.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
    return str(o)


if __name__ == "__main__":
    command, url, *paths = sys.argv[1:]
    if command == "fill":
        fill(url, paths)
    else:
        json.dump(ask(url, paths), sys.stdout)
