"""`pamgate status` against a running `pamgate serve`: one screen, no patient identity."""
from __future__ import annotations

import os
import subprocess
import sys

from pamgate.status import api_url
from tests.builders import adt, zfa_2111
from tests.durability.support import wait_until
from tests.serving import Server, ack_code

TOKEN = "st4tus"


def status(tmp_path, *args, env=None):
    env = {**{k: v for k, v in os.environ.items() if k not in ("PAMGATE_CONFIG", "PAMGATE_API_TOKEN")},
           **(env or {})}
    return subprocess.run([sys.executable, "-m", "pamgate.cli", "status", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_status_of_a_running_server(tmp_path):
    server = Server(tmp_path, config={
        "api": {"token": TOKEN},
        "destinations": [{"name": "nowhere", "type": "http", "url": "http://127.0.0.1:9/x", "max_attempts": 1,
                          "poll_interval": 0.1}]}).start()
    url = f"http://127.0.0.1:{server.http_port}"
    try:
        assert ack_code(server.send(adt("A01", ipp="900001", app="GAM-S", facility="CHU-S",
                                        zfa=zfa_2111("INO", "IC")))) == "AA"
        wait_until(lambda: server.http("GET", "/v1/status", token=TOKEN)[1]["destinations"]["nowhere"]["dead"],
                   timeout=30, what="the delivery given up")
        # the token from the configuration file
        done = status(tmp_path, "--url", url, "--config", str(server.config_path))
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert out.startswith("pamgate ") and str(server.config_path) in out
        assert "sqlite" in out and "answers" in out and "apply process  ready" in out
        assert "nowhere" in out and "GAM-S|CHU-S" in out
        assert len(out.splitlines()) <= 24                       # one screen
        assert "900001" not in out and "DUPONT" not in out       # no identity
        # or from the environment
        assert status(tmp_path, "--url", url, env={"PAMGATE_API_TOKEN": TOKEN}).returncode == 0

        refused = status(tmp_path, "--url", url)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and "401" in refused.stderr and "auth.required" in refused.stderr
    finally:
        server.stop()
    gone = status(tmp_path, "--url", url, env={"PAMGATE_API_TOKEN": TOKEN})
    assert gone.returncode == 2 and gone.stderr.startswith("pamgate: cannot reach pamgate at ")
    assert gone.stderr.count("\n") == 1


def test_the_url_from_the_http_listener():
    assert api_url("tcp:8080:interface=127.0.0.1") == "http://127.0.0.1:8080"
    assert api_url("tcp:9000") == "http://127.0.0.1:9000"
    assert api_url("tcp:port=9001:interface=0.0.0.0") == "http://127.0.0.1:9001"
    assert api_url("ssl:8443:interface=10.0.0.5:privateKey=k.pem:certKey=c.pem") == "https://10.0.0.5:8443"
