"""The HTTP API never answers 5xx to a client's input (issue 11), over real HTTP to a real `pamgate serve`.

Each test sends what a hostile or careless client sent in the fuzz run, as raw bytes on a socket where
urllib would clean it up, and checks the answer is a JSON 4xx with its code, that nothing of it was stored,
and what the server log says.
"""
from __future__ import annotations

import json
import zlib
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text, update

from consent_store.store import Store
from consent_store.tables import consent_fact
from tests.serving import Server, exchange
from tests.stores import pg_database

H = "HOSP-T"
COLLECTOR = {"id": "desk-1"}
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def raw_http(port: int, request: bytes) -> tuple[int, str, bytes]:
    """One request as given, byte for byte: (status, content type, body), a chunked body put together."""
    status, headers, body = exchange(port, request)
    if headers.get(b"transfer-encoding") == b"chunked":
        out = b""
        while body:
            size, _, rest = body.partition(b"\r\n")
            n = int(size, 16)
            out, body = out + rest[:n], rest[n + 2:]
            if n == 0:
                break
        body = out
    return status, headers.get(b"content-type", b"").decode(), body


def get(server, target: bytes, headers: bytes = b"") -> tuple[int, str, bytes]:
    return raw_http(server.http_port, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                    + headers + b"\r\n")


def post(server, path: bytes, body: bytes, headers: bytes = b"") -> tuple[int, str, bytes]:
    return raw_http(server.http_port, b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                    b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
                    + headers + b"\r\n" + body)


def refused(answer, status: int, code: str) -> dict:
    got, ctype, body = answer
    assert (got, ctype) == (status, "application/json"), answer
    doc = json.loads(body)
    assert doc["error"] == code and doc["detail"], doc
    return doc


def consent(server, ipp, **kw):
    body = {"patient": {"id": ipp, "authority": H}, "consult": "IC",
            "collected_at": (NOW - timedelta(hours=1)).isoformat(), "collected_by": COLLECTOR, **kw}
    return server.http("POST", "/v1/consents", body)


def decision(ipp, **kw) -> bytes:
    body = {"patient": {"id": ipp, "authority": H}, "action": "consult",
            "user": {"id": f"doc-{ipp}", "profession": "10"}, **kw}
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("api-hostile")).start()
    yield s
    s.stop()


@pytest.fixture
def server(shared):
    """One server for the module (each start costs seconds); each test logs from its own offset on."""
    shared.log_offset = len(shared.stderr())
    return shared


@pytest.fixture
def ipp(request):
    """A patient (and a professional) of this test's own."""
    return f"T{zlib.crc32(request.node.nodeid.encode()):08x}"


def errors_logged(server) -> list[str]:
    return [line for line in server.stderr()[getattr(server, "log_offset", 0):].splitlines()
            if "[error" in line or "Traceback" in line]


def test_json_nested_deep_is_refused_as_json(server, ipp):
    # was: Twisted's HTML "Processing Failed" page, 500
    for body in (b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000,
                 b'{"patient": {"id": "P1", "authority": "H"}, "action": "consult", "user": {"id": "u", '
                 b'"profession": "10", "x": ' + b"[" * 40 + b"]" * 40 + b"}}"):
        refused(post(server, b"/v1/decisions", body), 400, "body.too_deep")
    assert errors_logged(server) == []


def test_a_query_or_path_not_utf8_is_refused(server, ipp):
    # was: 500 on /v1/audit (an HTML page); a path's %FF was read as U+FFFD and looked up
    refused(get(server, b"/v1/audit?authority=%FF&id=1"), 400, "query.invalid")
    refused(get(server, b"/v1/audit?%FF=1&id=1"), 400, "query.invalid")
    refused(get(server, b"/v1/patients/H/1/consent?at=%FF"), 400, "query.invalid")
    refused(get(server, b"/v1/patients/%FF/1/consent"), 400, "path.invalid")
    assert errors_logged(server) == []


def test_a_lone_surrogate_anywhere_is_refused(server, ipp):
    # was: 500 wherever the value reached the store or the answer (reason, visit, collected_by, user's extras)
    assert consent(server, ipp)[0] == 200
    base = b'{"patient": {"id": "P1", "authority": "HOSP-T"}, "action": "consult", "user": {"id": "u", ' \
           b'"profession": "10"}'
    for extra in (b', "reason": "\\ud800"', b', "visit": "V\\udfff"', b', "category": "\\ud800"'):
        doc = refused(post(server, b"/v1/decisions", base + extra + b"}"), 400, "field.invalid")
        assert doc["detail"].startswith(extra.split(b'"')[1].decode())
    refused(post(server, b"/v1/consents", b'{"patient": {"id": "P1", "authority": "HOSP-T"}, "consult": "IC", '
                 b'"collected_at": "2025-01-01T00:00:00Z", "collected_by": {"id": "x", "name": "\\ud800"}}'),
            400, "field.invalid")
    refused(post(server, b"/v1/consents", b'{"patient": {"id": "P1", "authority": "HOSP-T"}, "consult": "IC", '
                 b'"collected_at": "2025-01-01T00:00:00Z", "collected_by": {"id": "x", "\\ud800": 1}}'),
            400, "field.invalid")
    refused(post(server, b"/v1/dmp/results", b'{"patient": {"id": "P1", "authority": "HOSP-T"}, "transaction": '
                 b'"TD0.2", "result": "VALIDE", "user": {"id": "x", "name": "\\ud800"}}'), 400, "field.invalid")
    # numbers the store would write back as something else, or not read back at all
    refused(post(server, b"/v1/consents", b'{"patient": {"id": "P1", "authority": "HOSP-T"}, "consult": "IC", '
                 b'"collected_at": "2025-01-01T00:00:00Z", "collected_by": {"id": "x", "n": 1e400}}'),
            400, "field.invalid")
    refused(post(server, b"/v1/decisions", base + b', "n": NaN}'), 400, "body.invalid_json")
    assert errors_logged(server) == []


@pytest.mark.parametrize("edge", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"])
def test_a_date_at_the_calendar_edge_is_refused_and_leaves_nothing_behind(server, edge, ipp):
    # was: 200, and the reminder date stored made every later decision of that user answer 500
    assert consent(server, ipp)[0] == 200
    refused(post(server, b"/v1/decisions", decision(ipp, at=edge)), 400, "date.out_of_range")
    refused(get(server, f"/v1/patients/HOSP-T/{ipp}/consent".encode() + b"?at=" + edge.encode()), 400, "date.out_of_range")
    refused(post(server, b"/v1/consents", json.dumps(
        {"patient": {"id": ipp + "-2", "authority": H}, "consult": "IC", "collected_at": edge,
         "collected_by": COLLECTOR}).encode()), 400, "date.out_of_range")
    status, _, body = post(server, b"/v1/decisions", decision(ipp))
    assert status == 200, body
    assert json.loads(body)["decision"] == "permit" and json.loads(body)["reminder_due"] is True
    assert server.http("GET", f"/v1/patients/HOSP-T/{ipp}-2/consent")[0] == 404   # nothing created
    assert errors_logged(server) == []


def test_a_decision_at_a_future_instant_is_refused(server, ipp):
    # `at` is a past instant (replays, audits); a future one would store a reminder date ahead of time
    refused(post(server, b"/v1/decisions", decision(ipp, at=(NOW + timedelta(days=30)).isoformat())),
            400, "date.in_future")
    status, _, body = post(server, b"/v1/decisions", decision(ipp))
    assert status == 200 and json.loads(body)["reminder_due"] is True


def test_extreme_dates_already_stored_do_not_break_reads(server, ipp):
    # a store written before the API refused them: a reminder date, and a collection date, in year 9999
    assert consent(server, ipp)[0] == 200
    assert post(server, b"/v1/decisions", decision(ipp))[0] == 200
    store = Store(f"sqlite:///{server.tmp / 'store.db'}")
    try:
        with store.transaction() as uow:
            uow.set_reminded(f"doc-{ipp}", datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc))
            pid = uow.find_patient("PI", H, ipp)
            uow.conn.execute(update(consent_fact).where(consent_fact.c.patient_id == pid).values(
                collected_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)))
    finally:
        store.dispose()
    status, _, body = post(server, b"/v1/decisions", decision(ipp))
    assert status == 200, body
    assert json.loads(body)["reminder_due"] is False
    assert json.loads(body)["reasons"] == ["consent.not_collected"]   # collected in 9999: not yet, now
    status, view = server.http("GET", f"/v1/patients/HOSP-T/{ipp}/consent?at=2199-12-31T00:00:00Z")
    assert status == 200 and view["consent"] is None and view["gate"]["consult"] == "deny"
    assert errors_logged(server) == []


def test_values_longer_than_their_column_are_refused_not_cut(server, ipp):
    # was: the first 201-character visit stored cut to 200, the second one then collided: 500
    visit = "V" * 200
    for last in "AB":
        doc = refused(post(server, b"/v1/consents", json.dumps(
            {"patient": {"id": ipp, "authority": H}, "visit": visit + last, "consult": "IC",
             "collected_at": NOW.isoformat(), "collected_by": COLLECTOR}).encode()), 400, "field.too_long")
        assert doc["detail"].startswith("visit:")
    status, view = server.http("GET", f"/v1/patients/HOSP-T/{ipp}/consent")
    assert status == 404   # nothing was stored, not even the patient
    refused(post(server, b"/v1/decisions", decision(ipp, visit=visit + "A")), 400, "field.too_long")
    refused(post(server, b"/v1/decisions", decision(ipp, user={"id": "u" * 201, "profession": "10"})), 400,
            "field.too_long")
    refused(post(server, b"/v1/decisions", decision("1" * 201)), 400, "field.too_long")
    # each part fits, but the key the patient's events are queued under would not
    refused(post(server, b"/v1/decisions", json.dumps(
        {"patient": {"id": "1" * 150, "authority": "A" * 150}, "action": "feed",
         "user": {"id": "u", "profession": "10"}}).encode()), 400, "field.too_long")
    # at the limits (the patient's key "PI|HOSP-T|" + id is 200 characters): kept whole
    assert consent(server, "1" * 190, visit=visit)[0] == 200
    status, view = server.http("GET", f"/v1/patients/HOSP-T/{'1' * 190}/consent")
    assert status == 200 and [e["visit"] for e in view["episodes"]] == [visit]
    assert errors_logged(server) == []


def test_an_authorization_header_not_utf8_is_401(tmp_path):
    # was: 500 (Twisted's HTML page) when a token is configured
    s = Server(tmp_path, config={"api": {"token": "s3cret"}}).start()
    try:
        for value in (b"Bearer \xff\xfe", b"Bearer s\xe9cret", b"\x80", b"Bearer s3cre", b"Bearer s3cret2"):
            refused(get(s, b"/v1/audit?authority=H&id=1", b"Authorization: " + value + b"\r\n"), 401,
                    "auth.invalid")
        refused(get(s, b"/v1/audit?authority=H&id=1"), 401, "auth.required")
        assert get(s, b"/v1/audit?authority=H&id=1", b"Authorization: Bearer s3cret\r\n")[0] == 404
        assert errors_logged(s) == []
    finally:
        s.stop()


def test_a_plus_in_at_is_the_offset(server, ipp):
    # docs/store.md's own example, sent unencoded: the + was read as a space, and refused
    assert consent(server, ipp, collected_at="2025-01-06T08:00:00+00:00")[0] == 200
    status, _, body = get(server, f"/v1/patients/HOSP-T/{ipp}/consent".encode() + b"?at=2025-01-06T10:00:00+01:00")
    assert status == 200, body
    view = json.loads(body)
    assert view["at"] == "2025-01-06T10:00:00+01:00" and view["consent"]["value"] == "consent"
    status, _, body = get(server, f"/v1/patients/HOSP-T/{ipp}/consent".encode() + b"?at=2025-01-06T08:30:00%2B01:00")
    assert status == 200 and json.loads(body)["consent"] is None   # 07:30 UTC: before it was collected


def test_an_unknown_ins_is_404_without_a_traceback(server, ipp):
    # was: the right 404, and an error with a traceback in the log for a client's mistake
    status, body = server.http("POST", "/v1/consents", {
        "patient": {"ins": "180000000000000", "oid": "1.2.250.1.213.1.4.8"}, "consult": "IC",
        "collected_at": NOW.isoformat(), "collected_by": COLLECTOR})
    assert (status, body["error"]) == (404, "patient.unknown")
    assert errors_logged(server) == []


def test_an_internal_error_is_a_500_in_json_logged_once_not_a_404(server, ipp):
    # A KeyError of ours (a state the code cannot read) was answered 404 "patient unknown", since any
    # LookupError was; and a failure was logged twice, by the store thread and by the API.
    assert consent(server, ipp)[0] == 200
    store = Store(f"sqlite:///{server.tmp / 'store.db'}")
    try:
        with store.transaction() as uow:
            # a patient header without its counter: a KeyError of ours
            uow.conn.execute(text("""UPDATE patient SET state = '{"identifiers": []}' WHERE id = :p"""),
                             {"p": uow.find_patient("PI", H, ipp)})
    finally:
        store.dispose()
    before = len([line for line in server.stderr().splitlines() if "[error" in line])
    for answer in (post(server, b"/v1/decisions", decision(ipp)), get(server, f"/v1/patients/HOSP-T/{ipp}/consent".encode())):
        refused(answer, 500, "internal")
    logged = [line for line in server.stderr().splitlines() if "[error" in line][before:]
    assert len(logged) == 2, logged   # one each


@pytest.mark.parametrize("collected_by", [None, {}, {"authority": "X"}, {"id": ""}])
def test_a_consent_without_its_collector_is_refused(server, collected_by, ipp):
    # DMP/CONF.16 checks the DMP access right of whoever collected it: who is required
    body = {"patient": {"id": ipp, "authority": H}, "consult": "IC", "collected_at": NOW.isoformat()}
    if collected_by is not None:
        body["collected_by"] = collected_by
    refused(post(server, b"/v1/consents", json.dumps(body).encode()), 400, "consent.collector_missing")
    assert server.http("GET", f"/v1/patients/HOSP-T/{ipp}/consent")[0] == 404


def test_a_consent_collected_in_the_future_is_refused(server, ipp):
    refused(consent_raw(server, ipp, NOW + timedelta(hours=1)), 400, "date.in_future")
    assert server.http("GET", f"/v1/patients/HOSP-T/{ipp}/consent")[0] == 404
    # a client's clock a little ahead of ours is not the future
    assert consent_raw(server, ipp, NOW + timedelta(minutes=2))[0] == 200


def consent_raw(server, ipp, collected_at):
    return post(server, b"/v1/consents", json.dumps(
        {"patient": {"id": ipp, "authority": H}, "consult": "IC", "collected_at": collected_at.isoformat(),
         "collected_by": COLLECTOR}).encode())


def test_a_decision_without_profession_is_refused(server, ipp):
    # was a 200: the habilitation matrix is read by profession
    for user in ({"id": "doc-1"}, {"id": "doc-1", "profession": ""}, {"id": "doc-1", "profession": None}):
        refused(post(server, b"/v1/decisions", decision(ipp, user=user)), 400, "user.profession_missing")


def test_a_dmp_result_of_another_transaction_is_refused(server, ipp):
    # VALIDE answers TD0.2; TD0.3 answers OK or FAILED
    assert consent(server, ipp)[0] == 200
    for transaction, result in (("TD0.3", "VALIDE"), ("TD0.3", "INTERDIT"), ("TD0.2", "OK"), ("TD0.2", "FAILED")):
        refused(post(server, b"/v1/dmp/results", json.dumps(
            {"patient": {"id": ipp, "authority": H}, "user": {"id": "doc-1"}, "transaction": transaction,
             "result": result}).encode()), 400, "result.not_of_transaction")
    for transaction, result in (("TD0.3", "OK"), ("TD0.2", "VALIDE")):
        assert server.http("POST", "/v1/dmp/results", {"patient": {"id": ipp, "authority": H},
                                                       "user": {"id": "doc-1"}, "transaction": transaction,
                                                       "result": result})[0] == 204


def test_hostile_input_never_reaches_the_log_raw(server, ipp):
    # control characters that would forge a log line or drive a terminal, in every part of a request
    evil = "\x1b[31m\r\n2026-01-01T00:00:00Z [error    ] forged"
    q = evil.encode().replace(b"\r", b"%0D").replace(b"\n", b"%0A").replace(b"\x1b", b"%1B").replace(b" ", b"%20")
    assert consent(server, ipp)[0] == 200
    get(server, b"/v1/audit?authority=" + q + b"&id=" + q, b"User-Agent: " + evil.encode().replace(b"\r\n", b" ") + b"\r\n")
    get(server, b"/v1/patients/" + q + b"/" + q + b"/consent?at=" + q)
    get(server, b"/v1/" + q)
    post(server, b"/v1/decisions", json.dumps({"patient": {"id": evil, "authority": H}, "action": "consult",
                                               "user": {"id": evil, "profession": evil}, "reason": evil}).encode())
    post(server, b"/v1/decisions", json.dumps({evil: evil}).encode())
    post(server, b"/v1/consents", json.dumps({"patient": {"ins": evil, "oid": evil}, "consult": "IC",
                                              "collected_at": NOW.isoformat(), "collected_by": {"id": evil}}).encode())
    post(server, b"/v1/decisions", b'{"patient": ' + evil.encode())
    log = server.stderr()
    assert "\x1b" not in log and "forged" not in log


def test_on_postgresql_what_its_columns_refuse_is_a_400(tmp_path):
    # PostgreSQL holds no NUL in text and enforces VARCHAR lengths: these were 500 there
    with pg_database() as url:
        s = Server(tmp_path, store_url=url).start()
        try:
            ipp = "PG1"
            refused(consent_raw(s, "P\x00G", NOW), 400, "field.invalid")
            refused(post(s, b"/v1/decisions", json.dumps(
                {"patient": {"id": "1" * 150, "authority": "A" * 150}, "action": "feed",
                 "user": {"id": "u", "profession": "10"}}).encode()), 400, "field.too_long")
            refused(post(s, b"/v1/decisions", decision(ipp, user={"id": "u" * 201, "profession": "10"})), 400,
                    "field.too_long")
            refused(get(s, b"/v1/audit?authority=H&id=%00"), 400, "query.invalid")
            assert consent(s, "1" * 190, visit="V" * 200)[0] == 200   # at the limits: kept whole
            assert errors_logged(s) == []
        finally:
            s.stop()
