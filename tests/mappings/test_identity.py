"""Identity rules, all expressed in pamfr-base.yaml: VALI, NH, INS OIDs, "" deletion, MRG."""

import pytest

from mappings import DELETE
from tests.mappings.conftest import adt, run

IPP = "000042^^^CHU-X&1.2.250.1.71.4.2.2&ISO^PI"


def ins(value, oid="1.2.250.1.213.1.4.8", kind="INS"):
    return f"{value}^^^ASIP-SANTE-INS-NIR&{oid}&ISO^{kind}"


@pytest.mark.parametrize("oid", ["1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10",
                                 "1.2.250.1.213.1.4.11"])
def test_ins_kept_on_a_qualified_identity_for_every_ins_oid(shipped, oid):
    _, ex = run(shipped, adt(pid3=f"{IPP}~{ins('279035121518989', oid)}"))
    assert ex.facts["patient.ins"] == "279035121518989"
    assert ex.facts["patient.ins_oid"] == oid


def test_ins_dropped_unless_vali(shipped):
    _, ex = run(shipped, adt(pid3=f"{IPP}~{ins('279035121518989')}", pid32="PROV"))
    assert "patient.ins" not in ex.facts and "patient.ins_oid" not in ex.facts
    assert ex.facts["patient.identity_status"] == "PROV"
    assert [f.name for f in ex.ignored] == ["patient.ins"]


def test_billing_nir_and_unknown_oid_are_not_the_ins(shipped):
    _, ex = run(shipped, adt(pid3=f"{IPP}~{ins('179035121518989', kind='NH')}~{ins('2', oid='1.2.3')}"))
    assert "patient.ins" not in ex.facts
    _, ex = run(shipped, adt(pid3=f"{IPP}~{ins('179035121518989', kind='NH')}~{ins('279035121518989')}"))
    assert ex.facts["patient.ins"] == "279035121518989"


def test_explicit_null_deletes_the_ins_and_mrg_names_the_old_one(shipped):
    text = adt("A47", structure="ADT_A30", pv1=False, pid3=f"{IPP}~{ins(chr(34) * 2)}",
               mrg=ins("111111111111111"))
    sel, ex = run(shipped, text)
    assert ex.ok, ex.problems
    assert ex.facts["patient.ins"] == DELETE
    assert ex.facts["patient.ins_oid"] == "1.2.250.1.213.1.4.8"
    assert ex.facts["prior.ins"] == "111111111111111"
    # deleting is safe even on an identity that is not qualified
    _, ex = run(shipped, text.replace("|VALI", "|PROV"))
    assert ex.facts["patient.ins"] == DELETE


def test_empty_means_no_change(shipped):
    _, ex = run(shipped, adt(pid3=f"{IPP}~^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"))
    assert "patient.ins" not in ex.facts


def test_merge_gives_the_absorbed_patient(shipped):
    _, ex = run(shipped, adt("A40", structure="ADT_A39", pv1=False,
                             mrg="000041^^^CHU-X&1.2.250.1.71.4.2.2&ISO^PI"))
    assert ex.ok, ex.problems
    assert (ex.facts["prior.ipp"], ex.facts["prior.ipp_authority"]) == ("000041", "CHU-X")


def test_move_account_gives_prior_patient_and_account(shipped):
    _, ex = run(shipped, adt("A44", structure="ADT_A43", pv1=False,
                             mrg="000041^^^CHU-X^PI||NDA77^^^CHU-X^AN"))
    assert ex.ok, ex.problems
    assert ex.facts["prior.ipp"] == "000041" and ex.facts["prior.nda"] == "NDA77"
    assert ex.facts["patient.nda"] == "NDA77"


@pytest.mark.parametrize("nir_oid", ["1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"])
def test_the_ins_is_the_nir_when_the_nia_comes_first(shipped, nir_oid):
    # PAM FR 2.11.1 §4.4.1, said in pamfr-base.yaml's `prefer:`; the OID follows the same repetition
    nia = ins("780019912345678", "1.2.250.1.213.1.4.9")
    _, ex = run(shipped, adt(pid3=f"{IPP}~{nia}~{ins('279035121518989', nir_oid)}"))
    assert (ex.facts["patient.ins"], ex.facts["patient.ins_oid"]) == ("279035121518989", nir_oid)
    # the NIA alone is still the INS
    _, ex = run(shipped, adt(pid3=f"{IPP}~{nia}"))
    assert (ex.facts["patient.ins"], ex.facts["patient.ins_oid"]) == ("780019912345678", "1.2.250.1.213.1.4.9")


def test_mrg1_nir_is_chosen_over_the_nia(shipped):
    mrg = f"{ins('780019912345678', '1.2.250.1.213.1.4.9')}~{ins('111111111111111')}"
    _, ex = run(shipped, adt("A47", structure="ADT_A30", pv1=False, mrg=mrg))
    assert (ex.facts["prior.ins"], ex.facts["prior.ins_oid"]) == ("111111111111111", "1.2.250.1.213.1.4.8")
