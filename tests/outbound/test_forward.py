"""Version translation: the inbound ADT forwarded with its ZFA in the PAM FR 2.11.1 layout, from the state
after the message was applied — the pure rewrite, and the pipeline writing it in the same transaction."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

import mappings
from engine import rules
from engine.domain import Policy, PatientState
from engine.forward import ZfaValues, rewrite, zfa_values
from engine.pipeline import Pipeline
from mappings.message import Message
from tests.builders import adt, zfa_2111
from tests.outbound.receivers import segment

PARIS = ZoneInfo("Europe/Paris")
UTC = timezone.utc
ZFA_210 = "ACTIF|20250106090000||N||N|N"      # PAM FR ≤ 2.10: fields 1–8 only, no consent field


def segments(text: str) -> list[str]:
    return [s.split("|")[0] for s in text.split("\r")]


@pytest.fixture(scope="module")
def mapping_set():
    return mappings.load(None)


def read(mapping_set, text: str):
    """What the product's own mappings make of a message: the mapping chosen and its facts."""
    msg = Message.parse(text)
    sel = mapping_set.select(msg)
    ex = sel.mapping.extract(msg)
    assert not ex.problems and ex.rejection is None, (ex.problems, ex.rejection)
    return sel.mapping.name, ex.facts


class Harness:
    """The real pipeline and a real SQLite store, with an mllp destination that takes the forwarded ADT."""

    def __init__(self, store, mapping_set, policy=Policy()):
        self.store = store
        self.pipeline = Pipeline(mapping_set, policy, routes={"dpi-hl7": {"adt.forward"}, "all": {"*"}})

    def message(self, text: str) -> str:
        work = self.pipeline.prepare(text, text.encode(), datetime.now(UTC))
        with self.store.transaction() as uow:
            outcome = work.run(uow)
        assert outcome.code == "AA", outcome.errors
        return outcome

    def consent(self, patient, consult=None, feed=None, visit=None, at=None, by=None):
        values = {}
        if consult:
            values.update(consult={"IC": "consent", "INC": "refused"}[consult], **{"consult.code": consult})
        if feed:
            values.update(feed={"INO": "no_opposition", "IO": "opposed"}[feed], **{"feed.code": feed})
        with self.store.transaction() as uow:
            return self.pipeline.record_consent(uow, patient, values, visit, at, by or {}, datetime.now(UTC))

    def forwarded(self) -> list[str]:
        with self.store.transaction() as uow:
            return [r["envelope"]["data"]["message"] for r in uow.deliveries(destination="dpi-hl7")]


def test_a_210_message_is_forwarded_with_the_consent_recorded_through_the_api(sqlite_store, mapping_set):
    h = Harness(sqlite_store, mapping_set)
    p = {"id": "100001", "authority": "HOSP-T"}
    h.consent(p, consult="IC", visit="V0001", at=datetime(2025, 1, 6, 8, 30, tzinfo=UTC),
              by={"id": "doc1"})
    inbound = adt("A01", version="2.5^FRA^2.4", profile="", zfa=ZFA_210, when="20250106100000",
                  name="DUPONT^ÉLODIE\\S\\JR", control_id="OLD-210-1")
    assert read(mapping_set, inbound)[0] == "pamfr-2.10"
    h.message(inbound)
    (out,) = h.forwarded()
    msh = segment(out, "MSH")
    assert msh[11] == "2.5^FRA^2.11" and msh[20] == "2.11^IHE_FRANCE-2.11-PAM"
    assert msh[9] == "OLD-210-1"                      # MSH-10 kept: the receiver deduplicates on it
    zfa = segment(out, "ZFA")
    # ZFA-1..3 status and dates; 4–8 empty (forbidden since 2.11); 9/10 feed; 11/12 consent
    assert zfa == ["ZFA", "ACTIF", "20250106090000", "", "", "", "", "", "", "NA", "", "IC", "20250106093000"]
    assert segments(out) == segments(inbound)          # same segments, same places
    assert segment(out, "PID") == segment(inbound, "PID")   # escapes and accents untouched
    # the product's own 2.11.1 mapping reads the consent from it
    name, facts = read(mapping_set, out)
    assert name == "pamfr-2.11.1"
    assert facts["consult"] == "consent" and facts["consult.code"] == "IC"
    assert facts["consult.collected_at"] == datetime(2025, 1, 6, 9, 30)
    assert "feed" not in facts and facts["dmp.status"] == "ACTIF"


def test_the_state_after_the_message_wins_and_an_earlier_message_counts(sqlite_store, mapping_set):
    """A 2.11.1 message recorded consent and feed; a later ≤ 2.10 Z99 says nothing of either."""
    h = Harness(sqlite_store, mapping_set)
    h.message(adt("A01", zfa=zfa_2111("IO", "IC", "20250106090000"), control_id="NEW-1"))
    h.message(adt("Z99", version="2.5^FRA^2.4", profile="", zfa="FERME|20250106110000|20250106105500||||",
                  zbe_action="UPDATE", original="A01", when="20250106110000", control_id="OLD-2"))
    first, second = h.forwarded()
    assert segment(first, "ZFA")[9:13] == ["IO", "20250106090000", "IC", "20250106090000"]
    zfa = segment(second, "ZFA")
    assert zfa[1:4] == ["FERME", "20250106110000", "20250106105500"]      # status, its date, closing date
    assert zfa[4:9] == ["", "", "", "", ""]
    assert zfa[9:13] == ["IO", "20250106090000", "IC", "20250106090000"]


def test_zfa_is_added_after_zbe_where_allowed_and_only_there(sqlite_store, mapping_set):
    h = Harness(sqlite_store, mapping_set)
    h.consent({"id": "100001", "authority": "HOSP-T"}, consult="INC", feed="INO",
              at=datetime(2025, 1, 6, 8, 0, tzinfo=UTC))
    h.message(adt("A01", version="2.5^FRA^2.4", profile="", control_id="NOZFA-1"))       # no ZFA sent
    h.message(adt("A03", version="2.5^FRA^2.4", profile="", control_id="NOZFA-2"))       # ZFA not allowed
    admit, discharge = h.forwarded()
    assert segments(admit) == ["MSH", "EVN", "PID", "PV1", "ZBE", "ZFA"]
    assert segment(admit, "ZFA")[9:13] == ["INO", "20250106090000", "INC", "20250106090000"]
    assert "ZFA" not in segments(discharge) and segment(discharge, "MSH")[11] == "2.5^FRA^2.11"


def test_rewrite_places_zfa_after_zbe_even_before_other_segments():
    text = "\r".join(["MSH|^~\\&|A|F|B|F|20250106||ADT^A01^ADT_A01|1|P|2.5^FRA^2.10",
                      "PID|1||1^^^F^PI", "PV1|1|I", "ZBE|M1|20250106||INSERT|N", "ZFM|1", "ZFV|2"])
    out = rewrite(text, ZfaValues(consult="IC", consult_collected_at=datetime(2025, 1, 6, 8, tzinfo=UTC)),
                  PARIS, "A01")
    assert segments(out) == ["MSH", "PID", "PV1", "ZBE", "ZFA", "ZFM", "ZFV"]
    assert segment(out, "ZFA") == ["ZFA", "", "", "", "", "", "", "", "", "NA", "", "IC", "20250106090000"]
    # A28 carries no visit: after PV1 where there is no ZBE, at the end where there is neither
    a28 = "\r".join(["MSH|^~\\&|A|F|B|F|20250106||ADT^A28^ADT_A05|2|P|2.5^FRA^2.10", "PID|1||1^^^F^PI"])
    assert segments(rewrite(a28, ZfaValues(), PARIS, "A28")) == ["MSH", "PID", "ZFA"]


def test_values_legacy_and_cancelled_consent_are_not_sent_as_ic():
    policy = Policy()
    at = datetime(2025, 1, 6, 8, tzinfo=UTC)
    legacy, _ = rules.apply(PatientState(), {"message.event": "A01", "visit.number": "V1", "consult": "legacy_consent",
                                             "consult.code": "INO", "consult.collected_at": at}, {}, policy, at)
    legacy = legacy.state
    assert zfa_values(legacy, policy, "V1").consult == "NA"
    consented, _ = rules.apply(PatientState(), {"message.event": "A01", "visit.number": "V1", "consult": "consent",
                                                "consult.collected_at": at, "movement.id": "M1",
                                                "movement.start": at}, {}, policy, at)
    consented = consented.state
    assert zfa_values(consented, policy, "V1").consult == "IC"
    cancelled, _ = rules.apply(consented, {"message.event": "A11", "visit.number": "V1", "movement.id": "M1",
                                           "movement.action": "CANCEL", "movement.original_trigger": "A01"},
                               {}, policy, at)
    cancelled = cancelled.state
    assert zfa_values(cancelled, policy, "V1").consult == "NA"
