"""Hostile HTTP requests through a real `pamgate serve` (README "HTTP API"): never a 5xx, a 400 always says
its code in JSON, the server lives and logs no unhandled error, and decisions afterwards are still right.
PAMGATE_FUZZ_SEED and PAMGATE_FUZZ_REQUESTS change the run.
"""
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

from tests.builders import adt, zfa_2111
from tests.fuzz.checks import check_alive_and_correct, check_log
from tests.fuzz.conftest import DUMP, FIGURES, REQUESTS, SEED
from tests.fuzz.hostile_requests import TOKEN, RequestFactory
from tests.fuzz.wire import Findings, http_exchange


# /healthz answers without the token (interface.md), to GET and to HEAD, which HTTP answers as the GET
PROBES = tuple(m + p for m in (b"GET ", b"HEAD ") for p in (b"/healthz ",))


def area(raw: bytes) -> str:
    """The route a request aims at, coarsely: /v1/decisions, /v1/patients, /console, other."""
    parts = raw.split(b" ", 2)
    path = parts[1] if len(parts) > 1 else b""
    m = re.match(rb"/(v1/[a-z]+(?:/results)?|console|healthz|livez|readyz|metrics)", path)
    known = b"POST" if raw.startswith(b"POST ") else b"GET" if raw.startswith(b"GET ") else b"other method"
    return f"{known.decode()} /{m.group(1).decode() if m else '(other path)'}"


def authorized(raw: bytes) -> bool:
    """One Authorization header with the token (the scheme's case does not matter, RFC 7235)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    auth = [h.split(b":", 1)[1].strip().split(b" ", 1) for h in head if h.lower().startswith(b"authorization:")]
    return len(auth) == 1 and len(auth[0]) == 2 and auth[0][0].lower() == b"bearer" and auth[0][1] == TOKEN.encode()


def judge(port, raw, findings):
    try:
        status, head, body = http_exchange(port, raw)
    except OSError as e:
        findings.add(f"request failed ({type(e).__name__})", raw[:300])
        return
    if status is None:
        findings.add("no HTTP status line", {"request": raw[:300], "answer": head[:200]})
    elif status >= 500:
        try:
            detail = json.loads(body).get("error")
        except (ValueError, AttributeError):
            detail = "JSON" if body.startswith(b"{") else "HTML page" if b"<html>" in body else "not JSON"
        findings.add(f"HTTP {status} on {area(raw)} ({detail})", raw[:600])
    elif status < 400 and not authorized(raw) and not raw.startswith(PROBES):
        findings.add(f"{status} without the API token on {area(raw)}", raw[:600])
    elif status == 400 and raw.startswith((b"POST /v1/", b"GET /v1/")) and b"content-type: application/json" in head.lower():
        try:
            answer = json.loads(body)
            assert isinstance(answer.get("error"), str) and answer.get("detail")
        except (ValueError, AttributeError, AssertionError):
            findings.add("400 without {error, detail}", {"request": raw[:300], "answer": body[:200]})


def test_hostile_requests_never_get_5xx(fuzz_server):
    # patients the requests name, with consent, so that decisions go all the way
    for ipp in ("700001", "799999"):
        fuzz_server.send(adt("A01", ipp=ipp, visit="V1", zfa=zfa_2111("INO", "IC"), ins="1800175123456"))
    t0 = time.monotonic()
    requests = RequestFactory(SEED).requests(REQUESTS)     # 0.2 s: not worth keeping between backends
    t1 = time.monotonic()
    findings = Findings(keep=200 if DUMP else 0)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda raw: judge(fuzz_server.http_port, raw, findings), requests))
    t2 = time.monotonic()
    check_alive_and_correct(fuzz_server, findings)
    fuzz_server.stop()
    check_log(fuzz_server, findings)
    FIGURES.append(f"http[{fuzz_server.backend}]: {len(requests)} requests, generated in {t1 - t0:.1f} s, "
                   f"sent and answered in {t2 - t1:.1f} s; failure classes: {len(findings.classes)}")
    if DUMP:
        findings.dump(DUMP)
    assert not findings, f"seed {SEED}, {len(requests)} requests:\n{findings.report()}"
