"""Against the real message sets beside the project (../shared/samples), never copied into it."""

from pathlib import Path

import pytest

import mappings
from tests.mappings.conftest import SAMPLES

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(),
                                reason=f"the shared samples are not at {SAMPLES} (../shared/samples from the repo)")


def run(ms, path: Path, encoding: str):
    msg = mappings.Message.parse(path.read_text(encoding=encoding))
    sel = ms.select(msg)
    return sel, sel.mapping.extract(msg)


def test_every_cpage_message_maps_without_problem(shipped):
    files = sorted((SAMPLES / "cpage-gam-2025").glob("*.hl7"))
    assert len(files) == 200
    events = set()
    for f in files:
        sel, ex = run(shipped, f, "latin-1")
        assert ex.rejection is None and ex.problems == [], (f.name, ex.rejection, ex.problems)
        assert ex.facts["message.control_id"] == f.stem
        assert ex.facts["patient.ipp"]
        events.add(ex.facts["message.event"])
        if ex.facts["message.version"] == "2.4":
            assert sel.mapping.name == "pamfr-2.10"
            assert ex.facts["block.break_glass"] is False and ex.facts["facility_authorization"] is False
        else:
            assert sel.mapping.name == "pamfr-2.11"
            assert not any(k.startswith(("consult", "feed")) for k in ex.facts)   # all NA
    assert events == {"A28", "A31", "Z99", "A03", "A04", "A05", "A47", "A13", "A06", "A44", "A40", "A01"}


def test_cpage_ins_deletion(shipped):
    _, ex = run(shipped, SAMPLES / "cpage-gam-2025" / "1117925160.hl7", "latin-1")
    assert ex.facts["patient.ins"] == mappings.DELETE
    assert ex.facts["prior.ins"] == "547839633619104"
    assert ex.facts["prior.ins_oid"] == "1.2.250.1.213.1.4.8"


@pytest.mark.parametrize("name,feed,consult", [
    ("ConsentementConsultation_NonOppositionAlimentation", "no_opposition", "consent"),
    ("NonConsentementConsultation_NonOppositionAlimentation", "no_opposition", "refused"),
    ("NonConsentementConsultation_OppositionAlimentation", "opposed", "refused"),
    ("NonRecueillieConsentementConsultation_NonOppositionAlimentation", "no_opposition", None),
    ("NonRecueillieConsentementConsultation_NonRecueillieOppositionAlimentation", None, None),
])
def test_ans_consent_examples(shipped, name, feed, consult):
    sel, ex = run(shipped, SAMPLES / "ans-consent" / f"{name}.er7", "utf-8")
    assert sel.mapping.name == "pamfr-2.11.1"
    assert ex.ok, ex.problems
    assert ex.facts.get("feed") == feed
    assert ex.facts.get("consult") == consult
    assert ex.facts["patient.ipp"] == "000003" and ex.facts["patient.ins"] == "279035121518989"
    assert ex.facts["patient.ins_oid"] == "1.2.250.1.213.1.4.10"


def test_ans_malformed_zbe_gives_clear_problems(shipped):
    _, ex = run(shipped, SAMPLES / "ans-sgl" / "sortie.er7", "utf-8")
    assert ex.rejection is None
    got = {(p.segment, p.field, p.code) for p in ex.problems}
    assert got == {("ZBE", 4, 101), ("ZBE", 5, 103), ("ZBE", 3, 102)}
    assert any("'INSERT' is not Y or N" in p.text for p in ex.problems)


def test_ans_admission_is_clean(shipped):
    _, ex = run(shipped, SAMPLES / "ans-sgl" / "admission.er7", "utf-8")
    assert ex.ok and ex.facts["consult"] == "consent"
