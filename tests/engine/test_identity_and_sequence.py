"""The pure decisions beside the rules: A40/A47 identities (engine/identity.py) and MSH-13 verdicts
(engine/sequence.py), table-driven, no store."""
import pytest

from engine import identity, sequence
from engine.domain import PatientState


def facts(event, ipp="1", prior=None, prior_ins=None):
    f = {"message.event": event, "patient.ipp": ipp, "patient.ipp_authority": "H"}
    if prior:
        f.update({"prior.ipp": prior, "prior.ipp_authority": "H"})
    if prior_ins:
        f.update({"prior.ins": prior_ins, "prior.ins_oid": "O"})
    return f


@pytest.mark.parametrize("event, prior, found, expected", [
    ("A01", None, {("PI", "H", "1"): 7}, identity.Target(patient=7)),
    ("A01", None, {}, identity.Target()),                                     # a new patient
    ("A40", "2", {("PI", "H", "1"): 7, ("PI", "H", "2"): 8}, identity.Target(patient=7, absorbed=8)),
    ("A40", "2", {("PI", "H", "2"): 8}, identity.Target(absorbed=8, new_survivor=True)),
    ("A40", "2", {("PI", "H", "1"): 7, ("PI", "H", "2"): 7}, identity.Target(patient=7)),   # merged already
    ("A47", "2", {("PI", "H", "2"): 8}, identity.Target(patient=8)),          # the old IPP's record
    ("A47", "2", {("PI", "H", "1"): 7, ("PI", "H", "2"): 7}, identity.Target(patient=7)),
])
def test_resolve(event, prior, found, expected):
    f = facts(event, prior=prior)
    assert set(found) <= set(identity.lookups(f))
    assert identity.resolve(f, found) == expected


def test_a47_to_an_ipp_of_another_record_is_refused_and_falls_back_to_the_ins():
    t = identity.resolve(facts("A47", prior="2"), {("PI", "H", "1"): 7, ("PI", "H", "2"): 8})
    assert t.refusal[0] == identity.DUPLICATE_KEY and "A40" in t.refusal[1]
    f = facts("A47", prior="2", prior_ins="123")
    assert ("INS", "O", "123") in identity.lookups(f)
    assert identity.resolve(f, {("INS", "O", "123"): 9}) == identity.Target(patient=9)


def test_merged_headers_and_the_prior_ipp_dropped():
    survivor = PatientState(identifiers=(("PI", "H", "1"),), next_seq=5)
    head, offset = identity.merged(survivor, PatientState(next_seq=3, known=True))
    assert (offset, head.next_seq, head.known, head.identifiers) == (5, 8, True, (("PI", "H", "1"),))
    s = PatientState(identifiers=(("PI", "H", "2"), ("INS", "O", "9")))
    assert identity.without_prior(s, facts("A47", prior="2")).identifiers == (("INS", "O", "9"),)
    assert identity.without_prior(s, facts("A31", prior="2")) == s


@pytest.mark.parametrize("raw, last, action, expected, code", [
    ("", 4, sequence.REFUSE, 5, sequence.SEQ_MISSING),
    ("x1", 4, sequence.REFUSE, 5, sequence.SEQ_MALFORMED),
    ("-2", None, sequence.REFUSE, -1, sequence.SEQ_MALFORMED),
    ("0", 4, sequence.START, 5, None),
    ("0", None, sequence.START, -1, None),
    ("-1", 4, sequence.RESYNCHRONISE, -1, None),
    ("7", 4, sequence.REFUSE, 5, sequence.SEQ_GAP),
    ("3", 4, sequence.EARLIER, 5, None),
    ("5", 4, sequence.APPLY, 5, None),
    ("42", None, sequence.APPLY, -1, None),     # the first number accepted sets the link's
])
def test_sequence_verdicts(raw, last, action, expected, code):
    v = sequence.verdict(raw, last)
    assert (v.action, v.expected) == (action, expected)
    assert (v.refusal[0] if v.refusal else None) == code
    if action == sequence.EARLIER:
        assert sequence.reused(v)[0] == sequence.SEQ_REUSED
