"""Liveness apart from readiness, and the API token's answers (issue 16), on a real `pamgate serve`."""
from __future__ import annotations

import json

from tests.durability.support import wait_until
from tests.serving import Server, exchange

TOKEN = "s3cret"


def get(server, path: bytes, auth: bytes | None = None):
    extra = b"Authorization: " + auth + b"\r\n" if auth is not None else b""
    return exchange(server.http_port, b"GET " + path + b" HTTP/1.0\r\nHost: t\r\n" + extra
                    + b"\r\n")


def test_tokens_and_probes(tmp_path):
    server = Server(tmp_path, config={"api": {"token": TOKEN}}).start()
    bearer = b"Bearer " + TOKEN.encode()
    try:
        # interface.md: with a token, every call but /healthz needs it; /livez and /readyz included
        assert get(server, b"/livez", bearer)[0] == 200
        wait_until(lambda: get(server, b"/readyz", bearer)[0] == 200, timeout=30, what="ready")
        for path, auth in ((b"/livez", bearer), (b"/readyz", bearer), (b"/healthz", None)):
            status, headers, body = get(server, path, auth)
            assert status == 200 and json.loads(body) == {"status": "ok"}, (path, status, body)
        for path in (b"/livez", b"/readyz"):
            status, headers, body = get(server, path)
            assert status == 401 and json.loads(body)["error"] == "auth.required", (path, status, body)
        # missing, then wrong: both 401 naming the scheme, with different codes
        status, headers, body = get(server, b"/metrics")
        assert status == 401 and json.loads(body)["error"] == "auth.required"
        assert headers[b"www-authenticate"].startswith(b"Bearer")
        for wrong in (b"Bearer nope", b"Basic czNjcmV0", b"Bearer", b"s3cret"):
            status, headers, body = get(server, b"/metrics", wrong)
            assert status == 401 and json.loads(body)["error"] == "auth.invalid", wrong
            assert headers[b"www-authenticate"].startswith(b"Bearer")
        # the scheme's case does not matter (RFC 7235)
        for scheme in (b"Bearer", b"bearer", b"BEARER", b"bEaReR"):
            assert get(server, b"/metrics", scheme + b" " + TOKEN.encode())[0] == 200, scheme
        # no version of Twisted given away, on any answer
        for path in (b"/healthz", b"/livez", b"/metrics", b"/nowhere"):
            server_header = get(server, path)[1].get(b"server", b"")
            assert b"twisted" not in server_header.lower() and server_header == b"pamgate", server_header
    finally:
        server.stop()


def test_probes_opened_by_configuration(tmp_path):
    # api.open_probes: an orchestrator that cannot send a header; the rest of the API stays closed
    server = Server(tmp_path, config={"api": {"token": TOKEN, "open_probes": True}}).start()
    try:
        assert get(server, b"/livez")[0] == 200
        wait_until(lambda: get(server, b"/readyz")[0] == 200, timeout=30, what="ready")
        assert get(server, b"/metrics")[0] == 401
    finally:
        server.stop()
