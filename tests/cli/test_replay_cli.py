"""`pamgate replay` as a user runs it (issue 15): scenario folders each with their own expectations and
store, named in the output and the reports; --expect once; an ACK timeout that names the message; --api
checked before anything is sent; MLLP-framed files; duplicates shown; skipped lines not `ok`; output paths
checked first; NDA and visit numbers masked in the report."""
from __future__ import annotations

import socket
from html import unescape
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.builders import adt, zfa_2111
from tests.cli.run import one_line, pamgate
from tests.serving import Server

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "conformance" / "scenarios"
NAMES = {p.name: yaml.safe_load((p / "expect.yaml").read_text())["name"]
         for p in SCENARIOS.iterdir() if (p / "expect.yaml").is_file()}


def test_a_folder_of_scenarios_replays_each_with_its_own_expectations(tmp_path):
    report, junit = tmp_path / "var" / "r.html", tmp_path / "var" / "j.xml"
    report.parent.mkdir()
    p = pamgate(ROOT, "replay", SCENARIOS, "--report", report, "--junit", junit, "--lang", "en", timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    for name, title in NAMES.items():
        assert f"scenario {name}: {title}" in p.stdout
        assert f"PASS  {name}: {title}" in p.stdout
    assert p.stdout.count("pamgate replay: ") == len(NAMES) + 1    # each scenario's summary, then the whole
    # each scenario's own expectations were checked, not "every message must be AA"
    assert "expectations file" not in p.stdout and p.stdout.count("(none: every") == 0
    assert "0 skipped" in p.stdout
    html = unescape(report.read_text())
    head = html.split("</title>")[0]
    assert all(title in head for title in NAMES.values()), head    # the title names every scenario
    assert "Scenarios" in html and html.count("PASS</span>") >= len(NAMES)
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert sorted(s.get("name") for s in suites) == sorted(NAMES.values())    # one suite per scenario
    assert all(int(s.get("tests")) > 0 and s.get("failures") == "0" for s in suites)


def test_expect_given_twice_is_an_error(tmp_path):
    line = one_line(pamgate(tmp_path, "replay", "x.hl7", "--expect", "a.yaml", "--expect", "b.yaml"))
    assert "--expect given twice" in line and "pamgate replay --help" in line


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers; what it received."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    got, conns = [], []

    def accept():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            conns.append(c)
            c.settimeout(0.2)
            threading.Thread(target=lambda: _drain(c, got), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1], got
    srv.close()
    for c in conns:
        c.close()


def _drain(c, got):
    while True:
        try:
            data = c.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return
        if not data:
            return
        got.append(data)


def message_file(tmp_path, name="m.hl7", text=None):
    f = tmp_path / name
    f.write_text(text or adt("A01", zfa=zfa_2111("NA", "IC", "20250106090000")))
    return f


def test_to_times_out_and_names_the_waiting_message(tmp_path, silent_port):
    port, _ = silent_port
    started = time.monotonic()
    line = one_line(pamgate(tmp_path, "replay", message_file(tmp_path), "--to", f"mllp://127.0.0.1:{port}",
                            "--timeout", "1"))
    assert time.monotonic() - started < 20
    assert "no ACK within 1 s for message 1 (m.hl7)" in line


def test_api_is_checked_before_any_message_is_sent(tmp_path, silent_port):
    port, got = silent_port
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free = closed.getsockname()[1]
    closed.close()
    line = one_line(pamgate(tmp_path, "replay", message_file(tmp_path), "--to", f"mllp://127.0.0.1:{port}",
                            "--api", f"http://127.0.0.1:{free}", "--timeout", "2"))
    assert f"--api http://127.0.0.1:{free}" in line and "nothing was sent" in line
    time.sleep(0.3)
    assert got == []


def test_a_wrong_token_is_refused_before_any_message_is_sent(tmp_path):
    server = Server(tmp_path, config={"api": {"token": "right"}}).start()
    try:
        f = message_file(tmp_path)
        line = one_line(pamgate(tmp_path, "replay", f, "--to", f"mllp://127.0.0.1:{server.mllp_port}",
                                "--api", f"http://127.0.0.1:{server.http_port}", env={"PAMGATE_API_TOKEN": "wrong"}))
        assert "refuses the token" in line
    finally:
        server.stop()
    journal = pamgate(tmp_path, "journal", "list", "--config", server.config_path)
    assert journal.returncode == 0 and "no message in the journal" in journal.stdout   # nothing was sent


def test_an_mllp_framed_file_and_a_duplicate(tmp_path):
    text = adt("A01", zfa=zfa_2111("NA", "IC", "20250106090000"), control_id="DUP-X")
    framed = tmp_path / "framed.hl7"
    framed.write_bytes(b"\x0b" + text.encode() + b"\x1c\r" + b"\x0b" + text.encode() + b"\x1c\r")
    p = pamgate(tmp_path, "replay", framed)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("[")]
    assert "AA  ok" in lines[0]
    assert "AA duplicate: already applied  ok" in lines[1]


def test_skipped_checks_are_not_ok(tmp_path):
    server = Server(tmp_path).start()
    try:
        p = pamgate(ROOT, "replay", SCENARIOS / "conf16", "--to", f"mllp://127.0.0.1:{server.mllp_port}",
                    "--api", f"http://127.0.0.1:{server.http_port}")
    finally:
        server.stop()
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("[")]
    skipped = [ln for ln in lines if "skipped" in ln]
    assert skipped, p.stdout + p.stderr
    assert all("NOT CHECKED" in ln and "  ok " not in ln for ln in skipped)


@pytest.mark.parametrize("option", ["--report", "--junit"])
def test_output_paths_are_checked_before_the_replay(tmp_path, option):
    p = pamgate(tmp_path, "replay", message_file(tmp_path), option, tmp_path / "no" / "such" / "r.html")
    line = one_line(p)
    assert f"{option} " in line and "no such folder" in line
    assert "[1/" not in p.stdout
    (tmp_path / "adir").mkdir()
    assert "is a folder" in one_line(pamgate(tmp_path, "replay", message_file(tmp_path), option, tmp_path / "adir"))


def test_masked_report_hides_nda_and_visit(tmp_path):
    f = message_file(tmp_path, text=adt("A01", visit="SECRETVISIT", zfa=zfa_2111("NA", "IC", "20250106090000")))
    report = tmp_path / "r.html"
    p = pamgate(tmp_path, "replay", f, "--report", report)
    assert p.returncode == 0, p.stdout + p.stderr
    html = report.read_text()
    assert "SECRETVISIT" not in html
    p = pamgate(tmp_path, "replay", f, "--report", report, "--show-identities")
    assert "SECRETVISIT" in report.read_text()
