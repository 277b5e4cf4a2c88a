"""`mappings check`: every problem as `file:line: key: problem`; `load` raises the first."""

import re
import textwrap

import pytest

import mappings
from mappings.check import check_files

LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+): (?P<key>\S+): (?P<problem>.+)$")


def write(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(textwrap.dedent(text).lstrip())
    return f


def one(lines, file):
    assert len(lines) == 1, lines
    m = LINE.match(lines[0])
    assert m and m["file"] == str(file), lines
    return int(m["line"]), m["key"], m["problem"]


def test_shipped_files_are_clean():
    assert check_files() == []


def test_unknown_key(tmp_path):
    f = write(tmp_path, "site.yaml", """
        mapping: site
        extends: pamfr-2.11
        facts:
          consult:
            path: ZFA-11
            requried: true
    """)
    assert one(check_files([f]), f) == (6, "facts.consult.requried", "unknown key; did you mean 'required'?")


def test_bad_path(tmp_path):
    f = write(tmp_path, "site.yaml", """
        mapping: site
        extends: pamfr-2.11
        facts:
          patient.nda: PID18
    """)
    line, key, problem = one(check_files([f]), f)
    assert (line, key) == (4, "facts.patient.nda.path") and "bad path 'PID18'" in problem


def test_unknown_state_and_unknown_policy_key(tmp_path):
    f = write(tmp_path, "site.yaml", """
        mapping: site
        extends: pamfr-2.11
        facts:
          consult:
            codes: {NA: ~, IO: refused, INO: consented, XX: $nope}
    """)
    lines = check_files([f])
    assert len(lines) == 2
    assert lines[0] == f"{f}:5: facts.consult.codes.INO: unknown state 'consented'; expected one of: consent, " \
                       "legacy_consent, refused, or ~ (no fact)"
    assert lines[1].startswith(f"{f}:5: facts.consult.codes.XX: unknown policy key 'nope'")


def test_unknown_fact_type_and_event(tmp_path):
    f = write(tmp_path, "site.yaml", """
        mapping: site
        extends: pamfr-2.11
        events:
          movement: [A01, B01]
        facts:
          consent: ZFA-11
          x.room: {path: PV1-3-3, type: number}
    """)
    lines = check_files([f])
    assert [LINE.match(x)["key"] for x in lines] == ["events.movement", "facts.consent", "facts.x.room.type"]
    assert "unknown event code 'B01'" in lines[0]
    assert "did you mean 'consult'?" in lines[1]


def test_cycle_of_extends(tmp_path):
    a = write(tmp_path, "a.yaml", "mapping: a\nextends: b\n")
    b = write(tmp_path, "b.yaml", "mapping: b\nextends: a\n")
    # one line, at the extends that closes the cycle, naming the whole cycle
    assert check_files([a, b]) == [f"{b}:2: extends: cycle of extends: a -> b -> a"]
    c = write(tmp_path, "c.yaml", "mapping: c\nextends: c\n")
    assert check_files([c]) == [f"{c}:2: extends: cycle of extends: c -> c"]


def test_missing_extends_target(tmp_path):
    f = write(tmp_path, "site.yaml", "mapping: site\nextends: pamfr-2.11.3\n")
    line, key, problem = one(check_files([f]), f)
    assert (line, key) == (2, "extends") and problem.startswith("unknown mapping 'pamfr-2.11.3'; did you mean")


def test_yaml_traps_are_caught(tmp_path):
    f = write(tmp_path, "site.yaml", "mapping: site\nextends: pamfr-2.11\nmapping: other\n")
    assert one(check_files([f]), f) == (3, "mapping", "duplicate key (first at line 1)")
    f = write(tmp_path, "bad.yaml", "mapping: site\n  extends: [\n")
    assert one(check_files([f]), f)[1] == "(yaml)"


def test_versions_stay_text(tmp_path):
    # YAML 1.1 would read 2.10 as the float 2.1; ours keeps it as written
    f = write(tmp_path, "site.yaml", """
        mapping: site
        extends: pamfr-2.10
        match:
          - {application: OLD, version: 2.10}
    """)
    assert check_files([f]) == []
    ms = mappings.load([f])
    assert [r.version.texts for r in ms.rules if r.mapping.name == "site"] == [("2.10",)]


def test_senders_file_is_checked_against_the_mappings(tmp_path):
    f = write(tmp_path, "senders.yaml", """
        senders:
          - {application: A, mapping: pamfr-2.12}
          - {application: B, mapping: pamfr-base}
          - {application: C, mapping: pamfr-2.11, policy: {ino_consult: consent_maybe}}
          - {mapping: pamfr-2.11}
    """)
    keys = [LINE.match(x)["key"] for x in check_files([f])]
    assert keys == ["senders[0].mapping", "senders[1].mapping", "senders[2].policy", "senders[3]"]


def test_load_raises_the_first_line(tmp_path):
    f = write(tmp_path, "site.yaml", "mapping: site\nextends: pamfr-2.11\nfacts:\n  feed: {path: ZFA-9, codes: {IO: objects}}\n")
    with pytest.raises(mappings.MappingFileError) as e:
        mappings.load([f])
    assert str(e.value) == f"{f}:4: facts.feed.codes.IO: unknown state 'objects'; expected one of: no_opposition, " \
                           "opposed, or ~ (no fact)"


def test_a_site_override_is_a_few_lines(tmp_path):
    f = write(tmp_path, "odd.yaml", """
        mapping: odd-gam
        extends: pamfr-2.10
        facts:
          block.break_glass: {path: ZFA-6, codes: {O: true, N: false}}    # a sender that writes O(ui)
          block.centre_15: ~                                               # and whose ZFA-7 means nothing
    """)
    ms = mappings.load([f], senders=[{"application": "ODD", "mapping": "odd-gam"}])
    from tests.mappings.conftest import adt, run
    sel, ex = run(ms, adt(app="ODD", version="2.5^FRA^2.5", zfa="||||N||O|Y"))
    assert sel.mapping.chain == ("odd-gam", "pamfr-2.10", "pamfr-base")
    assert ex.ok and ex.facts["block.break_glass"] is True and "block.centre_15" not in ex.facts
    assert ex.facts["facility_authorization"] is False          # inherited unchanged


def test_prefer_names_a_filtered_repetition_that_a_fact_reads(tmp_path):
    f = write(tmp_path, "site.yaml", """
        mapping: site
        extends: pamfr-2.11
        prefer:
          "PID-3[5=INS]": {4-2: "@ins_oids"}
    """)
    line, key, problem = one(check_files([f]), f)
    assert (line, key) == (4, "prefer.PID-3[5=INS]") and "no fact of this mapping reads" in problem
    f = write(tmp_path, "site2.yaml", """
        mapping: site2
        extends: pamfr-2.11
        prefer:
          "PID-3[5=INS,4-2=@ins_oids]-1": {4-2: "@nope"}
    """)
    line, key, problem = one(check_files([f]), f)
    assert (line, key) == (4, "prefer.PID-3[5=INS,4-2=@ins_oids]-1") and "no component" in problem
    f = write(tmp_path, "site3.yaml", """
        mapping: site3
        extends: pamfr-2.11
        prefer:
          "PID-3[5=INS,4-2=@ins_oids]": {4-2: "@nope"}
    """)
    assert one(check_files([f]), f)[1:] == ("prefer.PID-3[5=INS,4-2=@ins_oids].4-2", "unknown list '@nope'")
