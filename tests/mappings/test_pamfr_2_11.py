"""pamfr-2.11: ZFA-11 is OPPOSITION to consultation (NA/IO/INO); ZFA-10/12 forbidden, ignored."""

import mappings
from tests.mappings.conftest import adt, run


def test_io_is_a_refusal_and_ino_is_not_consent_by_default(shipped):
    _, ex = run(shipped, adt(zfa="|ACTIF|20240101|||||||INO|20240102|IO|20240103"))
    assert ex.ok, ex.problems
    assert ex.facts["consult"] == "refused"
    assert ex.facts["consult.code"] == "IO"
    assert ex.facts["feed"] == "no_opposition"
    # the 2.11 layout forbids ZFA-10/12: no date is read from them
    assert "consult.collected_at" not in ex.facts and "feed.collected_at" not in ex.facts

    sel, ex = run(shipped, adt(zfa="|||||||||IO||INO"))
    assert sel.mapping.name == "pamfr-2.11"
    assert ex.facts["feed"] == "opposed"
    assert "consult" not in ex.facts and "consult.code" not in ex.facts     # INO: not collected


def test_ino_counts_as_legacy_consent_where_the_site_says_so(tmp_path):
    senders = {"senders": [{"application": "OLDGAM", "mapping": "pamfr-2.11",
                            "policy": {"ino_consult": "legacy_consent"}}]}
    ms = mappings.load(senders=senders)
    sel, ex = run(ms, adt(app="OLDGAM", zfa="|||||||||NA||INO"))
    assert sel.mapping.name == "pamfr-2.11"
    assert "ino_consult=legacy_consent" in sel.why
    assert ex.facts["consult"] == "legacy_consent"
    # other senders keep the safe default
    _, ex = run(ms, adt(app="GAM", zfa="|||||||||NA||INO"))
    assert "consult" not in ex.facts


def test_na_yields_no_fact(shipped):
    _, ex = run(shipped, adt(zfa="|||||||||NA||NA"))
    assert ex.ok
    assert not any(k.startswith(("consult", "feed")) for k in ex.facts)
    assert {f.name for f in ex.ignored} == {"feed", "consult"}
