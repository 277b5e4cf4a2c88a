"""`pamgate journal list|show|export` on a store a real server filled through its socket: found by time,
sender, event, ACK, MSH-10, IPP, visit; the ACK as sent; no identity unless --show-identities; the export
replays (issue 15)."""
from __future__ import annotations

import pytest

from tests.cli.run import one_line, pamgate
from tests.cli.served import fill
from tests.serving import ack_code


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("journal")
    server, acks, codes = fill(tmp)
    assert codes == ["AA", "AE", "AA"]
    return tmp, server.config_path, acks


def run(served, *args):
    tmp, config, _ = served
    p = pamgate(tmp, "journal", *args, "--config", config)
    assert p.returncode == 0, p.stderr
    return p.stdout


IDENTITIES = ("J-IPP-1", "J-VIS-1", "SECRETNAME", "ALICE")


def rows(out):
    return [line.split()[0] for line in out.splitlines()[1:] if line[:1].isdigit()]


def test_list_by_default_the_last_hour_without_identities(served):
    out = run(served, "list")
    assert rows(out) == ["1", "2", "3"]
    assert "J-1" in out and "J-2" in out          # MSH-10 is not an identity
    assert not any(i in out for i in IDENTITIES), out
    assert rows(run(served, "list", "--since", "PT0S")) == []
    assert rows(run(served, "list", "--since", "PT3H", "--until", "PT1H")) == []


@pytest.mark.parametrize("args, expected", [
    (("--ack", "AE"), ["2"]),
    (("--msh10", "J-1"), ["1", "3"]),
    (("--ipp", "J-IPP-1"), ["1", "3"]),
    (("--visit", "J-VIS-1"), ["1", "3"]),
    (("--sender", "GAM-T|HOSP-T", "--event", "A01"), ["1", "2", "3"]),
    (("--sender", "OTHER"), []),
    (("--event", "A03"), []),
    (("--since", "2020-01-01T00:00", "--until", "2099-01-01T00:00Z"), ["1", "2", "3"]),
])
def test_list_filters(served, args, expected):
    assert rows(run(served, "list", *args)) == expected


def test_show_identities_on_request(served):
    assert "J-IPP-1" in run(served, "list", "--ipp", "J-IPP-1", "--show-identities")


def test_show_gives_the_ack_as_sent_the_patient_and_the_events(served):
    _, _, acks = served
    out = run(served, "show", "1")
    sent = acks[0].strip("\r").split("\r")
    assert all(f"  {seg}" in out for seg in sent), (sent, out)   # the very ACK the sender got (MSH-7, MSH-10)
    assert not any(i in out for i in IDENTITIES), out
    assert "patient: #1 PI •••" in out and "consent.changed" in out
    refused = run(served, "show", "2")
    assert "errors: PID-3" in refused and "patient: none" in refused
    assert all(f"  {seg}" in refused for seg in acks[1].strip("\r").split("\r"))
    both = run(served, "show", "J-1")          # by MSH-10: the message and its duplicate
    assert "journal #1" in both and "journal #3" in both and "duplicate: already applied" in both
    shown = run(served, "show", "1", "--show-identities")
    assert all(i in shown for i in IDENTITIES), shown


@pytest.mark.parametrize("args, problem", [
    (("show", "nope"), "nope: no such journal id or MSH-10"),
    (("list", "--since", "yesterday"), "--since 'yesterday': not an ISO 8601"),
    (("list", "--ack", "OK"), "--ack 'OK'"),
])
def test_bad_input_is_one_line(served, args, problem):
    tmp, config, _ = served
    assert problem in one_line(pamgate(tmp, "journal", *args, "--config", config))


def test_export_replays(served, tmp_path):
    tmp, config, _ = served
    p = pamgate(tmp, "journal", "export", tmp_path / "out", "--msh10", "J-1", "--config", config)
    assert p.returncode == 0 and "2 message(s) written" in p.stdout, p.stderr
    files = sorted((tmp_path / "out").glob("*.hl7"))
    assert [f.name for f in files] == ["00000001-J-1.hl7", "00000003-J-1.hl7"]
    r = pamgate(tmp_path, "replay", tmp_path / "out")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "AA" in r.stdout


def test_journal_on_a_missing_store(tmp_path):
    db = tmp_path / "none.db"
    assert one_line(pamgate(tmp_path, "journal", "list", env={"PAMGATE_STORE_URL": f"sqlite:///{db}"})) == \
        f"pamgate: no store at {db}: run pamgate db upgrade"
