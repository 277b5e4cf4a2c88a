"""The environment variables of interface.md override the configuration file, each one seen working through a
real `pamgate serve`: the file's path, the store, the MLLP listeners (several), the HTTP endpoint, the token and
the log level; and without `--config` nor `PAMGATE_CONFIG`, `serve` reads `./config.yaml`."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.builders import adt, zfa_2111
from tests.serving import ack_code

LINE = re.compile(r"pamgate: (\w+) listening on (\S+) \(([\d.]+):(\d+)\)")


def start(cwd: Path, env: dict, *args):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PAMGATE_")}
    environ.update(env)
    err = open(cwd / f"stderr-{time.monotonic_ns()}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pamgate.cli", "serve", *args], cwd=cwd, env=environ,
                            stdout=subprocess.PIPE, stderr=err, text=True)
    lines, listening = [], []
    deadline = time.monotonic() + 60
    while not any(m[0] == "http" for m in listening):
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, (lines, Path(err.name).read_text())
        lines.append(line)
        m = LINE.search(line)
        if m:
            listening.append((m[1], m[2], int(m[4])))
    return proc, lines, listening, Path(err.name)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def get(port, path, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def send(port, message):
    from mllp.client import BlockingMLLPClient
    with BlockingMLLPClient("127.0.0.1", port, timeout=30) as c:
        return c.send(message)


def file_config(store: Path, token: str) -> str:
    # ports the file names but the environment replaces: a server that used them would not be found
    return yaml.safe_dump({"store": {"url": f"sqlite:///{store}"},
                           "listeners": {"mllp": [{"endpoint": "tcp:1:interface=127.0.0.1"}],
                                         "http": "tcp:1:interface=127.0.0.1"},
                           "api": {"token": token}, "log": {"level": "info"}})


def test_each_variable_overrides_the_file(tmp_path):
    (tmp_path / "config.yaml").write_text(file_config(tmp_path / "cwd.db", "cwd-token"))   # not read
    chosen = tmp_path / "etc" / "chosen.yaml"
    chosen.parent.mkdir()
    chosen.write_text(file_config(tmp_path / "file.db", "file-token"))
    env = {"PAMGATE_CONFIG": str(chosen),
           "PAMGATE_STORE_URL": f"sqlite:///{tmp_path / 'env.db'}",
           "PAMGATE_MLLP_LISTEN": "tcp:0:interface=127.0.0.1,tcp:0:interface=127.0.0.1",
           "PAMGATE_HTTP_LISTEN": "tcp:0:interface=127.0.0.1",
           "PAMGATE_API_TOKEN": "env-token",
           "PAMGATE_LOG_LEVEL": "debug"}
    proc, lines, listening, stderr = start(tmp_path, env)
    try:
        assert any(f"configuration {chosen}" in line for line in lines), lines
        mllp = [port for kind, _, port in listening if kind == "mllp"]
        [http] = [port for kind, _, port in listening if kind == "http"]
        assert len(mllp) == 2 and 1 not in mllp + [http], listening
        # one line per endpoint, each naming the endpoint string it listens on
        assert [endpoint for _, endpoint, _ in listening] == ["tcp:0:interface=127.0.0.1"] * 3

        for i, port in enumerate(mllp):   # both listeners serve, into the environment's store
            assert ack_code(send(port, adt("A01", ipp=f"55000{i}", control_id=f"ENV{i}",
                                           zfa=zfa_2111("INO", "IC")))) == "AA"
        assert (tmp_path / "env.db").exists()
        assert not (tmp_path / "file.db").exists() and not (tmp_path / "cwd.db").exists()

        assert get(http, "/metrics", "file-token")[0] == 401
        status, body = get(http, "/metrics", "env-token")
        assert status == 200 and b'pamgate_messages_total{ack="AA",event="A01"} 2.0' in body, body[-400:]
        assert get(http, "/healthz")[0] == 200
        # debug, and only debug, shows the IPP: the level came from the environment
        deadline = time.monotonic() + 10
        while "[debug" not in stderr.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "[debug" in stderr.read_text() and "550001" in stderr.read_text()
    finally:
        stop(proc)


def test_serve_without_config_reads_the_working_directorys_file(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "store": {"url": "sqlite:///var/here.db"},
        "listeners": {"mllp": [{"endpoint": "tcp:0:interface=127.0.0.1"}], "http": "tcp:0:interface=127.0.0.1"}}))
    proc, lines, listening, _ = start(tmp_path, {})
    try:
        assert lines[0].strip() == "pamgate: configuration config.yaml", lines
        assert (tmp_path / "var" / "here.db").exists()     # its relative store, under ./var/
        [http] = [port for kind, _, port in listening if kind == "http"]
        assert get(http, "/v1/status")[0] == 200
    finally:
        stop(proc)
