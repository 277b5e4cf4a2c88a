"""pamfr-2.10: PAM FR <= 2.10, ZFA-1..8, no consent field."""

from datetime import datetime

from tests.mappings.conftest import adt, run


def test_legacy_zfa_gives_status_authorization_and_blocks(shipped):
    text = adt(version="2.5^FRA^2.8", zfa="|ACTIF|20240101||Y|20240102|N|Y|20240103")
    sel, ex = run(shipped, text)
    assert sel.mapping.name == "pamfr-2.10"
    assert ex.ok, ex.problems
    f = ex.facts
    assert f["dmp.status"] == "ACTIF"
    assert f["dmp.collected_at"] == datetime(2024, 1, 1)
    assert f["facility_authorization"] is True
    assert f["facility_authorization.collected_at"] == datetime(2024, 1, 2)
    assert f["block.break_glass"] is False
    assert f["block.centre_15"] is True
    assert f["block.collected_at"] == datetime(2024, 1, 3)


def test_no_consent_fact_whatever_zfa_9_to_12_hold(shipped):
    sel, ex = run(shipped, adt(version="2.5^FRA^2.10", zfa="||||N||N|N|IO||IC|"))
    assert sel.mapping.name == "pamfr-2.10"
    assert not any(k.startswith(("consult", "feed")) for k in ex.facts)


def test_bad_yes_no_is_a_table_error(shipped):
    _, ex = run(shipped, adt(version="2.5^FRA^2.4", zfa="||||O"))
    assert [(p.segment, p.field, p.code) for p in ex.problems] == [("ZFA", 4, 103)]
