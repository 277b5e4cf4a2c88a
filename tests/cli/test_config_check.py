"""`pamgate --version` and `pamgate config check`: the configuration as `serve` loads it, nothing started;
`mappings check --config` shares that loading (issue 15)."""
from __future__ import annotations

import pytest

from tests.cli.run import one_line, pamgate


def test_version(tmp_path):
    p = pamgate(tmp_path, "--version")
    assert p.returncode == 0 and p.stdout.startswith("pamgate ") and p.stdout.split()[1][0].isdigit()


def write(tmp_path, body=""):
    (tmp_path / "c.yaml").write_text(f"store:\n  url: sqlite:///{tmp_path}/var/x.db\n{body}")
    return "c.yaml"


def test_a_good_configuration_says_what_it_checked(tmp_path):
    p = pamgate(tmp_path, "config", "check", "--config", write(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "configuration: c.yaml" in p.stdout
    assert f"store.url: {tmp_path}/var/" in p.stdout and "habilitation.yaml" in p.stdout
    assert "listeners.http: tcp:8080" in p.stdout
    assert p.stdout.strip().endswith("pamgate: config ok")
    assert not (tmp_path / "var").exists()     # nothing created, nothing started


@pytest.mark.parametrize("rule, problem", [
    ("{application: GAM, mapping: nope}", "unknown mapping 'nope'"),
    ("{application: GAM, mapping: pamfr-2.11, policy: {ino_consult: yes_please}}", "unknown policy ino_consult"),
])
def test_what_serve_refuses_config_check_refuses(tmp_path, rule, problem):
    cfg = write(tmp_path, f"mappings:\n  senders:\n    - {rule}\n")
    line = one_line(pamgate(tmp_path, "config", "check", "--config", cfg))
    assert line.startswith("pamgate: c.yaml:5: ") and problem in line
    # and mappings check no longer says `mappings ok` for it
    p = pamgate(tmp_path, "mappings", "check", "--config", cfg)
    assert p.returncode == 2 and "mappings ok" not in p.stdout and problem in p.stderr


def test_every_problem_one_line_each(tmp_path):
    cfg = write(tmp_path, f"listeners:\n  http: 'tcp:abc'\n  mllp:\n"
                          f"    - endpoint: 'ssl:0:privateKey={tmp_path}/k.pem:certKey={tmp_path}/c.pem'\n"
                          f"destinations:\n  - {{name: m, type: mllp, forward_adt: true, endpoint: 'nohost'}}\n")
    p = pamgate(tmp_path, "config", "check", "--config", cfg)
    assert p.returncode == 2 and "config ok" not in p.stdout and "Traceback" not in p.stderr
    err = p.stderr
    assert f"listeners.mllp.0.endpoint privateKey: {tmp_path}/k.pem: no such file" in err
    assert f"listeners.mllp.0.endpoint certKey: {tmp_path}/c.pem: no such file" in err
    assert "listeners.http: 'tcp:abc': not a valid endpoint" in err
    assert "destinations.0.endpoint: endpoint 'nohost'" in err
    assert len(err.strip().splitlines()) == 4, err


def test_a_bad_value_is_one_line(tmp_path):
    line = one_line(pamgate(tmp_path, "config", "check", env={"PAMGATE_LOG_LEVEL": "loud"}))
    assert "PAMGATE_LOG_LEVEL=loud: log.level:" in line


def test_mappings_check_on_a_missing_file_is_a_bad_input(tmp_path):
    p = pamgate(tmp_path, "mappings", "check", "nowhere.yaml")
    assert p.returncode == 2 and "nowhere.yaml" in p.stderr and "no such file" in p.stderr


def _not_utf8(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"log:\n  level: \xe9t\xe9\n")
    return ("--config", "c.yaml"), {}, "not UTF-8"


def _scheme(tmp_path):
    return (), {"PAMGATE_STORE_URL": "bogus://x"}, "store.url: unknown store scheme"


def _folder(tmp_path):
    (tmp_path / "blocker").write_text("a file")
    return (), {"PAMGATE_STORE_URL": f"sqlite:///{tmp_path}/blocker/var/x.db"}, "cannot create the folder"


def _tls(tmp_path):
    return (), {"PAMGATE_MLLP_LISTEN": f"ssl:0:privateKey={tmp_path}/k.pem:certKey={tmp_path}/k.pem"}, \
        f"listeners.mllp.0.endpoint privateKey: {tmp_path}/k.pem: no such file"


@pytest.mark.parametrize("case", [_not_utf8, _scheme, _folder, _tls])
def test_the_former_tracebacks_are_one_line_in_config_check_and_serve(tmp_path, case):
    """Issue 15, "Errors that are still tracebacks": one line on stderr, exit 2, from `config check` as from
    `serve` (tests/e2e/test_config_errors.py holds serve's side of each)."""
    args, env, problem = case(tmp_path)
    p = pamgate(tmp_path, "config", "check", *args, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and problem in p.stderr, p.stderr
    # one line per problem (the TLS case has two: the key and the certificate)
    assert all(line.startswith("pamgate: ") for line in p.stderr.strip().splitlines()), p.stderr
