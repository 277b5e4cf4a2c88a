"""A configuration `serve` cannot use stops the start with one line that says where the bad value came from
(the file and line, or the environment variable), exit 2, no traceback, and nothing listening."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PAMGATE = str(Path(sys.executable).parent / "pamgate")


def serve(cwd, *args, env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PAMGATE_")}
    # ports nobody listens on: a start that wrongly went through would be killed by the timeout
    environ.update({"PAMGATE_MLLP_LISTEN": "tcp:0:interface=127.0.0.1",
                    "PAMGATE_HTTP_LISTEN": "tcp:0:interface=127.0.0.1"})
    environ.update(env or {})
    return subprocess.run([PAMGATE, "serve", *args], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=60)


def one_line(p) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "listening" not in p.stdout
    return lines[0]


def test_a_file_that_is_not_utf8(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"log:\n  level: \xe9t\xe9\n")
    line = one_line(serve(tmp_path, "--config", "c.yaml"))
    assert "c.yaml" in line and "not UTF-8" in line


def test_a_bad_value_names_its_line(tmp_path):
    (tmp_path / "c.yaml").write_text("store:\n  url: sqlite:///var/x.db\nepisode:\n  scope: wide\n")
    assert one_line(serve(tmp_path, "--config", "c.yaml")).startswith("pamgate: c.yaml:4: episode.scope:")


def test_duplicate_keys_are_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("log:\n  level: info\nlog:\n  format: json\n")
    assert "c.yaml:3: log: duplicate key (first at line 1)" in one_line(serve(tmp_path, "--config", "c.yaml"))


def test_a_value_from_the_environment_names_the_variable(tmp_path):
    line = one_line(serve(tmp_path, env={"PAMGATE_LOG_LEVEL": "loud"}))
    assert "PAMGATE_LOG_LEVEL=loud: log.level:" in line and "config.yaml" not in line


def test_an_unknown_store_scheme(tmp_path):
    line = one_line(serve(tmp_path, env={"PAMGATE_STORE_URL": "bogus://x"}))
    assert "PAMGATE_STORE_URL=bogus://x: store.url: unknown store scheme" in line


def test_a_sqlite_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    line = one_line(serve(tmp_path, env={"PAMGATE_STORE_URL": f"sqlite:///{tmp_path}/blocker/var/x.db"}))
    assert "store.url: cannot create the folder" in line and "is not a folder" in line


def test_a_tls_listener_whose_key_is_missing(tmp_path):
    line = one_line(serve(tmp_path, env={
        "PAMGATE_STORE_URL": f"sqlite:///{tmp_path}/x.db",
        "PAMGATE_MLLP_LISTEN": f"ssl:0:interface=127.0.0.1:privateKey={tmp_path}/key.pem:certKey={tmp_path}/c.pem"}))
    assert f"listeners.mllp.0.endpoint privateKey: {tmp_path}/key.pem: no such file" in line


def test_a_bad_endpoint_is_named_before_anything_listens(tmp_path):
    p = serve(tmp_path, env={"PAMGATE_STORE_URL": f"sqlite:///{tmp_path}/x.db", "PAMGATE_HTTP_LISTEN": "tcp:abc"})
    line = one_line(p)
    assert "listeners.http: 'tcp:abc': not a valid endpoint" in line
    assert not (tmp_path / "x.db").exists()   # refused before the store was opened


def test_a_file_destination_whose_folder_cannot_be_created(tmp_path):
    (tmp_path / "blocker").write_text("x")
    (tmp_path / "c.yaml").write_text(
        f"store:\n  url: sqlite:///{tmp_path}/x.db\n"
        f"destinations:\n  - {{name: f, type: file, path: {tmp_path}/blocker/out/events.jsonl}}\n")
    line = one_line(serve(tmp_path, "--config", "c.yaml"))
    assert "destinations.0.path: cannot create the folder" in line


@pytest.mark.parametrize("rule, problem", [
    ("{application: GAM, mapping: nope}", "unknown mapping 'nope'"),
    ("{application: GAM, mapping: pamfr-2.11, policy: {ino_consult: yes_please}}", "unknown policy ino_consult"),
])
def test_sender_rules_name_the_file_and_line(tmp_path, rule, problem):
    (tmp_path / "c.yaml").write_text(f"store:\n  url: sqlite:///{tmp_path}/x.db\n"
                                     f"mappings:\n  senders:\n    - {rule}\n")
    line = one_line(serve(tmp_path, "--config", "c.yaml"))
    assert line.startswith("pamgate: c.yaml:5: ") and problem in line


def test_the_shipped_example_sender_rule_is_accepted(tmp_path):
    """config.yaml's own commented example must start."""
    shipped = (Path(__file__).resolve().parents[2] / "config.yaml").read_text()
    example = next(ln for ln in shipped.splitlines() if ln.strip().startswith("senders: []") and "mapping:" in ln)
    rule = example.split("e.g. - ", 1)[1]
    (tmp_path / "c.yaml").write_text(f"store:\n  url: sqlite:///{tmp_path}/x.db\n"
                                     f"mappings:\n  senders:\n    - {rule}\n")
    # the mappings load before the endpoints are parsed; reaching the endpoint error proves the rule held
    line = one_line(serve(tmp_path, "--config", "c.yaml", env={"PAMGATE_HTTP_LISTEN": "tcp:abc"}))
    assert "listeners.http" in line
