"""The pure checks: reading ACKs, comparing decisions, matching events."""
from conformance import checks as C
from conformance.expectations import DecisionCheck, EventCheck
from mllp.ack import AckError, build_ack

MSG = "MSH|^~\\&|GAM|H|DPI|H|20250101||ADT^A03^ADT_A03|C1|P|2.5\rEVN||20250101"


def test_an_ack_is_read_with_its_errors():
    ack = C.read_ack(build_ack(MSG, "AE", [AckError("ZBE", 1, 4, None, 101, "E", "ZBE-4 is required | empty")]))
    assert ack.code == "AE" and ack.errors == ("ZBE-4: ZBE-4 is required | empty (code 101)",)
    assert C.check_ack("AE", ack, "n").held
    assert not C.check_ack("AA", ack, "n").held
    assert C.check_err("zbe-4 is REQUIRED", ack, "n").held
    assert not C.check_err("PID-3", ack, "n").held


def test_enhanced_mode_is_read_as_its_original_code():
    ack = C.read_ack(build_ack(MSG.replace("|P|2.5", "|P|2.5|||AL|NE"), "AA"))
    assert (ack.sent_code, ack.code) == ("CA", "AA")
    check = C.check_ack("AA", ack, "n")
    assert check.held and "sent as CA" in check.actual


def test_an_ack_without_msa_fails_every_expected_code():
    ack = C.read_ack("MSH|^~\\&|X\rERR|||207")
    assert ack.code == "?" and not C.check_ack("AA", ack, "n").held


def decision(**kw):
    return DecisionCheck.model_validate({"action": "consult", **kw})


def test_a_decision_must_match_outcome_reasons_in_any_order_and_triggers():
    result = {"decision": "deny", "reasons": ["feed.opposed", "consent.refused"], "triggers": []}
    assert C.check_decision(decision(decision="deny", reasons=["consent.refused", "feed.opposed"]), result, "n").held
    assert C.check_decision(decision(decision="deny"), result, "n").held        # reasons not asked, not checked
    wrong = C.check_decision(decision(decision="deny", reasons=["consent.refused"]), result, "n")
    assert not wrong.held and wrong.detail["wrong"] == ["reasons"]
    assert "consent refused" in wrong.actual and "the patient opposes feeding" in wrong.actual
    assert not C.check_decision(decision(decision="permit"), result, "n").held
    permit = {"decision": "permit", "reasons": [], "triggers": [{"type": "dmp.access.verify", "data": {}}]}
    assert C.check_decision(decision(decision="permit", triggers=["dmp.access.verify"]), permit, "n").held
    assert not C.check_decision(decision(decision="permit", triggers=[]), permit, "n").held


EVENTS = [
    {"id": "1", "type": "dmp.access.verify", "data": {"cause": "consent.collected", "user": {"id": "A", "type": "RPPS"}}},
    {"id": "2", "type": "dmp.access.verify", "data": {"cause": "consent.collected", "user": {"id": "B", "type": "RPPS"}}},
    {"id": "3", "type": "consent.changed", "data": {"consult": "permit", "reasons": ["x", "y"]}},
]


def event(**kw):
    return EventCheck.model_validate(kw)


def test_events_match_by_type_nested_data_and_count():
    assert C.check_events(event(type="dmp.access.verify"), EVENTS, "n").held
    assert C.check_events(event(type="dmp.access.verify", count=2), EVENTS, "n").held
    assert not C.check_events(event(type="dmp.access.verify", count=1), EVENTS, "n").held
    assert C.check_events(event(type="dmp.access.verify", data={"user": {"id": "B"}}, count=1), EVENTS, "n").held
    assert not C.check_events(event(type="dmp.access.verify", data={"user": {"id": "C"}}), EVENTS, "n").held
    assert C.check_events(event(type="consent.changed", data={"reasons": ["y", "x"]}), EVENTS, "n").held
    assert C.check_events(event(type="break_glass.used", count=0), EVENTS, "n").held
    assert not C.check_events(event(type="break_glass.used"), EVENTS, "n").held


def test_events_that_cannot_be_read_are_skipped_not_held():
    check = C.check_events(event(type="consent.changed"), None, "n")
    assert check.status == C.SKIPPED and not check.held
