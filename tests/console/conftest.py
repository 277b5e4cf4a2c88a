"""A running `pamgate serve` with the CONF.06 scenario applied, and a small cookie-keeping HTTP client."""
from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from console.access import console_hash_password
from tests.serving import Server

ROOT = Path(__file__).resolve().parents[2]
CONF06 = ROOT / "conformance" / "scenarios" / "conf06"
# what the CONF.06 messages say of the patient: none of it may be in a masked page
IDENTITY = ("LEFÈVRE", "LEF&#200;VRE", "Hélène", "H&#233;l&#232;ne", "19720415", "15/04/1972", "N060001", "V060001",
            "12 rue des Lilas")
PASSWORDS = {"alice": "alice-pw", "victor": "victor-pw"}


def conf06_messages() -> list[str]:
    return [p.read_text(encoding="utf-8").replace("\r\n", "\r").replace("\n", "\r").strip("\r")
            for p in sorted(CONF06.glob("*.hl7"))]


def movement_message(event: str, control_id: str, movement_id: str, when: str, uf: str,
                     visit: str = "V060001") -> str:
    """The CONF.06 admission turned into another movement of the patient (ZBE-1, ZBE-2, ZBE-7, PV1-19)."""
    return (conf06_messages()[0].replace("ADT^A01^ADT_A01", f"ADT^{event}^ADT_A01").replace("C06-0001", control_id)
            .replace("MVT-0601", movement_id).replace("|20250303085500||INSERT", f"|{when}||INSERT")
            .replace("Unité 2001^^^^^CH-DEMO^UF^^^2001", f"Unité {uf}^^^^^CH-DEMO^UF^^^{uf}")
            .replace("V060001^", f"{visit}^"))


def users_config(option: int = 1, **extra) -> dict:
    return {"console": {"capture_option": option, "users": [
        {"name": "alice", "password_hash": console_hash_password(PASSWORDS["alice"]), "role": "operator"},
        {"name": "victor", "password_hash": console_hash_password(PASSWORDS["victor"]), "role": "viewer"}],
        **extra}}


class Browser:
    """urllib with cookies; follows redirects; keeps the last page's CSRF token."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf = None
        self.headers = {}

    def _open(self, req):
        try:
            r = self.opener.open(req, timeout=30)
            status, body, self.headers = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, body, self.headers = e.code, e.read(), e.headers
        text = body.decode("utf-8", "replace")
        m = re.search(r'name="csrf" value="([^"]+)"', text)
        if m:
            self.csrf = m.group(1)
        return status, text

    def get(self, path: str):
        return self._open(urllib.request.Request(self.base + path))

    def post(self, path: str, fields: dict | None = None, csrf: bool = True):
        data = dict(fields or {})
        if csrf:
            data.setdefault("csrf", self.csrf or "")
        return self._open(urllib.request.Request(self.base + path, data=urllib.parse.urlencode(data).encode(),
                                                 method="POST"))

    def login(self, name: str):
        self.get("/console/login")
        return self.post("/console/login", {"name": name, "password": PASSWORDS[name]})


def start(tmp_path, config=None) -> Server:
    server = Server(tmp_path, config=config).start()
    for text in conf06_messages():
        assert "MSA|AA" in server.send(text)
    return server


@pytest.fixture
def open_server(tmp_path):
    s = start(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def users_server(tmp_path):
    s = start(tmp_path, users_config())
    yield s
    s.stop()


from tests.mllp.conftest import pki  # noqa: E402,F401 — the test certificates, for the TLS listener
