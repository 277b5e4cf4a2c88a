"""pamfr-2.11.1: ZFA-11 is CONSENT to consultation (NA/INC/IC), ZFA-9 opposition to feeding, dates 10/12."""

from datetime import datetime

import pytest

from tests.mappings.conftest import adt, run

PROFILE = "2.11^IHE_FRANCE-2.11-PAM"


@pytest.mark.parametrize("zfa9,zfa11,feed,consult", [
    ("INO", "IC", "no_opposition", "consent"),
    ("INO", "INC", "no_opposition", "refused"),
    ("IO", "INC", "opposed", "refused"),
    ("INO", "NA", "no_opposition", None),
    ("NA", "NA", None, None),
])
def test_consent_and_feed(shipped, zfa9, zfa11, feed, consult):
    zfa = f"|ACTIF|20250101|||||||{zfa9}|20250102|{zfa11}|20250103"
    sel, ex = run(shipped, adt(profile=PROFILE, zfa=zfa))
    assert sel.mapping.name == "pamfr-2.11.1"
    assert ex.ok, ex.problems
    assert ex.facts.get("feed") == feed
    assert ex.facts.get("consult") == consult
    if consult:
        assert ex.facts["consult.collected_at"] == datetime(2025, 1, 3)
        assert ex.facts["consult.code"] == zfa11
    else:
        assert "consult.collected_at" not in ex.facts
    if feed:
        assert ex.facts["feed.collected_at"] == datetime(2025, 1, 2)


def test_a_2_11_code_under_the_2_11_1_profile_is_a_table_error(shipped):
    _, ex = run(shipped, adt(profile=PROFILE, zfa="|||||||||NA||IO"))
    [p] = ex.problems
    assert (p.segment, p.field, p.code) == ("ZFA", 11, 103)
    assert "IO" in p.text


def test_header_visit_and_movement_facts(shipped):
    _, ex = run(shipped, adt(profile=PROFILE, zfa="|ACTIF"))
    f = ex.facts
    assert f["message.event"] == "A01" and f["message.version"] == "2.11" and f["message.profile"] == "2.11"
    assert f["message.recorded_at"] == datetime(2025, 1, 1, 8, 5)
    assert f["patient.ipp"] == "000042" and f["patient.ipp_authority"] == "CHU-X"
    assert f["patient.nda"] == "NDA77"
    assert f["visit.number"] == "V123" and f["visit.patient_class"] == "I"
    assert f["visit.admitted_at"] == datetime(2025, 1, 1, 8)
    assert f["movement.id"] == "M1" and f["movement.action"] == "INSERT" and f["movement.historic"] is False
    assert f["movement.uf_medical"] == "4001" and f["movement.uf_care"] == "4002"
    assert f["dmp.status"] == "ACTIF"
    assert f["professionals"] == [{"id": "801234567897", "authority": "ASIP-SANTE-PS", "type": "RPPS"}]
