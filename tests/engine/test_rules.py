"""The consent rules, pure: DMP/CONF.06 table-driven, and properties over arrival order."""
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from engine import rules
from engine.config import period
from engine.domain import (END_OF_TIME, START_OF_TIME, DecisionRequest, EpisodePolicy, Period, PatientState, Policy,
                           add_period)
from mappings import habilitation

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
SRC = {"msh10": "t", "sender": "GAM|CHU"}
MATRIX = habilitation.load()      # the shipped known statements: physicians may consult
POLICY = Policy(habilitation=MATRIX)


def msg(minutes, **facts):
    base = {"message.event": "A01", "message.recorded_at": T0 + timedelta(minutes=minutes),
            "visit.number": "V1", "patient.ipp": "1", "patient.ipp_authority": "CHU"}
    base.update(facts)
    return base


def ask(state, action, minutes, **kw):
    req = DecisionRequest(action=action, user="u1", profession=kw.pop("profession", "10"),
                          at=T0 + timedelta(minutes=minutes), **kw)
    return rules.decide(state, req, POLICY, T0)


def fold(state, *messages, policy=POLICY):
    events = []
    for m in messages:
        changes, ev = rules.apply(state, m, SRC, policy, T0)
        state = changes.state
        events += ev
    return state, events


# DMP/CONF.06: (step, what is recorded before the step, action, mode, expected decision, expected reasons)
CONF06 = [
    (1, {}, "consult", "normal", "deny", ["consent.not_collected"]),
    (2, {}, "consult", "normal", "deny", ["consent.not_collected"]),
    (3, {}, "feed", "normal", "permit", []),
    (4, {"consult": "consent"}, "consult", "normal", "permit", []),
    (5, {}, "consult", "normal", "permit", []),
    (6, {}, "feed", "normal", "permit", []),
    (7, {"consult": "refused"}, "consult", "normal", "deny", ["consent.refused"]),
    (8, {}, "consult", "normal", "deny", ["consent.refused"]),
    (9, {}, "feed", "normal", "permit", []),
    (10, {"feed": "opposed"}, "consult", "normal", "deny", ["consent.refused"]),
    (11, {}, "feed", "normal", "deny", ["feed.opposed"]),
    (12, {}, "feed", "normal", "deny", ["feed.opposed"]),
    (13, {}, "consult", "bris_de_glace", "deny", ["break_glass.reason_missing"]),
    (14, {}, "consult", "bris_de_glace", "permit", ["break_glass"]),
    (15, {}, "consult", "normal", "deny", ["consent.refused"]),
]


def test_conf06_all_fifteen_steps_in_order():
    state = PatientState()
    state, _ = fold(state, msg(0))
    for step, recorded, action, mode, outcome, reasons in CONF06:
        if recorded:
            state, _ = fold(state, msg(step, **recorded))
        reason = "patient unconscious, emergency" if step == 14 else None
        d = ask(state, action, step + 0.5, mode=mode, reason=reason)
        assert (step, d.decision, list(d.reasons)) == (step, outcome, reasons)
        if step == 14:
            assert [t["type"] for t in d.triggers][0] == "break_glass.used"


def test_latest_collection_date_wins_not_arrival():
    late = msg(10, **{"consult": "refused", "consult.collected_at": T0 + timedelta(minutes=10)})
    early = msg(20, **{"consult": "consent", "consult.collected_at": T0 + timedelta(minutes=5)})
    state, _ = fold(PatientState(), late, early)
    assert ask(state, "consult", 30).reasons == ("consent.refused",)


def test_validity_expires_after_six_months_and_overrides_by_uf_and_class():
    state, _ = fold(PatientState(), msg(0, consult="consent", **{"visit.patient_class": "O"}))
    assert ask(state, "consult", 60 * 24 * 180).decision == "permit"
    d = ask(state, "consult", 60 * 24 * 200)
    assert d.reasons == ("consent.expired",)
    short = Policy(habilitation=MATRIX, episode=EpisodePolicy(validity_by_patient_class={"O": Period(delta=timedelta(days=1))}))
    assert rules.decide(state, DecisionRequest("consult", "u1", "10", at=T0 + timedelta(days=2)), short, T0).reasons == ("consent.expired",)
    byuf = Policy(habilitation=MATRIX, episode=EpisodePolicy(validity_by_uf={"URG": Period(delta=timedelta(hours=1))}))
    state2, _ = fold(PatientState(), msg(0, consult="consent", **{"movement.id": "m1", "movement.action": "INSERT",
                                                                   "movement.start": T0, "movement.uf_medical": "URG"}))
    assert rules.decide(state2, DecisionRequest("consult", "u1", "10", at=T0 + timedelta(hours=2)), byuf, T0).reasons == ("consent.expired",)


def test_visit_scope_needs_new_consent_per_visit():
    pol = Policy(habilitation=MATRIX, episode=EpisodePolicy(scope="visit"))
    state, _ = fold(PatientState(), msg(0, consult="consent"), msg(10, **{"visit.number": "V2"}), policy=pol)
    req = DecisionRequest("consult", "u1", "10", visit="V2", at=T0 + timedelta(minutes=20))
    assert rules.decide(state, req, pol, T0).reasons == ("consent.not_collected",)
    req = DecisionRequest("consult", "u1", "10", visit="V1", at=T0 + timedelta(minutes=20))
    assert rules.decide(state, req, pol, T0).decision == "permit"


def test_profession_matrix_and_blocks_and_dmp_status():
    state, _ = fold(PatientState(), msg(0, consult="consent"))
    # a dental assistant's cells are all unknown in the shipped matrix: denied, and the answer says why
    assert ask(state, "consult", 1, profession="31").reasons == ("profession.not_authorized",
                                                                 "habilitation.unknown_cell")
    assert ask(state, "consult", 1, profession="41").reasons == ("profession.not_authorized",)   # not in G15
    blocked, _ = fold(state, msg(2, **{"block.break_glass": True, "block.centre_15": True}))
    assert ask(blocked, "consult", 3, mode="bris_de_glace", reason="x").reasons == ("break_glass.blocked",)
    assert ask(blocked, "consult", 3, mode="centre_15").reasons == ("centre_15.blocked",)
    closed, _ = fold(state, msg(4, **{"dmp.status": "FERME"}))
    assert ask(closed, "consult", 5).reasons == ("dmp.closed",)
    assert ask(closed, "feed", 5).reasons == ("dmp.closed",)
    absent, _ = fold(state, msg(4, **{"dmp.status": "INEXISTANT"}))
    assert ask(absent, "consult", 5).reasons == ("dmp.absent",)


def test_cancelled_admission_cancels_its_consent():
    adm = msg(0, consult="consent", **{"movement.id": "M1", "movement.action": "INSERT", "movement.start": T0})
    cancel = msg(5, **{"message.event": "A11", "movement.id": "M1", "movement.action": "CANCEL",
                       "movement.original_trigger": "A01"})
    state, _ = fold(PatientState(), adm, cancel)
    assert ask(state, "consult", 10, visit="V1").reasons == ("episode.cancelled",)


def test_consent_emits_changed_and_verify_for_named_professionals():
    pros = [{"id": "801234567897", "authority": "ASIP-SANTE-PS", "type": "IDNPS"}]
    _, events = fold(PatientState(), msg(0), msg(1, consult="consent", professionals=pros))
    assert [e["type"] for e in events] == ["consent.changed", "dmp.access.verify"]
    assert events[1]["data"]["user"]["id"] == "801234567897"


def test_reminder_every_six_months():
    assert rules.reminder_due(None, T0, POLICY)
    assert not rules.reminder_due(T0, T0 + timedelta(days=100), POLICY)
    assert rules.reminder_due(T0, T0 + timedelta(days=190), POLICY)


def test_a_period_past_the_calendar_edge_is_the_edge_of_time():
    # a date stored at the calendar's edge (a reminder in 9999) must not break every later read
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert Period(months=6).after(last, "Europe/Paris") == datetime.max.replace(tzinfo=timezone.utc)
    assert Period(delta=timedelta(days=1)).after(last, "Europe/Paris") == datetime.max.replace(tzinfo=timezone.utc)
    assert Period(months=-1).after(datetime(1, 1, 1, tzinfo=timezone.utc), "Europe/Paris") == \
        datetime.min.replace(tzinfo=timezone.utc)
    assert not rules.reminder_due(last, T0, POLICY)


def test_interdit_forbids_and_non_existe_asks_authorize():
    state, _ = fold(PatientState(), msg(0, consult="consent"))
    s2, ev = rules.record_dmp_result(state, "u1", "TD0.2", "NON_EXISTE", T0 + timedelta(minutes=1))
    assert ev[0]["type"] == "dmp.access.authorize"
    s3, _ = rules.record_dmp_result(s2, "u1", "TD0.2", "INTERDIT", T0 + timedelta(minutes=2))
    assert ask(s3, "consult", 3).reasons == ("dmp.access_forbidden",)
    s4, _ = rules.record_dmp_result(state, "u1", "TD0.2", "VALIDE", T0 + timedelta(minutes=2))
    assert [t["type"] for t in ask(s4, "consult", 3).triggers] == []
    assert [t["type"] for t in ask(state, "consult", 3).triggers] == ["dmp.access.verify"]


# --- properties ----------------------------------------------------------------------------------

values = st.sampled_from([("consult", "consent"), ("consult", "refused"), ("feed", "opposed"),
                          ("feed", "no_opposition"), ("consult", None), ("feed", None)])
dated = st.lists(st.tuples(values, st.integers(0, 10_000)), min_size=1, max_size=8,
                 unique_by=lambda x: (x[0][0], x[1]))


def _messages(items):
    out = []
    for (name, value), minute in items:
        facts = {f"{name}.collected_at": T0 + timedelta(minutes=minute)}
        if value is not None:  # None plays NA: the mapping yields no fact
            facts[name] = value
        out.append(msg(minute, **facts))
    return out


@settings(max_examples=150, deadline=None)
@given(dated, st.randoms())
def test_any_arrival_order_gives_the_same_state(items, rnd):
    messages = _messages(items)
    shuffled = messages[:]
    rnd.shuffle(shuffled)
    a, _ = fold(PatientState(), *messages)
    b, _ = fold(PatientState(), *shuffled)
    at = 10_001
    for action in ("consult", "feed"):
        assert ask(a, action, at) == ask(b, action, at)


@settings(max_examples=150, deadline=None)
@given(dated, st.integers(0, 10_000))
def test_na_never_changes_a_collected_value(items, minute):
    state, _ = fold(PatientState(), *_messages(items))
    after, _ = fold(state, *_messages([(("consult", None), minute), (("feed", None), minute)]))
    for action in ("consult", "feed"):
        assert ask(state, action, 10_001) == ask(after, action, 10_001)


@settings(max_examples=200, deadline=None)
@given(dated, st.sampled_from(["normal", "bris_de_glace", "centre_15"]), st.sampled_from([None, "", "urgence"]),
       st.booleans())
def test_consult_never_permitted_without_ic_but_break_glass(items, mode, reason, blocked):
    items = [i for i in items if i[0] != ("consult", "consent")]
    messages = _messages(items)
    if blocked:
        messages.append(msg(1, **{"block.break_glass": True}))
    state, _ = fold(PatientState(), *messages)
    d = ask(state, "consult", 10_001, mode=mode, reason=reason)
    if d.decision == "permit":
        assert mode in ("bris_de_glace", "centre_15")
        if mode == "bris_de_glace":
            assert reason and not blocked


def test_cancellation_before_its_admission_still_cancels():
    adm = msg(0, consult="consent", **{"movement.id": "M1", "movement.action": "INSERT", "movement.start": T0})
    cancel = msg(5, **{"message.event": "A11", "movement.id": "M1", "movement.action": "CANCEL",
                       "movement.original_trigger": "A01"})
    state, _ = fold(PatientState(), cancel, adm)
    assert state.visit("V1").cancelled
    assert ask(state, "consult", 10, visit="V1").reasons == ("episode.cancelled",)


def test_an_update_that_arrives_before_its_insert_still_corrects_it():
    ins = msg(0, **{"movement.id": "M1", "movement.action": "INSERT", "movement.start": T0,
                    "movement.uf_medical": "OLD"})
    upd = msg(5, **{"message.event": "Z99", "movement.id": "M1", "movement.action": "UPDATE",
                    "movement.original_trigger": "A01", "movement.start": T0 + timedelta(hours=1),
                    "movement.uf_medical": "NEW"})
    in_order, _ = fold(PatientState(), ins, upd)
    odd, _ = fold(PatientState(), upd, ins)
    for state in (in_order, odd):
        v = state.visit("V1")
        assert (v.uf, v.admitted_at) == ("NEW", T0 + timedelta(hours=1))


# --- durations: months and days on the clock of the configured zone (Policy.zone), time exact ---------

PARIS = "Europe/Paris"
MARCH_3 = datetime(2025, 3, 3, 8, 10, tzinfo=timezone.utc)        # 09:10 in Paris (UTC+1)
SEPT_3 = datetime(2025, 9, 3, 7, 10, tzinfo=timezone.utc)          # 09:10 in Paris (UTC+2)


def _consented_at(when, **facts):
    state, _ = fold(PatientState(), {**msg(0, consult="consent", **facts), "consult.collected_at": when})
    return state


def test_six_months_end_at_the_same_paris_hour_across_the_summer_change():
    state = _consented_at(MARCH_3)
    assert rules.gate(state, POLICY, MARCH_3)["valid_until"] == SEPT_3
    req = DecisionRequest("consult", "u1", "10", at=SEPT_3 + timedelta(minutes=20))
    assert rules.decide(state, req, POLICY, T0).reasons == ("consent.expired",)
    req = DecisionRequest("consult", "u1", "10", at=SEPT_3 - timedelta(minutes=20))
    assert rules.decide(state, req, POLICY, T0).decision == "permit"
    # the zone is data: counted in UTC, the same six months end an hour later
    assert rules.gate(state, Policy(habilitation=MATRIX, zone="UTC"), MARCH_3)["valid_until"] == \
        SEPT_3 + timedelta(hours=1)
    # and back in winter: 3 September 09:10 Paris + 6 months = 3 March 09:10 Paris
    assert add_period(SEPT_3, Period(months=6), PARIS) == MARCH_3.replace(year=2026)


def test_a_day_is_a_calendar_day_and_24_hours_are_24_hours():
    saturday = datetime(2025, 3, 29, 12, 0, tzinfo=timezone.utc)    # 13:00 in Paris; the clocks go forward that night
    assert add_period(saturday, period("P1D"), PARIS) == datetime(2025, 3, 30, 11, 0, tzinfo=timezone.utc)
    assert add_period(saturday, period("PT24H"), PARIS) == datetime(2025, 3, 30, 12, 0, tzinfo=timezone.utc)
    assert add_period(saturday, period("P1DT2H"), PARIS) == datetime(2025, 3, 30, 13, 0, tzinfo=timezone.utc)
    # by patient class and by UF too: a one-day validity ends at the same Paris hour the next day
    pol = Policy(habilitation=MATRIX, episode=EpisodePolicy(validity_by_patient_class={"O": period("P1D")},
                                                              validity_by_uf={"URG": period("P2D")}))
    state = _consented_at(saturday, **{"visit.patient_class": "O"})
    assert rules.gate(state, pol, saturday)["valid_until"] == datetime(2025, 3, 30, 11, 0, tzinfo=timezone.utc)
    state = _consented_at(saturday, **{"movement.id": "m1", "movement.action": "INSERT", "movement.start": saturday,
                                       "movement.uf_medical": "URG"})
    assert rules.gate(state, pol, saturday)["valid_until"] == datetime(2025, 3, 31, 11, 0, tzinfo=timezone.utc)


def test_month_ends_and_the_local_date_decide_the_day():
    # 31 August 23:30 in Paris is 21:30 UTC: six months on the Paris calendar end on 28 February 23:30 Paris
    aug31 = datetime(2025, 8, 31, 21, 30, tzinfo=timezone.utc)
    assert add_period(aug31, Period(months=6), PARIS) == datetime(2026, 2, 28, 22, 30, tzinfo=timezone.utc)
    # 1 March 00:30 in Paris is still 28 February in UTC: the Paris date counts
    mar1 = datetime(2025, 2, 28, 23, 30, tzinfo=timezone.utc)
    assert add_period(mar1, Period(months=1), PARIS) == datetime(2025, 3, 31, 22, 30, tzinfo=timezone.utc)


def test_reminder_and_dmp_verification_age_count_in_the_zone():
    assert not rules.reminder_due(MARCH_3, SEPT_3 - timedelta(minutes=1), POLICY)
    assert rules.reminder_due(MARCH_3, SEPT_3, POLICY)
    one_day = Policy(habilitation=MATRIX, verify_max_age=period("P1D"))
    saturday = datetime(2025, 3, 29, 12, 0, tzinfo=timezone.utc)
    state = _consented_at(saturday)
    state, _ = rules.record_dmp_result(state, "u1", "TD0.2", "VALIDE", saturday)

    def triggers(at):
        d = rules.decide(state, DecisionRequest("consult", "u1", "10", at=at), one_day, T0)
        return [t["type"] for t in d.triggers]
    assert triggers(datetime(2025, 3, 30, 10, 59, tzinfo=timezone.utc)) == []
    assert triggers(datetime(2025, 3, 30, 11, 0, tzinfo=timezone.utc)) == ["dmp.access.verify"]


def test_retention_runs_back_in_the_zone_and_the_calendar_edge_is_no_error():
    assert Period(months=6).before(SEPT_3, PARIS) == MARCH_3
    assert period("P90D").before(SEPT_3, PARIS) == datetime(2025, 6, 5, 7, 10, tzinfo=timezone.utc)
    edge = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert add_period(edge, Period(months=6), PARIS) == END_OF_TIME
    assert not rules.reminder_due(edge, edge, POLICY)
    assert Period(months=1).before(datetime(1, 1, 1, tzinfo=timezone.utc), PARIS) == START_OF_TIME
