"""Which mapping a message gets, and why."""

import pytest

import mappings
from tests.mappings.conftest import adt, run


@pytest.mark.parametrize("minor", ["2.4", "2.5", "2.6", "2.7", "2.8", "2.9", "2.10", "2.10.5"])
def test_versions_up_to_2_10_choose_the_legacy_layout(shipped, minor):
    sel, _ = run(shipped, adt(version=f"2.5^FRA^{minor}"))
    assert sel.mapping.name == "pamfr-2.10"
    assert f"MSH-12.3 = {minor}" in sel.why


def test_msh21_profile_names_2_11_1(shipped):
    sel, _ = run(shipped, adt(profile="2.11^IHE_FRANCE-2.11-PAM", zfa="|||||||||NA||NA"))
    assert sel.mapping.name == "pamfr-2.11.1"
    assert "MSH-21 = 2.11^IHE_FRANCE-2.11-PAM" in sel.why


@pytest.mark.parametrize("code,layout", [("IC", "pamfr-2.11.1"), ("INC", "pamfr-2.11.1"),
                                         ("IO", "pamfr-2.11"), ("INO", "pamfr-2.11")])
def test_without_profile_the_zfa11_codes_decide(shipped, code, layout):
    sel, ex = run(shipped, adt(zfa=f"|||||||||NA||{code}"))
    assert sel.mapping.name == layout
    assert f"ZFA-11 = {code}, a code of this layout" in sel.why
    assert ex.ok


def test_without_profile_or_deciding_code_2_11_is_read_as_2_11(shipped):
    sel, _ = run(shipped, adt(zfa="|||||||||NA||NA"))
    assert sel.mapping.name == "pamfr-2.11"
    assert "no more specific rule matched" in sel.why and "ZFA-11 = NA" in sel.why


def test_unknown_version_falls_back_to_the_default(shipped):
    sel, _ = run(shipped, adt(version="2.5"))
    assert sel.mapping.name == "pamfr-2.11.1"
    assert "default" in sel.why


def test_a_sender_rule_beats_profile_and_codes():
    ms = mappings.load(senders=[{"application": "GAM", "facility": "CHU-X", "mapping": "pamfr-2.10"},
                                {"application": "GAM", "mapping": "pamfr-2.11"}])
    sel, _ = run(ms, adt(profile="2.11^IHE_FRANCE-2.11-PAM", zfa="|||||||||NA||IC"))
    assert sel.mapping.name == "pamfr-2.10"          # the more specific sender rule
    assert "sender rule" in sel.why and "MSH-3 = GAM" in sel.why and "MSH-4 = CHU-X" in sel.why
    sel, _ = run(ms, adt(facility="OTHER"))
    assert sel.mapping.name == "pamfr-2.11"
    sel, _ = run(ms, adt(app="ELSE", zfa="|||||||||NA||IC"))
    assert sel.mapping.name == "pamfr-2.11.1"


def test_senders_file_with_version_condition_and_default_off(tmp_path):
    f = tmp_path / "senders.yaml"
    f.write_text("senders:\n  - {application: CPAGE, version: '2.11', mapping: pamfr-2.11.1}\ndefault: ~\n")
    ms = mappings.load(senders=f)
    assert run(ms, adt(app="CPAGE", zfa="|||||||||NA||NA"))[0].mapping.name == "pamfr-2.11.1"
    assert run(ms, adt(app="CPAGE", version="2.5^FRA^2.9"))[0].mapping.name == "pamfr-2.10"
    sel, ex = run(ms, adt(version="2.5"))            # no rule, no default: AR 203, never an exception
    assert ex.rejection is not None and ex.rejection.code == 203
    assert "no default mapping" in sel.why


def test_config_rules_may_be_pydantic_like_objects():
    class Rule:
        def model_dump(self, exclude_none=True):
            return {"application": "GAM", "mapping": "pamfr-2.10"}
    ms = mappings.load(senders=[Rule()])
    assert run(ms, adt())[0].mapping.name == "pamfr-2.10"
