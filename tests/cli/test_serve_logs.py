"""What `serve` logs (issue 15): one info line per message without identity (sender, MSH-10, event, ACK,
duration), an HTTP access log with the patient's path masked, a warning per failed authentication; with
`log.format: json` the listening lines are JSON too and a last line says the server stopped."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

from mllp.client import BlockingMLLPClient
from tests.builders import adt, zfa_2111
from tests.serving import ack_code

IPP, NAME, VISIT = "77123456", "QUUXNAME^JEANNE", "VQUUX1"


def test_json_logs_one_line_per_message_and_request_without_identity(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "store": {"url": f"sqlite:///{tmp_path / 's.db'}"},
        "listeners": {"mllp": [{"endpoint": "tcp:0:interface=127.0.0.1"}], "http": "tcp:0:interface=127.0.0.1"},
        "log": {"level": "info", "format": "json"}, "api": {"token": "secret"}}))
    proc = subprocess.Popen([sys.executable, "-m", "pamgate.cli", "serve", "--config", str(cfg)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ports, first = {}, []
        deadline = time.monotonic() + 60
        while len(ports) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            first.append(json.loads(line))          # every line on stdout is JSON
            if first[-1]["event"] == "serve.listening":
                ports[first[-1]["kind"]] = first[-1]["port"]
        assert first[0]["event"] == "serve.configuration" and first[0]["file"] == str(cfg)
        with BlockingMLLPClient("127.0.0.1", ports["mllp"], timeout=30) as c:
            assert ack_code(c.send(adt("A01", ipp=IPP, name=NAME, visit=VISIT, control_id="LOG-1",
                                       zfa=zfa_2111("NA", "IC")))) == "AA"
            assert ack_code(c.send(adt("A01", ipp=IPP, name=NAME, visit=VISIT, control_id="LOG-2",
                                       zbe_action="BOGUS"))) == "AE"
        for token in ("secret", "wrong"):
            req = urllib.request.Request(f"http://127.0.0.1:{ports['http']}/v1/patients/HOSP-T/{IPP}/consent")
            req.add_header("authorization", f"Bearer {token}")
            try:
                urllib.request.urlopen(req, timeout=30).read()
            except urllib.error.HTTPError as e:
                e.read()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    last = json.loads(out.strip().splitlines()[-1])
    assert last["event"] == "serve.stopped"
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    answered = [e for e in events if e["event"] == "message.answered"]
    assert [(e["msh10"], e["ack"], e["hl7_event"], e["sender"], e["level"]) for e in answered] == [
        ("LOG-1", "AA", "A01", "GAM-T|HOSP-T", "info"), ("LOG-2", "AE", "A01", "GAM-T|HOSP-T", "info")]
    assert all(isinstance(e["duration_ms"], float) for e in answered)
    access = [e for e in events if e["event"] == "http.request"]
    assert [(e["path"], e["status"]) for e in access] == [("/v1/patients/•••/•••/consent", 200),
                                                          ("/v1/patients/•••/•••/consent", 401)]
    failed = [e for e in events if e["event"] == "http.auth_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "warning"
    for secret in (IPP, "QUUXNAME", "JEANNE", VISIT):
        assert secret not in err and secret not in out
