"""Problems (AE) and rejections (AR): segment, field and table 0357 code, never an exception."""

import pytest

import mappings
from tests.mappings.conftest import adt, run

P = "2.11^IHE_FRANCE-2.11-PAM"


def where(ex):
    return [(p.segment, p.field, p.code) for p in ex.problems]


def test_a08_is_rejected_with_the_reason(shipped):
    _, ex = run(shipped, adt("A08"))
    assert (ex.rejection.segment, ex.rejection.field, ex.rejection.code) == ("MSH", 9, 201)
    assert "excluded in France" in ex.rejection.text
    assert ex.facts["message.control_id"] == "MSGA08"      # enough to journal it


def test_unknown_event_and_non_adt(shipped):
    _, ex = run(shipped, adt("A99"))
    assert ex.rejection.code == 201
    _, ex = run(shipped, adt("O01", mtype="ORM"))
    assert ex.rejection.code == 200 and "ORM" in ex.rejection.text


def test_required_fields_of_zbe(shipped):
    _, ex = run(shipped, adt(profile=P, zbe="||||N"))
    assert where(ex) == [("ZBE", 1, 101), ("ZBE", 2, 101), ("ZBE", 4, 101)]
    assert "ZBE-4 (movement.action) is required on A01" in ex.problems[2].text


def test_zbe6_required_on_update_and_cancel_only(shipped):
    _, ex = run(shipped, adt("Z99", profile=P, zbe="M1|20250101080000||UPDATE|N"))
    assert where(ex) == [("ZBE", 6, 101)]
    _, ex = run(shipped, adt("Z99", profile=P, zbe="M1|20250101080000||UPDATE|N|A01"))
    assert ex.ok and ex.facts["movement.original_trigger"] == "A01"


def test_bad_action_bad_historic_bad_date(shipped):
    _, ex = run(shipped, adt(profile=P, zbe="M1|2025-01-01||MODIFY|X"))
    assert where(ex) == [("ZBE", 2, 102), ("ZBE", 4, 103), ("ZBE", 5, 103)]
    assert "not an HL7 TS" in ex.problems[0].text


def test_movement_without_pv1_or_zbe(shipped):
    _, ex = run(shipped, adt("A03", profile=P, pv1=False))
    assert [(p.segment, p.field, p.code) for p in ex.problems] == [("PV1", None, 100), ("ZBE", None, 100)]


@pytest.mark.parametrize("event,structure,mrg", [("A28", "ADT_A05", None), ("A31", "ADT_A05", None),
                                                 ("A40", "ADT_A39", "1^^^X^PI"), ("A47", "ADT_A30", "1^^^X^PI")])
def test_patient_level_events_need_no_visit(shipped, event, structure, mrg):
    _, ex = run(shipped, adt(event, structure=structure, pv1=False, mrg=mrg, profile=P))
    assert ex.ok, ex.problems


def test_merge_without_mrg(shipped):
    _, ex = run(shipped, adt("A40", structure="ADT_A39", pv1=False, profile=P))
    assert where(ex) == [("MRG", None, 100)]


def test_patient_needs_a_pi(shipped):
    _, ex = run(shipped, adt(profile=P, pid3="279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"))
    assert where(ex) == [("PID", 3, 101)]
    assert "PID-3[5=PI]-1" in ex.problems[0].text


def test_explicit_null_on_a_required_field(shipped):
    _, ex = run(shipped, adt(profile=P, zbe='M1|20250101080000||""|N'))
    assert where(ex) == [("ZBE", 4, 101)]


def test_timestamps_with_offsets_and_fractions(shipped):
    text = adt(profile=P).replace("EVN||20250101080500", "EVN||20250101080500.25+0100")
    _, ex = run(shipped, text)
    t = ex.facts["message.recorded_at"]
    assert (t.microsecond, t.utcoffset().total_seconds()) == (250000, 3600)
    _, ex = run(shipped, adt(profile=P).replace("EVN||20250101080500", "EVN||20251301"))
    assert where(ex) == [("EVN", 2, 102)]


@pytest.mark.parametrize("zfa, field", [("|||||||||NA||IC~INC|20250101080000", 11),
                                        ("|ACTIF~FERME|20250101080000|||||||NA||NA", 1),
                                        ("|ACTIF|20250101080000|||||||IO|20250101080000~|IC~|20250101080000~2", 12)])
def test_a_second_value_in_a_zfa_field_is_a_data_type_error(shipped, zfa, field):
    _, ex = run(shipped, adt(profile=P, zfa=zfa))
    assert where(ex) == [("ZFA", field, 102)]
    assert f"ZFA-{field} holds 2 repetitions" in ex.problems[0].text


def test_an_empty_repetition_after_the_value_and_a_field_no_fact_reads_are_not_refused(shipped):
    # ZFA-13 is read by no mapping: what it holds is not looked at
    _, ex = run(shipped, adt(profile=P, zfa="|ACTIF|20250101080000|||||||NA||IC~|20250101080000|X~Y"))
    assert ex.ok and ex.facts["consult"] == "consent"


def test_a_site_mapping_can_let_zfa_fields_repeat(tmp_path):
    # a sender that pads ZFA-1 with a second repetition: the site's own mapping takes the first value, knowingly
    f = tmp_path / "site.yaml"
    f.write_text("mapping: site\nextends: pamfr-2.11.1\nmatch: [{application: GAM-PAD}]\n"
                 "segments:\n  ZFA: {once: true, single_valued: false}\n")
    _, ex = run(mappings.load([f]), adt(profile=P, app="GAM-PAD", zfa="|ACTIF~FERME|20250101080000"))
    assert ex.ok and ex.facts["dmp.status"] == "ACTIF"


def test_single_valued_is_true_or_false(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text("mapping: site\nextends: pamfr-2.11.1\nsegments:\n  ZFA: {single_valued: yes}\n")
    with pytest.raises(mappings.MappingFileError, match="segments.ZFA.single_valued: expected true or false"):
        mappings.load([f])
