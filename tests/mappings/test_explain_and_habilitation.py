import subprocess
import sys
import textwrap

import pytest
import yaml

from mappings import habilitation
from mappings.check import check_files
from mappings.explain import as_dict, describe
from tests.mappings.conftest import REPO, adt, run


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


SHARED = REPO.parent / "shared" / "reference" / "dmp-habilitation-matrix.yaml"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"the shared reference file is not here ({SHARED}): "
                                  "the shipped data cannot be compared with its source")
TRE_A03 = ["10", "11", "31", "42", "43", "44", "45", "52", "60", "90", "95"]


def shared():
    return yaml.safe_load(SHARED.read_text(encoding="utf-8"))


def test_shipped_matrix_holds_the_known_statements_and_nothing_else():
    m = habilitation.load()
    ref = m.reference
    assert list(ref.categories) == TRE_A03
    assert ref.types["11488-4"] == "10" and ref.types["68599-0"] == "11" and ref.types["ATTEST-RESID"] == "95"
    assert "FEUILLE-DE-STYLE" not in ref.types and ref.without_category == {"FEUILLE-DE-STYLE": "99"}
    assert ref.professions["31"]["label"] == "Assistant dentaire"
    assert ref.professions["35"] == {"label": "Aide-soignant", "status": "deprecated", "deprecated_on": "2024-12-13"}
    assert "41" not in ref.professions
    # physicians: every type but ATTEST-RESID; dentists: six exclusions; podiatrists: one; no other cell
    assert {p for p, _, _ in m.cells} == {"10", "40", "80"}
    assert {t for (p, _, t), c in m.cells.items() if p == "10" and c.access == "permit"} == \
        set(ref.types) - {"ATTEST-RESID"}
    assert m.cell("10", None, "ATTEST-RESID").access == "deny"
    assert {t for (p, _, t), c in m.cells.items() if p == "40"} == \
        {"80788-3", "75496-0", "83981-1", "83901-9", "68599-0", "EXPPAT_3"}
    assert all(c.access == "deny" for (p, _, _), c in m.cells.items() if p in ("40", "80"))
    assert m.cell("80", "x", "15508-5").access == "deny"
    assert m.cell("60", None, "11488-4") is None            # unknown, not denied
    assert m.cell("10", None, "ATTEST-RESID").row.startswith("mappings/habilitation.yaml:")


@needs_shared
def test_the_product_knows_the_g15_codes_categories_and_types_of_the_shared_reference():
    src = shared()
    ref = habilitation.reference()
    assert {c: (p["label"], p["status"]) for c, p in src["professions_g15"].items()} == \
        {c: (p["label"], p["status"]) for c, p in ref.professions.items()}
    assert {c: v["label"] for c, v in src["categories"]["codes"].items()} == ref.categories
    types = src["type_to_category"]["codes"]
    assert {t: v["category"] for t, v in types.items() if v["category"] in ref.categories} == ref.types
    assert {t for t, v in types.items() if v["category"] not in ref.categories} == set(ref.without_category)
    assert set(ref.g05) == set(src["vihf_subject_role"]["g05_sections"])


@needs_shared
def test_the_script_regenerates_the_shipped_files(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "habilitation-reference"), "--reference",
                          str(SHARED), "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in ("habilitation.yaml", "reference/dmp-reference.yaml"):
        assert (tmp_path / name).read_text() == (REPO / "mappings" / name).read_text(), name


def test_the_script_says_when_the_shared_file_is_missing(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "habilitation-reference"), "--reference",
                          str(tmp_path / "none.yaml"), "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "none.yaml: no such file" in out.stderr


def write(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return f


def test_an_establishment_table_extends_and_overrides_the_shipped_one(tmp_path):
    write(tmp_path, "annex.csv", """
        profession,role,type_code,access
        # transcribed from the annex, page 3
        60,,11488-4,permit
        21,G,11502-2,permit
    """)
    f = write(tmp_path, "chu.yaml", """
        habilitation:
          source: "annex of the arrêté, transcribed by the CHU"
          extends: shipped
          rows:
            - ["40", "68599-0", permit]
            - ["10", "", "ATTEST-RESID", unknown]
          csv: annex.csv
    """)
    assert check_files([f]) == []
    m = habilitation.load(f)
    assert m.cell("40", None, "68599-0") == habilitation.Cell("permit", f"{f}:5")      # overridden
    assert m.cell("40", None, "EXPPAT_3").access == "deny"                             # inherited
    assert m.cell("10", None, "ATTEST-RESID").access == "unknown"                      # erased
    assert m.cell("60", None, "11488-4") == habilitation.Cell("permit", f"{tmp_path / 'annex.csv'}:3")
    assert m.cell("21", "G", "11502-2").access == "permit"
    assert m.cell("21", "A", "11502-2") is None and m.cell("21", None, "11502-2") is None
    # a bare CSV is a whole table of its own
    assert {k[0] for k in habilitation.load(tmp_path / "annex.csv").cells} == {"60", "21"}


def test_matrix_problems_name_file_and_line(tmp_path):
    csv_file = write(tmp_path, "annex.csv", """
        profession,role,type_code,access
        60,,11488-4,permit
        60,,11488-4,deny
        60,11488-4
    """)
    f = write(tmp_path, "h.yaml", """
        habilitation:
          extends: shipped
          rows:
            - ["41", "11488-4", deny]
            - ["10", "99999-9", deny]
            - ["10", "FEUILLE-DE-STYLE", deny]
            - ["40", "11488-4", maybe]
            - ["21", "Z", "11488-4", deny]
            - ["50", "11488-4", permit]
            - ["50", "11488-4", deny]
          csv: annex.csv
          categories: {}
    """)
    assert check_files([f]) == [
        f"{csv_file}:3: row: duplicate row: profession 60, role (any), type 11488-4 (first at {csv_file}:2)",
        f"{csv_file}:4: row: expected profession, [role,] type_code, access: 2 values",
        f"{f}:4: profession: '41' is not a G15 profession code (TRE_G15-ProfessionSante; known: "
        + ", ".join(habilitation.reference().professions) + ")",
        f"{f}:5: type_code: '99999-9' is not a known document type code (LOINC or TRE_A05 of the reference, "
        "mappings/reference/dmp-reference.yaml)",
        f"{f}:6: type_code: 'FEUILLE-DE-STYLE' is in no DMP category: its class 99 is none of the 11",
        f"{f}:7: access: 'maybe': expected permit, deny or unknown",
        f"{f}:8: role: 'Z' is not a pharmacist's TRE_G05 section (" + ", ".join(sorted(habilitation.reference().g05))
        + ")",
        f"{f}:10: row: duplicate row: profession 50, role (any), type 11488-4 (first at {f}:9)",
        f"{f}:12: habilitation.categories: unknown key; expected one of: description, source, extends, rows, csv",
    ]
    with pytest.raises(habilitation.MappingFileError) as e:
        habilitation.load(f)
    assert str(e.value) in check_files([f]) and len(e.value.errors) == 9


def test_extends_a_missing_file_or_itself(tmp_path):
    f = write(tmp_path, "a.yaml", "habilitation:\n  extends: b.yaml\n")
    write(tmp_path, "b.yaml", "habilitation:\n  extends: a.yaml\n")
    assert [l.split(": ")[1] for l in check_files([f])] == ["habilitation.extends"]
    g = write(tmp_path, "c.yaml", "habilitation:\n  extends: nowhere.yaml\n")
    assert check_files([g]) == [f"{g}:2: habilitation.extends: no such file {tmp_path / 'nowhere.yaml'} "
                                "(give `shipped` or a path relative to this file)"]
