"""The consent rules (REM DPI, DMP/CONF.06 and CONF.16) as pure functions over plain data.

`apply(view, facts, source, policy)` folds one message's facts into a view of the patient and says what
changes; `decide(view, request, policy, now)` answers "may this user consult, or feed, now?". Nothing here
does I/O: the pipeline reads the view (engine/patient_view.py: what these functions read, and no more), calls
these, and stores the changes they return.

Every answer is a latest value: of an item by an instant, of the visits begun by it, of a user's DMP
results. So a view that holds those latest rows answers as the whole history would.
"""
from __future__ import annotations

from engine.domain import replace  # a cheaper dataclasses.replace for the domain types
from datetime import datetime

from engine import habilitation

from engine.domain import (
    BLOCK_BREAK_GLASS, BLOCK_CENTRE_15, BREAK_GLASS, CENTRE_15, CONSENT, CONSULT, DELETE, DENY, DMP_STATUS,
    FACILITY_AUTHORIZATION, FEED, I_BREAK_GLASS, I_CENTRE_15, I_LEGACY, LEGACY_CONSENT, OPPOSED, PERMIT,
    R_BG_BLOCKED, R_BG_REASON_MISSING, R_C15_BLOCKED, R_DMP_ABSENT, R_DMP_CLOSED, R_DMP_FORBIDDEN,
    R_EPISODE_CANCELLED, R_EXPIRED, R_FEED_OPPOSED, R_NOT_COLLECTED, R_REFUSED,
    BreakGlassRequest, Changes, Decision, DecisionRequest, DmpResult, Fact, Movement, PatientState, Policy, Visit,
    visit_start,
)

ADMISSIONS = frozenset({"A01", "A04", "A05", "A14"})
# pending transfer and discharge: announced, not done, so they neither move nor end the visit
PENDING = frozenset({"A15", "A16"})
# cancellation event -> the insert events it cancels (IHE PAM FR ITI-31: each cancel undoes its insert)
CANCELS = {"A11": {"A01", "A04"}, "A38": {"A05"}, "A27": {"A14"}, "A12": {"A02"}, "A13": {"A03"},
           "A52": {"A21"}, "A53": {"A22"}, "A55": {"A54"}, "A06": {"A07"}, "A07": {"A06"},
           "A26": {"A15"}, "A25": {"A16"}}
CONSENT_ITEMS = {
    "consult": CONSULT, "feed": FEED, "dmp.status": DMP_STATUS, "block.break_glass": BLOCK_BREAK_GLASS,
    "block.centre_15": BLOCK_CENTRE_15, "facility_authorization": FACILITY_AUTHORIZATION,
}
DATE_OF = {"consult": "consult.collected_at", "feed": "feed.collected_at", "dmp.status": "dmp.collected_at",
           "block.break_glass": "block.collected_at", "block.centre_15": "block.collected_at",
           "facility_authorization": "facility_authorization.collected_at"}


# --- reading the state at an instant -------------------------------------------------------------

def latest(facts):
    """The value collected last: by collection date, then by arrival."""
    return max(facts, key=lambda f: (f.collected_at, f.seq), default=None)


def _facts(state: PatientState, item: str, at: datetime, visit: str | None = None, *, by_visit=False):
    """The facts of one item collected by `at`; by_visit keeps those of `visit` or of no visit."""
    return [f for f in state.facts if f.item == item and f.collected_at <= at
            and (not by_visit or f.visit is None or f.visit == visit)]


def validity_end(state: PatientState, fact: Fact, policy: Policy) -> datetime:
    """A collected value lasts its episode's duration: by UF, else by patient class, else the default."""
    ep = policy.episode
    v = state.visit(fact.visit)
    period = ep.validity
    if v is not None:
        if v.patient_class in ep.validity_by_patient_class:
            period = ep.validity_by_patient_class[v.patient_class]
        if v.uf in ep.validity_by_uf:
            period = ep.validity_by_uf[v.uf]
    return period.after(fact.collected_at, policy.zone)


def current_visit(state: PatientState, at: datetime) -> Visit | None:
    """The episode current at `at`: the latest visit begun by then and not ended before it."""
    start = visit_start
    started = [v for v in state.visits if not v.cancelled and start(v) and start(v) <= at]
    open_ = [v for v in started if v.discharged_at is None or v.discharged_at >= at]
    pool = open_ or started
    return max(pool, key=start, default=None)


def consult_status(state: PatientState, policy: Policy, at: datetime, visit: str | None):
    """(reasons, informative codes, the fact that decides, its validity end). No reasons: consent holds."""
    by_visit = policy.episode.scope == "visit"
    facts = _facts(state, CONSULT, at, visit, by_visit=by_visit)
    live = latest([f for f in facts if not f.cancelled])
    dead = latest([f for f in facts if f.cancelled])
    v = state.visit(visit)
    if v is not None and v.cancelled:
        return [R_EPISODE_CANCELLED], [], live, None
    if live is None or live.value != CONSENT and live.value != LEGACY_CONSENT:
        if dead is not None and (live is None or (dead.collected_at, dead.seq) > (live.collected_at, live.seq)):
            return [R_EPISODE_CANCELLED], [], live, None
        if live is None:
            return [R_NOT_COLLECTED], [], None, None
        return [R_REFUSED], [], live, validity_end(state, live, policy)
    end = validity_end(state, live, policy)
    if at >= end:
        return [R_EXPIRED], [], live, end
    return [], [I_LEGACY] if live.value == LEGACY_CONSENT else [], live, end


def feed_status(state: PatientState, policy: Policy, at: datetime, visit: str | None):
    """Feeding stays allowed unless an opposition is in force: the safe side keeps it past the episode."""
    ends = policy.episode.feed_opposition_ends_with_episode
    facts = _facts(state, FEED, at, visit, by_visit=ends and policy.episode.scope == "visit")
    live = latest([f for f in facts if not f.cancelled])
    if live is None or live.value != OPPOSED:
        return []
    if ends and at >= validity_end(state, live, policy):
        return []
    return [R_FEED_OPPOSED]


def dmp_reasons(state: PatientState, at: datetime) -> list:
    status = latest(_facts(state, DMP_STATUS, at))
    if status is None:
        return []
    return {"FERME": [R_DMP_CLOSED], "INEXISTANT": [R_DMP_ABSENT]}.get(status.value, [])


def _blocked(state: PatientState, item: str, at: datetime) -> bool:
    f = latest(_facts(state, item, at))
    return bool(f and f.value is True)


def _last_result(state: PatientState, user: str, transaction: str, at: datetime) -> DmpResult | None:
    results = [r for r in state.dmp_results if r.user == user and r.transaction == transaction and r.at <= at]
    return max(results, key=lambda r: r.at, default=None)


def episode_of(state: PatientState, policy: Policy, at: datetime, visit: str | None, fact, end) -> dict:
    v = state.visit(visit)
    return {
        "scope": policy.episode.scope,
        "visit": visit,
        "start": (v.admitted_at if policy.episode.scope == "visit" and v and v.admitted_at
                  else fact.collected_at if fact else None),
        "end": end,
        "cancelled": bool(v and v.cancelled),
    }


def gate(state: PatientState, policy: Policy, at: datetime, visit: str | None = None) -> dict:
    """The gating state of an episode, as `consent.changed` carries it: consult and feed, for anyone."""
    if visit is None:
        cv = current_visit(state, at)
        visit = cv.number if cv else None
    dmp = dmp_reasons(state, at)
    consult, info, fact, end = consult_status(state, policy, at, visit)
    feed = feed_status(state, policy, at, visit)
    return {
        "consult": DENY if consult or dmp else PERMIT,
        "feed": DENY if feed or dmp else PERMIT,
        "reasons": consult + feed + dmp + info,
        "valid_until": end if not consult else None,
        "visit": visit,
    }


# --- folding a message into the state ------------------------------------------------------------

def _identifiers(state: PatientState, facts: dict) -> tuple:
    ids = list(state.identifiers)

    def put(kind, authority, value):
        nonlocal ids
        ids = [i for i in ids if not (i[0] == kind and (kind == "INS" or i[1] == authority))]
        if value and value != DELETE:
            ids.append((kind, authority, value))

    if facts.get("patient.ipp") and facts.get("patient.ipp") != DELETE:
        put("PI", facts.get("patient.ipp_authority"), facts["patient.ipp"])
    if "patient.ins" in facts:
        put("INS", facts.get("patient.ins_oid"), facts["patient.ins"])
    return tuple(ids)


def _movement_effects(visit: Visit, facts: dict, event: str) -> Visit:
    """Insert, update (Z99) or cancel one movement (ZBE) and what it does to its visit."""
    mid = facts.get("movement.id")
    action = facts.get("movement.action") or ("CANCEL" if event in ("A11", "A38", "A27") else "INSERT")
    historic = bool(facts.get("movement.historic"))
    start = facts.get("movement.start")
    movements = list(visit.movements)
    existing = next((i for i, m in enumerate(movements) if mid and m.id == mid), None)
    if action == "CANCEL":
        target = facts.get("movement.original_trigger") or (
            movements[existing].event if existing is not None else None)
        cancels = CANCELS.get(event, set())
        if existing is not None:
            movements[existing] = replace(movements[existing], cancelled=True)
        elif mid and target:
            # the insert has not arrived yet: remember the movement as cancelled, so it stays so
            movements.append(Movement(id=mid, event=target, action="INSERT", start=None, cancelled=True))
        if target in ADMISSIONS or cancels & ADMISSIONS:
            visit = replace(visit, cancelled=True)
        elif target == "A03" or "A03" in cancels:
            visit = replace(visit, discharged_at=None)
        return replace(visit, movements=tuple(movements))
    if action == "UPDATE":
        trigger = facts.get("movement.original_trigger") or (
            movements[existing].event if existing is not None else event)
        m = Movement(id=mid or "", event=trigger, action="UPDATE", start=start, historic=historic,
                     nature=facts.get("movement.nature"), uf_medical=facts.get("movement.uf_medical"),
                     uf_care=facts.get("movement.uf_care"))
        if existing is not None:
            old = movements[existing]
            m = replace(old, start=start or old.start, nature=m.nature or old.nature,
                        uf_medical=m.uf_medical or old.uf_medical, uf_care=m.uf_care or old.uf_care)
            movements[existing] = m
        else:
            movements.append(m)
    else:
        m = Movement(id=mid or f"{event}@{start}", event=event, action="INSERT", start=start, historic=historic,
                     nature=facts.get("movement.nature"), uf_medical=facts.get("movement.uf_medical"),
                     uf_care=facts.get("movement.uf_care"))
        if existing is not None:
            old = movements[existing]
            # odd order: a cancellation that arrived before its insert still holds, and so do the values
            # of an update (Z99) that arrived before it, since it corrects this very insert
            m = replace(m, cancelled=old.cancelled)
            if old.action == "UPDATE":
                m = replace(m, start=old.start or m.start, nature=old.nature or m.nature,
                            uf_medical=old.uf_medical or m.uf_medical, uf_care=old.uf_care or m.uf_care)
            movements[existing] = m
        else:
            movements.append(m)
    if m.event in ADMISSIONS and m.start:
        visit = replace(visit, admitted_at=m.start, cancelled=m.cancelled)
    elif m.event == "A03" and m.start:
        visit = replace(visit, discharged_at=m.start)
    if not historic and m.uf_medical and m.event not in PENDING:
        visit = replace(visit, uf=m.uf_medical)
    return replace(visit, movements=tuple(movements))


def _visits(state: PatientState, facts: dict, event: str) -> tuple:
    number = facts.get("visit.number")
    if not number or number == DELETE:
        return state.visits
    v = state.visit(number) or Visit(number=number)
    historic = bool(facts.get("movement.historic"))
    if not historic:
        for key, attr in (("patient.nda", "nda"), ("visit.patient_class", "patient_class")):
            if facts.get(key) and facts[key] != DELETE:
                v = replace(v, **{attr: facts[key]})
    if facts.get("visit.admitted_at") and v.admitted_at is None:
        v = replace(v, admitted_at=facts["visit.admitted_at"])
    if "movement.id" in facts or event in CANCELS or event in ADMISSIONS or event == "A03":
        v = _movement_effects(v, facts, event)
    return tuple(x for x in state.visits if x.number != number) + (v,)


def _collected(state: PatientState, facts: dict, source: dict, when: datetime, seq: int) -> tuple:
    new = []
    visit = facts.get("visit.number") or None
    for name, item in CONSENT_ITEMS.items():
        if name not in facts or facts[name] is None or facts[name] == DELETE:
            continue
        at = facts.get(DATE_OF[name]) or when
        f = Fact(item=item, value=facts[name], collected_at=at, seq=seq, visit=visit,
                 code=facts.get(f"{name}.code"), source=source)
        # the same value resent (a Z99 repeating the ZFA) is already known
        if any(o.item == f.item and o.value == f.value and o.collected_at == f.collected_at
               and o.visit == f.visit and not o.cancelled for o in state.facts):
            continue
        new.append(f)
    return tuple(new)


def message_time(facts: dict, received_at: datetime) -> datetime:
    return facts.get("message.event_at") or facts.get("message.recorded_at") or received_at


def collected_dates(facts: dict, received_at: datetime) -> list[tuple[str, datetime]]:
    """(item, collection date) of each value this message carries: where a resent value would be found."""
    when = message_time(facts, received_at)
    return [(item, facts.get(DATE_OF[name]) or when) for name, item in CONSENT_ITEMS.items()
            if name in facts and facts[name] is not None and facts[name] != DELETE]


def changes_history(facts: dict) -> bool:
    """Whether a message can change a fact or a visit: it carries a consent value or names a visit. One that
    does neither (most A28/A31: identity only) changes neither, so its gating before and after is the same and
    `apply` needs none of the view's rows: the patient's header is enough."""
    return bool(facts.get("visit.number")) or any(
        name in facts and facts[name] is not None and facts[name] != DELETE for name in CONSENT_ITEMS)


def instant(state: PatientState, facts: dict, received_at: datetime) -> datetime:
    """The instant a message's gating is judged at: its own time, or the latest value it brings that is new.
    `state` needs only the facts of `collected_dates`."""
    when = message_time(facts, received_at)
    return max([when] + [f.collected_at for f in _collected(state, facts, {}, when, 0)])


def apply(state: PatientState, facts: dict, source: dict, policy: Policy,
          received_at: datetime) -> tuple[Changes, list[dict]]:
    """Fold one message's facts into a view of the patient. Returns the changes (with the view after them)
    and the events they cause. The view needs the facts of `collected_dates`, the latest values by
    `instant` (for the message's visit, or the visit current then) and that visit."""
    event = facts.get("message.event") or ""
    when = message_time(facts, received_at)
    seq = state.next_seq
    new_facts = _collected(state, facts, source, when, seq)
    visits = _visits(state, facts, event)
    cancelled_visits = {v.number for v in visits if v.cancelled}
    facts_all = state.facts
    if cancelled_visits:
        # a cancelled admission cancels the consent collected on that episode, whichever came first (the
        # store cancels the rows of that visit outside this view: Changes.cancels_visit)
        def cancel(fs):
            return tuple(replace(f, cancelled=True) if f.item == CONSULT and f.visit in cancelled_visits
                         and not f.cancelled else f for f in fs)
        facts_all, new_facts = cancel(facts_all), cancel(new_facts)
    identifiers = _identifiers(state, facts)
    new = replace(state, identifiers=identifiers, facts=facts_all + new_facts, visits=visits,
                  next_seq=seq + 1, known=bool(state.known or state.facts or new_facts or visits))
    # Gating is judged at the message's own instant, so that a replay of old messages is deterministic.
    at = max([when] + [f.collected_at for f in new_facts])
    visit = facts.get("visit.number") or None
    events = []
    # without a fact nor a visit changed, the gating cannot change (the rest of the view is the same)
    before = after = None
    if new_facts or visits is not state.visits or facts_all is not state.facts:
        before, after = gate(state, policy, at, visit), gate(new, policy, at, visit)
    if before != after and (state.known or state.facts or new_facts or state.visits):
        events.append({"type": "consent.changed", "time": at, "episode": {"visit": after["visit"]},
                       "data": {k: after[k] for k in ("consult", "feed", "reasons", "valid_until")}})
    newly_consented = any(f.item == CONSULT and f.value in (CONSENT, LEGACY_CONSENT) for f in new_facts)
    if newly_consented and after["consult"] == PERMIT and before["consult"] != PERMIT:
        # DMP/CONF.16: check each named professional's access, with no action from the user
        for pro in facts.get("professionals") or ():
            events.append({"type": "dmp.access.verify", "time": at, "episode": {"visit": after["visit"]},
                           "data": {"transaction": "TD0.2", "user": pro, "cause": "consent.collected"}})
    number = facts.get("visit.number")
    written = new.visit(number) if visits is not state.visits and number else None
    if written is not None and written == state.visit(number):
        written = None
    changes = Changes(state=new, facts=new_facts, visit=written,
                      visit_before=state.visit(number) if written else None,
                      identifiers=identifiers if identifiers != state.identifiers else None)
    return changes, events


def consent_facts(values: dict, visit: str | None, collected_at: datetime) -> dict:
    """A change of mind recorded from the DPI (POST /v1/consents), as the facts of a message."""
    facts = {"visit.number": visit, "consult.collected_at": collected_at, "feed.collected_at": collected_at}
    facts.update({k: v for k, v in values.items() if v is not None})
    return facts


def record_consent(state: PatientState, values: dict, visit: str | None, collected_at: datetime,
                   source: dict, policy: Policy) -> tuple[Changes, list[dict]]:
    """A change of mind recorded from the DPI (POST /v1/consents): the same fold as a message."""
    return apply(state, consent_facts(values, visit, collected_at), source, policy, collected_at)


def record_dmp_result(state: PatientState, user: str, transaction: str, result: str, at: datetime):
    """What the DMP answered: INTERDIT bars the user, EXPIRE/NON_EXISTE call for TD0.3."""
    new = replace(state, dmp_results=state.dmp_results + (DmpResult(user, transaction, result, at),))
    events = []
    if transaction == "TD0.2" and result in ("EXPIRE", "NON_EXISTE"):
        events.append({"type": "dmp.access.authorize", "time": at, "episode": {},
                       "data": {"transaction": "TD0.3", "user": {"id": user}, "cause": result}})
    return new, events


# --- deciding ------------------------------------------------------------------------------------

def decide(state: PatientState, request: DecisionRequest, policy: Policy, now: datetime) -> Decision:
    """May this user consult (or feed) this patient's DMP now? Pure: the patient's state, the request (action,
    mode, user, profession, episode, instant `at`, by default `now`) and the policy in; a `Decision` out:
    permit or deny, the reason codes (the README's "Decisions and reason codes"), the episode and its
    validity, and the events to trigger (a TD0.2 check, a break-glass use). Consultation needs the episode's
    latest live consult fact to be a consent still valid (`consult_status`); feeding needs no opposition."""
    at = request.at or now
    visit = request.visit
    if visit is None:
        cv = current_visit(state, at)
        visit = cv.number if cv else None
    dmp = dmp_reasons(state, at)
    if request.action == "feed":
        reasons = feed_status(state, policy, at, visit) + dmp
        _, _, fact, end = consult_status(state, policy, at, visit)
        return Decision(DENY if reasons else PERMIT, request.mode, tuple(reasons),
                        episode_of(state, policy, at, visit, fact, end))

    consent_reasons, info, fact, end = consult_status(state, policy, at, visit)
    episode = episode_of(state, policy, at, visit, fact, end)
    hab = habilitation.judge(policy.habilitation, policy.habilitation_unknown, request.profession,
                             request.role or request.specialty, request.document_type, request.category)
    reasons = list(dmp) + list(hab.reasons)
    forbidden = _last_result(state, request.user, "TD0.2", at)
    if forbidden is not None and forbidden.result == "INTERDIT":
        reasons.append(R_DMP_FORBIDDEN)
    triggers = []
    if request.mode == BREAK_GLASS:
        if not (request.reason or "").strip():
            reasons.append(R_BG_REASON_MISSING)
        if _blocked(state, BLOCK_BREAK_GLASS, at):
            reasons.append(R_BG_BLOCKED)
        info = [I_BREAK_GLASS]
    elif request.mode == CENTRE_15:
        if _blocked(state, BLOCK_CENTRE_15, at):
            reasons.append(R_C15_BLOCKED)
        info = [I_CENTRE_15]
    else:
        reasons = consent_reasons + reasons
    if reasons:
        return Decision(DENY, request.mode, tuple(reasons), episode, habilitation=hab.answer)
    if request.mode == BREAK_GLASS:
        triggers.append({"type": "break_glass.used",
                         "data": {"user": request.user, "reason": request.reason, "visit": visit}})
    if not _authorized(state, request.user, at, policy):
        triggers.append({"type": "dmp.access.verify",
                         "data": {"transaction": "TD0.2", "user": {"id": request.user,
                                                                   "profession": request.profession},
                                  "cause": "consult.permitted"}})
    return Decision(PERMIT, request.mode, tuple(info) + hab.info, episode, tuple(triggers), hab.answer)


def _authorized(state: PatientState, user: str, at: datetime, policy: Policy) -> bool:
    """A recent proof of the user's DMP authorization: a TD0.2 VALIDE, or a TD0.3 OK that just set it
    (DMP/CONF.16: after TD0.3 there is nothing left to verify). The latest of the two answers counts."""
    last = max((r for r in (_last_result(state, user, "TD0.2", at), _last_result(state, user, "TD0.3", at)) if r),
               key=lambda r: r.at, default=None)
    return bool(last and (last.transaction, last.result) in (("TD0.2", "VALIDE"), ("TD0.3", "OK"))
                and at < policy.verify_max_age.after(last.at, policy.zone))


def record_break_glass(state: PatientState, request: DecisionRequest, at: datetime, visit: str | None):
    """The third item recorded per episode: who asked for break-glass, when and why."""
    return replace(state, break_glass=state.break_glass + (
        BreakGlassRequest(request.user, request.reason or "", at, visit),))


def reminder_due(last_reminded_at: datetime | None, at: datetime, policy: Policy) -> bool:
    """Each professional is reminded every period that every access is traced."""
    return last_reminded_at is None or at >= policy.reminder_period.after(last_reminded_at, policy.zone)
