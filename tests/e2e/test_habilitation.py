"""The habilitation matrix through POST /v1/decisions, on a real server: the known statements of the reference,
documents by type or category, the unknown-cell policy, administrative staff, an establishment's own table."""
import re
import textwrap
from datetime import datetime, timedelta

import pytest

from tests.builders import adt, zfa_2111
from tests.serving import Server, ack_code

P = {"id": "100001", "authority": "HOSP-T"}
ROW = re.compile(r"^mappings/habilitation\.yaml:\d+$")


def consented(server):
    when = (datetime.now() - timedelta(hours=1)).strftime("%Y%m%d%H%M%S")
    assert ack_code(server.send(adt("A01", zfa=zfa_2111("NA", "IC", when), when=when))) == "AA"
    return server


def ask(server, profession, document=None, role=None, user="u1"):
    body = {"patient": P, "action": "consult", "user": {"id": user}}
    if profession is not None:
        body["user"]["profession"] = profession
    if role:
        body["user"]["role"] = role
    if document is not None:
        body["document"] = document
    status, d = server.http("POST", "/v1/decisions", body)
    assert status == 200, d
    return d


@pytest.fixture
def shipped(tmp_path):
    s = Server(tmp_path).start()
    yield consented(s)
    s.stop()


def test_the_known_statements_hold(shipped):
    # dentists may not consult a psychiatric synthesis, nor advance directives
    d = ask(shipped, "40", {"type": "68599-0"})
    assert (d["decision"], d["reasons"]) == ("deny", ["profession.not_authorized"])
    h = d["habilitation"]
    assert (h["type"], h["category"], h["access"]) == ("68599-0", "11", "deny") and ROW.match(h["row"])
    assert ask(shipped, "40", {"type": "EXPPAT_3"})["reasons"] == ["profession.not_authorized"]
    # podiatrists may not consult a delivery report
    d = ask(shipped, "80", {"type": "15508-5"})
    assert (d["decision"], d["reasons"], d["habilitation"]["access"]) == ("deny", ["profession.not_authorized"], "deny")
    # physicians: everything but the certificate of residence
    d = ask(shipped, "10", {"type": "ATTEST-RESID"})
    assert (d["decision"], d["reasons"], d["habilitation"]["category"]) == ("deny", ["profession.not_authorized"], "95")
    d = ask(shipped, "10", {"type": "60591-5"})        # a medical synthesis
    assert (d["decision"], d["reasons"]) == ("permit", [])
    assert (d["habilitation"]["category"], d["habilitation"]["access"]) == ("11", "permit")
    assert ROW.match(d["habilitation"]["row"])
    d = ask(shipped, "10", {"category": "11"})
    assert (d["decision"], d["reasons"]) == ("permit", [])
    assert "68599-0" in d["habilitation"]["types"] and d["habilitation"]["categories"] == ["11"]


def test_a_type_gets_its_category_and_bad_documents_are_refused(shipped):
    assert ask(shipped, "10", {"type": "11488-4"})["habilitation"]["category"] == "10"
    for document, code in (({"type": "99999-9"}, "document.type_unknown"),
                           ({"type": "FEUILLE-DE-STYLE"}, "document.type_without_category"),
                           ({"category": "SYNTHESE"}, "document.category_unknown"),
                           ({"type": "11488-4", "category": "11"}, "document.category_mismatch"),
                           ({}, "field.invalid")):
        status, d = shipped.http("POST", "/v1/decisions", {"patient": P, "action": "consult",
                                                           "user": {"id": "u1", "profession": "10"},
                                                           "document": document})
        assert (status, d["error"]) == (400, code), document
        assert d["detail"].startswith("document")
    status, d = shipped.http("POST", "/v1/decisions", {"patient": P, "action": "consult", "category": "10",
                                                       "user": {"id": "u1", "profession": "10"}})
    assert (status, d["error"]) == (400, "field.unknown")


def test_without_a_document_the_answer_is_for_the_dmp_and_lists_what_may_be_consulted(shipped):
    d = ask(shipped, "10")
    assert (d["decision"], d["reasons"]) == ("permit", [])
    h = d["habilitation"]
    assert len(h["categories"]) == 11 and "ATTEST-RESID" not in h["types"] and "11488-4" in h["types"]
    # a nurse: no cell of the shipped matrix, so under the default policy (deny) nothing, and it says why
    d = ask(shipped, "60")
    assert (d["decision"], d["reasons"]) == ("deny", ["profession.not_authorized", "habilitation.unknown_cell"])
    assert (d["habilitation"]["types"], d["habilitation"]["unknown"]) == ([], "deny")
    d = ask(shipped, "60", {"type": "11488-4"})
    assert d["reasons"] == ["profession.not_authorized", "habilitation.unknown_cell"]
    assert (d["habilitation"]["access"], d["habilitation"]["row"]) == ("unknown", None)


def test_administrative_staff_never_consult(tmp_path):
    s = consented(Server(tmp_path, config={"habilitation": {"unknown": "permit"}}).start())
    try:
        # a user with no profession at all is the caller's error (400 user.profession_missing, issue 11);
        # administrative staff are named by a code that is not a G15 health profession
        status, d = s.http("POST", "/v1/decisions", {"patient": P, "action": "consult", "user": {"id": "a1"}})
        assert (status, d["error"]) == (400, "user.profession_missing")
        for profession in ("41", "ADM"):
            for document in (None, {"type": "11488-4"}):
                d = ask(s, profession, document)
                assert (d["decision"], d["reasons"]) == ("deny", ["profession.not_authorized"]), profession
                assert d["habilitation"]["why"] == "no G15 health profession"
        # break-glass does not make a health professional either
        status, d = s.http("POST", "/v1/decisions", {"patient": P, "action": "consult",
                                                     "user": {"id": "a1", "profession": "ADM"},
                                                     "mode": "bris_de_glace", "reason": "urgence"})
        assert status == 200 and d["reasons"] == ["profession.not_authorized"]
        # under `unknown: permit`, an unknown cell permits, and says so; a known cell still decides
        d = ask(s, "60", {"type": "11488-4"})
        assert (d["decision"], d["reasons"]) == ("permit", ["habilitation.unknown_cell"])
        assert ask(s, "40", {"type": "68599-0"})["reasons"] == ["profession.not_authorized"]
        d = ask(s, "40")
        assert (d["decision"], d["reasons"]) == ("permit", ["habilitation.unknown_cell"])
        assert "68599-0" not in d["habilitation"]["types"] and "11488-4" in d["habilitation"]["types"]
        assert len(d["habilitation"]["types"]) == 140 - 6
    finally:
        s.stop()


def test_an_establishment_table_with_roles(tmp_path):
    (tmp_path / "annex.csv").write_text("profession,role,type_code,access\n21,G,11502-2,permit\n"
                                        "21,,11502-2,deny\n", encoding="utf-8")
    table = tmp_path / "chu.yaml"
    table.write_text(textwrap.dedent("""
        habilitation:
          extends: shipped
          csv: annex.csv
          rows:
            - ["40", "68599-0", permit]
    """).lstrip(), encoding="utf-8")
    s = consented(Server(tmp_path, config={"habilitation": {"file": str(table)}}).start())
    try:
        d = ask(s, "21", {"type": "11502-2"}, role="G")     # a pharmacist biologist
        assert (d["decision"], d["reasons"]) == ("permit", [])
        assert d["habilitation"]["row"] == f"{tmp_path / 'annex.csv'}:2"
        d = ask(s, "21", {"type": "11502-2"}, role="A")
        assert (d["decision"], d["habilitation"]["row"]) == ("deny", f"{tmp_path / 'annex.csv'}:3")
        d = ask(s, "40", {"type": "68599-0"})
        assert (d["decision"], d["habilitation"]["row"]) == ("permit", f"{table}:5")
        d = ask(s, "10", {"type": "ATTEST-RESID"})
        assert (d["decision"], d["habilitation"]["row"][:27]) == ("deny", "mappings/habilitation.yaml:")   # inherited
        status, audit = s.http("GET", "/v1/audit?authority=HOSP-T&id=100001")
        last = audit["entries"][-1]["payload"]
        assert last["habilitation"]["row"] == d["habilitation"]["row"]
        assert last["request"]["document"] == {"type": "ATTEST-RESID", "category": "95"}
    finally:
        s.stop()


def test_a_bad_table_stops_the_start_with_file_and_line(tmp_path):
    table = tmp_path / "bad.yaml"
    table.write_text('habilitation:\n  rows:\n    - ["41", "11488-4", permit]\n', encoding="utf-8")
    with pytest.raises(RuntimeError) as e:
        Server(tmp_path, config={"habilitation": {"file": str(table)}}).start()
    assert f"{table}:3: profession: '41' is not a G15 profession code" in str(e.value)
