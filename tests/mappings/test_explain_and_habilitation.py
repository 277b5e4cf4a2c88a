import pytest

from mappings import habilitation
from mappings.check import check_files
from mappings.explain import as_dict, describe
from tests.mappings.conftest import adt, run


def test_explain_names_mapping_why_and_each_fact_with_its_path(shipped):
    sel, ex = run(shipped, adt(profile="2.11^IHE_FRANCE-2.11-PAM", zfa="|||||||||INO|20250102|NA|"))
    text = describe(sel, ex)
    assert text.splitlines()[0] == "mapping   pamfr-2.11.1  (extends pamfr-base)"
    assert "why       pamfr-2.11.1: version and profile rule" in text
    assert "outcome   AA (facts applied)" in text
    assert any(l.split()[:2] == ["feed", "ZFA-9"] and "'INO' -> 'no_opposition'" in l for l in text.splitlines())
    assert "consult  ZFA-11  'NA': not collected" in text
    d = as_dict(sel, ex)
    assert {"name": "patient.ipp", "path": "PID-3[5=PI]-1", "raw": "000042", "value": "000042"} in d["facts"]


def test_explain_shows_problems(shipped):
    sel, ex = run(shipped, adt(zbe="M1|20250101080000||INSERT|Q"))
    text = describe(sel, ex)
    assert "outcome   AE (refused)" in text and "ZBE-5: ZBE-5 (movement.historic): 'Q' is not Y or N" in text


def test_shipped_matrix():
    m = habilitation.load()
    assert len(m) == 24
    every = m["10"]
    assert len(every) == 11
    for code in ("10", "21", "40", "50", "60"):
        assert m[code] == every
    for code in ("26", "70", "98"):
        assert m[code] == frozenset()


def test_matrix_validation(tmp_path):
    f = tmp_path / "h.yaml"
    f.write_text('habilitation:\n  categories: {A: "a"}\n  professions:\n'
                 '    "10": {label: x, consult: [A, B]}\n    "7": {label: y, consult: all, extra: 1}\n')
    with pytest.raises(habilitation.MappingFileError) as e:
        habilitation.load(f)
    assert str(e.value) == f"{f}:4: habilitation.professions.10.consult: unknown category B; known: A"
    lines = check_files([f])
    assert sorted(l.split(": ")[1] for l in lines) == ["habilitation.professions.10.consult",
                                                        "habilitation.professions.7",
                                                        "habilitation.professions.7.extra"]
