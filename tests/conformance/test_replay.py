"""`pamgate replay` end to end: in-process and over MLLP to a real `pamgate serve`, exit codes, reports."""
import os
import pty
import select
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

from conformance import checks as C
from tests.conformance.conftest import ROOT, SAMPLES, SCENARIO_NAMES, SCENARIOS, command, execute, scenario_args
from tests.conformance.test_messages import MSG, write


def test_the_shipped_scenarios_are_all_there():
    assert SCENARIO_NAMES == ["conf06", "conf16", "duplicates-order", "identities", "movements", "zfa-layouts"]


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_a_shipped_scenario_gives_the_same_results_in_process_and_over_mllp(name, server):
    local = execute(scenario_args(name, "--strict"))
    remote = execute(scenario_args(name, "--strict", "--to", f"mllp://127.0.0.1:{server.mllp_port}",
                                   "--api", f"http://127.0.0.1:{server.http_port}",
                                   "--config", str(server.config_path)))
    assert local.ok, [c for c in local.all_checks() if not c.held]
    assert local.count(C.SKIPPED) == 0 and remote.count(C.SKIPPED) == 0
    assert remote.mode == "mllp" and local.mode == "in-process"
    assert remote.outcomes() == local.outcomes()
    # every message was answered, and every planned expectation was checked
    expect = yaml.safe_load((SCENARIOS / name / "expect.yaml").read_text())
    planned = sum(len(s.get("decisions", [])) + len(s.get("events", [])) + len(s.get("err_contains", []))
                  for s in expect["steps"])
    assert local.count(C.HELD) == planned + 2 * len(local.messages)    # + one ACK and one structure check each


def wrong_conf06(tmp_path):
    """CONF.06's expectations with step 7 turned wrong: after the refusal, consultation 'permitted'."""
    data = yaml.safe_load((SCENARIOS / "conf06" / "expect.yaml").read_text())
    step7 = next(d for s in data["steps"] for d in s.get("decisions", []) if d.get("step") == 7)
    step7.update(decision="permit", reasons=[])
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_a_wrong_expectation_fails_the_replay_and_the_reports_name_the_step(tmp_path):
    junit, report = tmp_path / "junit.xml", tmp_path / "report.html"
    r = command(["replay", str(SCENARIOS / "conf06"), "--expect", str(wrong_conf06(tmp_path)),
                 "--junit", str(junit), "--report", str(report), "--lang", "en"])
    assert r.returncode == 1, r.stderr
    assert "FAILED step 7: consult: expected Consultation: PERMITTED; got Consultation: DENIED — consent refused" \
        in r.stdout
    assert "FAIL: 1 expectation(s) failed" in r.stdout and "Traceback" not in r.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert suite.get("failures") == "1" and len(failed) == 1
    assert failed[0].get("name").startswith("step 7: consult")
    html = report.read_text(encoding="utf-8")
    failures = html[html.index('id="failures"'):html.index('id="numbered-steps"')]
    assert "Step 7" in failures and "Refusal recorded: consultation denied" in failures
    assert "FAIL — 1 of 23 expectations did not hold" in html


def test_the_junit_report_has_one_case_per_message_and_per_expectation(tmp_path):
    junit = tmp_path / "j.xml"
    run = execute(scenario_args("conf06", "--junit", str(junit)))
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = list(suite.iter("testcase"))
    assert len(cases) == len(list(run.all_checks())) == 4 + 19
    assert sum(1 for c in cases if c.get("name").endswith(": ACK")) == 4
    assert suite.get("failures") == "0" and suite.get("tests") == "23"
    names = [c.get("name") for c in cases]
    assert all(any(n.startswith(f"step {i}: ") for n in names) for i in range(1, 16))


def test_without_expectations_every_message_must_be_accepted(tmp_path):
    good = MSG.format(cid="G1", cs="UNICODE UTF-8") + "\rPV1|1|I|||||||||||||||||V1^^^CH-T^VN\r" \
        "ZBE|M1^CH-T|20250106090000||INSERT|N||U^^^^^CH-T^UF^^^1||HMS"
    write(tmp_path / "ok" / "1.hl7", good) if (tmp_path / "ok").mkdir() is None else None
    assert execute(["replay", str(tmp_path / "ok")]).ok
    # no PI identifier in PID-3: understood but refused (AE)
    (tmp_path / "ko").mkdir()
    write(tmp_path / "ko" / "1.hl7", good)
    write(tmp_path / "ko" / "2.hl7", good.replace("G1", "G2").replace("^PI~", "^XX~"))
    r = command(["replay", str(tmp_path / "ko")])
    assert r.returncode == 1
    assert "[2/2] 2.hl7  ADT^A01^ADT_A01  AE  FAILED" in r.stdout and "ACK codes: AA 1, AE 1" in r.stdout


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("argv,expected", [
    (["replay", "nowhere/at/all.hl7"], "pamgate: nowhere/at/all.hl7: no such file or folder"),
    (["replay", "conformance/scenarios/conf06", "--expect", "conformance/scenarios/conf06/01-admission.hl7"],
     "01-admission.hl7:1: the expectations must be a mapping"),
    (["replay", "conformance/scenarios/conf06", "--to", "mllp://127.0.0.1:{port}"],
     "pamgate: --to mllp://127.0.0.1:{port}: cannot connect: Connection refused"),
    (["replay", "conformance/scenarios/conf06", "--to", "http://127.0.0.1:1"], "expected mllp://HOST:PORT"),
    (["replay", "conformance/scenarios/conf06", "--report", "no/such/dir/r.html"], "--report no/such/dir/r.html: no such folder"),
    (["replay", "conformance/scenarios/conf06", "--api", "http://127.0.0.1:1"], "--api goes with --to"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(argv, expected):
    port = closed_port()
    r = command([a.format(port=port) for a in argv])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == r.stderr.strip().splitlines()[0] and "Traceback" not in r.stderr
    assert expected.format(port=port) in r.stderr


def test_over_mllp_decisions_need_the_api_and_isolation_needs_in_process(tmp_path, server):
    to = f"mllp://127.0.0.1:{server.mllp_port}"
    r = command(scenario_args("conf06", "--to", to))
    assert r.returncode == 2 and "the expectations ask decisions: give --api http://HOST:PORT" in r.stderr
    iso = tmp_path / "iso.yaml"
    iso.write_text("isolation: file\n")
    r = command(["replay", str(SCENARIOS / "conf06"), "--expect", str(iso), "--to", to])
    assert r.returncode == 2 and "only an in-process replay can do: leave out --to" in r.stderr


def test_over_mllp_without_the_servers_config_events_are_skipped_and_said_so(server):
    run = execute(scenario_args("conf16", "--to", f"mllp://127.0.0.1:{server.mllp_port}",
                                "--api", f"http://127.0.0.1:{server.http_port}"))
    skipped = [c for c in run.all_checks() if c.status == C.SKIPPED]
    assert skipped and all(c.kind == "event" for c in skipped)
    assert run.ok and run.count(C.FAILED) == 0 and run.count(C.HELD) > 0


def test_strict_fails_a_message_the_gate_accepts_but_hl7_v2_5_does_not(tmp_path):
    text = (SCENARIOS / "conf06" / "01-admission.hl7").read_bytes().decode()
    segs = text.rstrip("\r").split("\r")
    segs[1], segs[2] = segs[2], segs[1]      # PID before EVN
    (tmp_path / "m.hl7").write_text("\r".join(segs), encoding="utf-8")
    assert execute(["replay", str(tmp_path)]).ok
    run = execute(["replay", str(tmp_path), "--strict"])
    assert not run.ok
    bad = [c for c in run.all_checks() if not c.held]
    assert [c.kind for c in bad] == ["structure"] and "PID: not expected after MSH" in bad[0].actual


def test_isolation_replays_each_file_into_its_own_store(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.hl7").write_bytes((SCENARIOS / "conf06" / "02-consent.hl7").read_bytes())
    exp = tmp_path / "e.yaml"
    # the same message twice: a duplicate in one store (applied once), new in a fresh one
    step = "{{message: {}, events: [{{type: consent.changed, count: {}}}]}}"
    exp.write_text(f"steps:\n  - {step.format('a.hl7', 1)}\n  - {step.format('b.hl7', 0)}\n")
    assert execute(["replay", str(tmp_path), "--expect", str(exp)]).ok
    exp.write_text(f"isolation: file\nsteps:\n  - {step.format('a.hl7', 1)}\n  - {step.format('b.hl7', 1)}\n")
    assert execute(["replay", str(tmp_path), "--expect", str(exp)]).ok


def test_a_terminal_gets_a_progress_bar_and_plain_output_gets_lines():
    args = [sys.executable, "-m", "pamgate.cli", *scenario_args("movements")]
    plain = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "[14/14] 14-admission-cancel.hl7" in plain.stdout and "━" not in plain.stdout
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "120"})
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:      # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(60) == 0
    text = out.decode("utf-8", "replace")
    assert "replaying" in text and "━" in text and "[14/14]" not in text
    assert "PASS: every ACK and every expectation held" in text


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/samples is absent: the real-message replays are skipped")
@pytest.mark.parametrize("folder,expect", [
    ("cpage-gam-2025", "cpage-gam-2025"), ("ans-consent", "ans-consent"),
    ("ans-consent", "ans-consent-one-store"), ("ans-sgl", "ans-sgl"),
])
def test_the_shared_samples_hold_their_expectations(folder, expect):
    if not (SAMPLES / folder).is_dir():
        pytest.skip(f"{SAMPLES / folder} is absent")
    run = execute(["replay", str(SAMPLES / folder), "--expect", str(ROOT / "conformance" / "samples" / f"{expect}.yaml")])
    assert run.ok, [(c.name, c.actual) for c in run.all_checks() if not c.held]
    if folder == "cpage-gam-2025":
        assert run.ack_codes() == {"AA": 200}
        assert [m.message.name for m in run.messages] == sorted(m.message.name for m in run.messages)


def test_over_mllp_a_connection_closed_by_the_server_while_idle_is_reopened(tmp_path):
    import time

    from conformance.gates import RemoteGate
    from conformance.messages import collect
    from engine import config as configuration
    from tests.serving import Server
    server = Server(tmp_path, config={"limits": {"idle_timeout": 0.5}}).start()
    try:
        messages = collect([SCENARIOS / "conf06"]).messages
        gate = RemoteGate(f"mllp://127.0.0.1:{server.mllp_port}", None, configuration.load(str(server.config_path)),
                          store_readable=False)
        try:
            assert C.read_ack(gate.send(messages[0])).code == "AA"
            time.sleep(2)                    # the server closes the idle connection meanwhile
            assert C.read_ack(gate.send(messages[1])).code == "AA"
        finally:
            gate.close()
    finally:
        server.stop()


def test_in_process_the_listener_itself_answers_a_frame_it_refuses(tmp_path):
    """The in-process replay runs the listener of `pamgate serve`: a frame past `limits.max_frame_bytes`
    gets the listener's own AR (ERR-3 102), exactly as over MLLP, and is journaled as serve journals it."""
    from conformance.gates import InProcessGate
    from conformance.messages import collect
    from engine.config import Config

    cfg = Config.model_validate({"limits": {"max_frame_bytes": 200}})
    (message,) = collect([str(write(tmp_path / "big.hl7", MSG.format(cid="BIG1", cs="UNICODE UTF-8")))]).messages
    gate = InProcessGate(cfg)
    try:
        ack = C.read_ack(gate.send(message))
        assert ack.code == "AR" and any("(code 102)" in e for e in ack.errors)
        with gate.store.transaction() as uow:
            rows = uow.conn.exec_driver_sql("SELECT ack_code FROM journal").fetchall()
        assert [r[0] for r in rows] == ["AR"]
    finally:
        gate.close()
