"""Who may use the console: open on loopback without users; login, session cookie, CSRF, roles with them;
every action audited with its author; `pamgate console hash-password`."""
from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

import pytest
from argon2 import PasswordHasher

from tests.console.conftest import Browser, start


def test_hash_password_command_prints_a_hash_that_verifies():
    out = subprocess.run([sys.executable, "-m", "pamgate.cli", "console", "hash-password"], input="s3cret\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    h = out.stdout.strip()
    assert h.startswith("$argon2") and PasswordHasher().verify(h, "s3cret")
    empty = subprocess.run([sys.executable, "-m", "pamgate.cli", "console", "hash-password"], input="\n",
                           capture_output=True, text=True, timeout=60)
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1 and "Traceback" not in empty.stderr


def test_without_users_the_console_is_open_on_loopback_as_operator(open_server):
    b = Browser(f"http://127.0.0.1:{open_server.http_port}")
    status, html = b.get("/console/")
    assert status == 200 and "local (opérateur)" in html
    # the API is still served beside it
    assert open_server.http("GET", "/v1/patients/CH-DEMO/700601/consent")[0] == 200


def _other_address() -> str | None:
    """An address of this machine that is not loopback, or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
        return None if addr.startswith("127.") else addr
    except OSError:
        return None


def test_without_users_a_client_off_loopback_is_refused(tmp_path):
    addr = _other_address()
    if addr is None:
        pytest.skip("this machine has no address besides loopback")
    server = start(tmp_path, {"listeners": {"http": "tcp:0:interface=0.0.0.0"}})
    try:
        status, html = Browser(f"http://{addr}:{server.http_port}").get("/console/")
        assert status == 403 and "boucle locale" in html
        assert Browser(f"http://127.0.0.1:{server.http_port}").get("/console/")[0] == 200
    finally:
        server.stop()


def test_login_session_cookie_and_csrf(users_server):
    base = f"http://127.0.0.1:{users_server.http_port}"
    b = Browser(base)
    status, html = b.get("/console/messages")
    assert status == 200 and 'id="login"' in html          # redirected to the login page
    status, html = b.post("/console/login", {"name": "alice", "password": "wrong"})
    assert status == 401 and "incorrect" in html
    status, html = b.post("/console/login", {"name": "alice", "password": "alice-pw"})
    assert status == 200 and "alice (opérateur)" in html
    # the session cookie: HttpOnly, SameSite=Strict, for /console only (no TLS here: not Secure)
    with urllib.request.urlopen(base + "/console/login") as r:
        cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    # a form without its CSRF token, or with another's, is refused and changes nothing
    status, html = b.post("/console/outbox/retry", {}, csrf=False)
    assert status == 403 and "CSRF" in html
    status, _ = b.post("/console/outbox/retry", {"csrf": "forged"})
    assert status == 403
    status, html = b.post("/console/logout")
    assert status == 200 and 'id="login"' in html
    assert 'id="login"' in b.get("/console/")[1]


def test_a_viewer_reads_but_is_refused_every_action(users_server):
    b = Browser(f"http://127.0.0.1:{users_server.http_port}")
    b.login("victor")
    status, html = b.get("/console/patients/CH-DEMO/700601")
    assert status == 200 and "victor (lecteur)" in html and "Seul un opérateur" in html
    for path, fields in [("/console/outbox/retry", {}),
                         ("/console/patients/CH-DEMO/700601/reveal", {"reason": "curiosité"}),
                         ("/console/capture/CH-DEMO/700601/consent", {"option": "1", "answer": "oui"}),
                         ("/console/capture/CH-DEMO/700601/break-glass", {"reason": "urgence"}),
                         ("/console/refusals/handled", {"group": "AR x", "through": "1"}),
                         ("/console/audit/verify", {})]:
        status, html = b.post(path, fields)
        assert status == 403 and "réservée aux opérateurs" in html, path
    assert b.get("/console/messages/1.hl7")[0] == 403
    assert 'id="verify-audit"' not in b.get("/console/")[1]      # no button that would be refused
    # nothing was recorded: the consent is still the one of the messages
    assert users_server.decide({"authority": "CH-DEMO", "id": "700601"}, "consult")[1]["reasons"] == ["consent.refused"]


def test_reveal_asks_a_reason_and_is_audited_with_its_author(users_server):
    b = Browser(f"http://127.0.0.1:{users_server.http_port}")
    b.login("alice")
    b.get("/console/patients/CH-DEMO/700601")
    status, html = b.post("/console/patients/CH-DEMO/700601/reveal", {"reason": " "})
    assert status == 400 and "motif est obligatoire" in html
    status, html = b.post("/console/patients/CH-DEMO/700601/reveal", {"reason": "appel du bureau des entrées"})
    assert status == 200 and "LEFÈVRE" in html
    status, audit = users_server.http("GET", "/v1/audit?authority=CH-DEMO&id=700601")
    reveals = [e["payload"] for e in audit["entries"] if e["kind"] == "console.reveal"]
    assert reveals == [{"by": "alice", "role": "operator", "via": "console", "reason": "appel du bureau des entrées"}]
    # another session (another user) still sees the identities masked
    other = Browser(f"http://127.0.0.1:{users_server.http_port}")
    other.login("victor")
    assert "LEFÈVRE" not in other.get("/console/patients/CH-DEMO/700601")[1]


def test_over_tls_the_session_cookie_is_secure(tmp_path, pki):
    import ssl
    endpoint = f"ssl:0:interface=127.0.0.1:privateKey={pki}/server.key:certKey={pki}/server.crt"
    server = start(tmp_path, {"listeners": {"http": endpoint}})
    try:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        with urllib.request.urlopen(f"https://localhost:{server.http_port}/console/", context=ctx) as r:
            cookie = r.headers["set-cookie"]
        assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    finally:
        server.stop()


def test_with_an_api_token_and_no_users_the_console_stays_closed(tmp_path):
    server = start(tmp_path, {"api": {"token": "t0ken"}})
    try:
        b = Browser(f"http://127.0.0.1:{server.http_port}")
        for path in ("/console/", "/console/style.css", "/console/login", "/console/patients/CH-DEMO/700601"):
            status, html = b.get(path)
            assert status == 403 and "console.users" in html and "LEFÈVRE" not in html, path
        assert b.post("/console/outbox/retry", {"csrf": "x"})[0] == 403
    finally:
        server.stop()
