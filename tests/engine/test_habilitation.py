"""The habilitation check, pure, and its configuration; `mappings explain` naming the row that decided."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from engine import config as configuration
from engine import habilitation, rules
from engine.domain import DecisionRequest, PatientState, Policy
from engine.assembly import build_pipeline
from mappings import habilitation as tables
from tests.builders import adt, zfa_2111

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)


def load(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return configuration.load(str(path), environ={})


def test_the_policy_and_the_file_reach_the_pipeline(tmp_path):
    assert build_pipeline(load(tmp_path, {})).policy.habilitation_unknown == "deny"
    table = tmp_path / "t.csv"
    table.write_text("60,11488-4,permit\n")
    p = build_pipeline(load(tmp_path, {"habilitation": {"file": str(table), "unknown": "permit"}})).policy
    assert p.habilitation_unknown == "permit" and p.habilitation.cell("60", None, "11488-4").row == f"{table}:1"
    # the form of earlier versions, `habilitation: FILE`, still names the file
    assert load(tmp_path, {"habilitation": str(table)}).habilitation_file() == str(table)


@pytest.mark.parametrize("section, problem", [
    ({"unknown": "maybe"}, "habilitation.unknown: Input should be 'deny' or 'permit'"),
    ({"fil": "x.yaml"}, "habilitation.fil: unknown key"),
])
def test_a_wrong_habilitation_setting_stops_the_start(tmp_path, section, problem):
    with pytest.raises(configuration.ConfigError) as e:
        load(tmp_path, {"habilitation": section})
    assert problem in str(e.value)


def test_judge_by_type_category_and_for_the_whole_dmp():
    m = tables.load()
    j = habilitation.judge(m, "deny", "40", None, "68599-0", "11")
    assert (j.reasons, j.answer["access"]) == (("profession.not_authorized",), "deny")
    j = habilitation.judge(m, "permit", "40", None, None, "11")
    assert j.info == ("habilitation.unknown_cell",) and not j.reasons
    assert {"68599-0", "83901-9"}.isdisjoint(j.answer["types"]) and "60591-5" in j.answer["types"]
    assert j.answer["categories"] == ["11"]
    j = habilitation.judge(m, "deny", "10", None)
    assert (j.reasons, j.info, len(j.answer["types"])) == ((), (), 139)
    assert habilitation.judge(None, "deny", None, None) == habilitation.Judgement((), (), None)
    with pytest.raises(habilitation.UnknownDocument) as e:
        habilitation.document(m.reference, "11488-4", "11")
    assert e.value.code == "document.category_mismatch"
    assert habilitation.document(m.reference, "11488-4", None) == ("11488-4", "10")


def test_a_physicians_specialty_counts_as_the_role(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("10,SM26,ATTEST-RESID,permit\n")
    policy = Policy(habilitation=tables.load(table))
    changes, _ = rules.apply(PatientState(), {"message.event": "A01", "message.recorded_at": T0, "consult": "consent",
                                              "visit.number": "V1"}, {}, policy, T0)
    state = changes.state

    def ask(**user):
        return rules.decide(state, DecisionRequest(action="consult", user="u", profession="10", at=T0,
                                                   document_type="ATTEST-RESID", category="95", **user), policy, T0)
    assert ask(specialty="SM26").decision == "permit"
    assert ask(role="SM26", specialty="SM54").decision == "permit"
    d = ask(role="SM54", specialty="SM26")
    assert (d.decision, d.reasons) == ("deny", ("profession.not_authorized", "habilitation.unknown_cell"))


def test_mappings_explain_names_the_row_that_decided(tmp_path):
    msg = tmp_path / "m.hl7"
    msg.write_text(adt("A01", zfa=zfa_2111("NA", "IC", "20250106090000")))
    cfg = tmp_path / "config.yaml"
    cfg.write_text("{}\n")

    def explain(*args):
        return subprocess.run([sys.executable, "-m", "pamgate.cli", "mappings", "explain", str(msg), "--config",
                               str(cfg), *args], capture_output=True, text=True, cwd=tmp_path)
    out = explain("--profession", "40", "--type", "68599-0")
    assert out.returncode == 0, out.stderr
    row = next(l for (p, _, t), l in ((k, c.row) for k, c in tables.load().cells.items())
               if p == "40" and t == "68599-0")
    assert f"habilitation deny: profession 40, type 68599-0 (category 11): row {row}" in out.stdout
    out = explain("--profession", "60", "--category", "11")
    assert "consult: deny ['profession.not_authorized', 'habilitation.unknown_cell']" in out.stdout
    out = explain("--type", "99999-9")
    assert (out.returncode, out.stderr) == (2, "pamgate: --type: '99999-9' is not a known DMP document type code\n")
