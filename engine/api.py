"""The HTTP API (twisted.web): decisions, consent changes, DMP results, state and audit reads.

Bodies are validated with pydantic; a bad body gets 400 {"error": CODE, "detail": "..."} naming the field.
Every store operation goes through the group commit, so a 200 means the change is committed. No client input
gets a 5xx: what the store could not keep as sent (a lone surrogate, a value longer than its column, a date
at the calendar's edge) is refused here, before anything is written, and any failure of ours still answers
JSON.
"""
from __future__ import annotations

import hmac
import time
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal
from urllib.parse import unquote_to_bytes

import orjson
import structlog
from prometheus_client import generate_latest
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import resource, server

from consent_store.tables import audit, episode, identifiers, max_chars, outbox, users
from engine import habilitation, logs, metrics
from engine.commit import StoreUnavailable
from engine.domain import CLOCK_SKEW, DMP_RESULTS, YEARS, DecisionRequest
from engine.pipeline import PatientUnknown, now_utc, patient_key
from mappings.codes import meanings

log = structlog.get_logger("pamgate.api")

# JSON nested deeper than this is refused: no body of the API needs more than a few levels.
MAX_DEPTH = 32
INT64 = 2 ** 63
# a lone surrogate cannot be written as UTF-8; PostgreSQL's text cannot hold NUL
_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")
UNKNOWN_PATIENT = {"error": "patient.unknown", "detail": "no patient with that identifier"}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatientRef(Body):
    id: str | None = Field(None, min_length=1, max_length=max_chars(identifiers.c.value))
    authority: str | None = Field(None, max_length=max_chars(identifiers.c.authority))
    ins: str | None = Field(None, min_length=1, max_length=max_chars(identifiers.c.value))
    oid: str | None = Field(None, max_length=max_chars(identifiers.c.authority))

    @model_validator(mode="after")
    def _one(self):
        if not self.id and not self.ins:
            raise ValueError("give either id (with authority) or ins (with oid)")
        if self.ins and not self.oid:
            raise ValueError("an ins needs its oid")
        # the patient's events are queued under "PI|authority|id", a column of its own
        key = patient_key(self.authority, self.id or self.ins)
        if len(key) > max_chars(outbox.c.patient_key):
            raise PydanticCustomError(
                "field.too_long", "authority and id together are longer than the store keeps ({n} characters "
                "with their separators)", {"n": max_chars(outbox.c.patient_key)})
        return self


class User(Body):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=max_chars(users.c.id))
    profession: str | None = None
    specialty: str | None = None
    role: str | None = None       # the second role value (R01 savoir-faire, G05 section, R85 role)


class DocumentRef(Body):
    """The document the DPI wants to show: its XDS typeCode, or only its category (TRE_A03 classCode)."""
    type: str | None = Field(None, min_length=1)
    category: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one(self):
        if self.type is None and self.category is None:
            raise ValueError("give the document's type, or its category")
        return self


class DecidingUser(User):
    """The user of a decision: the habilitation matrix is read by profession (G15), so it is required."""
    profession: str | None = Field(None, validate_default=True)

    @field_validator("profession")
    @classmethod
    def _profession(cls, v):
        if not v:
            raise PydanticCustomError("user.profession_missing",
                                      "required: the user's profession code (G15, e.g. 10 for a physician)")
        return v


class Collector(Body):
    """Who collected a consent: DMP/CONF.16 checks that professional's DMP access right."""
    model_config = ConfigDict(extra="allow")
    id: str | None = Field(None, max_length=max_chars(audit.c.user_id))
    authority: str | None = None


def _aware(v: datetime | None) -> datetime | None:
    if v is None:
        return None
    return v if v.tzinfo else v.replace(tzinfo=timezone.utc)


def _in_range(v: datetime | None) -> datetime | None:
    """A date the product can compute with; a date without an offset is UTC."""
    if v is None:
        return None
    if v.year not in YEARS:
        raise PydanticCustomError("date.out_of_range", "{value} is outside the years {first} to {last}",
                                  {"value": v.isoformat(), "first": YEARS[0], "last": YEARS[-1]})
    return _aware(v)


def _past(v: datetime | None, info: ValidationInfo) -> datetime | None:
    """An instant that has happened: later than our clock (give or take CLOCK_SKEW), it is refused."""
    v = _in_range(v)
    now = (info.context or {}).get("now") or now_utc()
    if v is not None and v - now > CLOCK_SKEW:
        raise PydanticCustomError("date.in_future", "{value} is in the future (our clock says {now})",
                                  {"value": v.isoformat(), "now": now.isoformat(timespec="seconds")})
    return v


def _visit():
    return Field(None, min_length=1, max_length=max_chars(episode.c.visit))


class DecisionBody(Body):
    patient: PatientRef
    visit: str | None = _visit()
    action: Literal["consult", "feed"]
    user: DecidingUser
    mode: Literal["normal", "bris_de_glace", "centre_15"] = "normal"
    reason: str | None = None
    at: datetime | None = None
    document: DocumentRef | None = None     # left out: may this user consult the DMP at all?
    _at = field_validator("at")(classmethod(lambda cls, v, info: _past(v, info)))


class ConsentBody(Body):
    patient: PatientRef
    visit: str | None = _visit()
    consult: Literal["IC", "INC", "NA"] | None = None
    feed: Literal["INO", "IO", "NA"] | None = None
    collected_at: datetime
    collected_by: Collector | None = Field(None, validate_default=True)
    _at = field_validator("collected_at")(classmethod(lambda cls, v, info: _past(v, info)))

    @field_validator("collected_by")
    @classmethod
    def _collector(cls, v):
        if v is None or not v.id:
            raise PydanticCustomError("consent.collector_missing",
                                      "required: who collected the consent, with their id (DMP/CONF.16 checks "
                                      "their DMP access)")
        return v


class DmpResultBody(Body):
    patient: PatientRef
    user: User
    transaction: Literal["TD0.2", "TD0.3"]
    result: Literal["VALIDE", "EXPIRE", "INTERDIT", "NON_EXISTE", "OK", "FAILED"]

    @model_validator(mode="after")
    def _of_transaction(self):
        if self.result not in DMP_RESULTS[self.transaction]:
            raise PydanticCustomError("result.not_of_transaction", "result: {result} is not an answer of {t} "
                                      "(it answers {answers})", {"result": self.result, "t": self.transaction,
                                                                 "answers": ", ".join(DMP_RESULTS[self.transaction])})
        return self


def _json_default(o):
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


# orjson writes what json.dumps(ensure_ascii=False) writes but the blanks after `,` and `:`, several times
# faster (a decision's answer is written on the reactor); dates and dataclasses through the same default
_ORJSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def to_json(value) -> bytes:
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON)
    except (orjson.JSONEncodeError, TypeError):
        pass    # what orjson refuses (a lone surrogate, an integer over 64 bits): json's way below
    text = json.dumps(value, default=_json_default, ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # a lone surrogate (in a value stored before it was refused, or in an error's detail): escaped, still JSON
        return json.dumps(value, default=_json_default).encode()


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


INTERNAL = (500, {"error": "internal", "detail": "internal error; see the server log"})
PYDANTIC_CODES = {"missing": "field.missing", "extra_forbidden": "field.unknown", "string_too_long": "field.too_long"}


def _validation_detail(e: ValidationError) -> tuple[str, str]:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    # our own validators raise their code as the error's type (consent.collector_missing, date.in_future, ...)
    code = err["type"] if "." in err["type"] else PYDANTIC_CODES.get(err["type"], "field.invalid")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "string_too_long":
        msg = f"longer than the {err['ctx']['max_length']} characters the store keeps (refused, never cut)"
    return code, f"{loc}: {msg}" if loc else msg


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


def _fits(value, depth: int = 0) -> bool:
    """Whether _storable would let the whole body through: the same checks, without naming where each value
    is (a decision's body is a dozen values, each named for nothing when all is well)."""
    if depth > MAX_DEPTH:
        return False
    t = type(value)
    if t is str:
        return _UNSTORABLE.search(value) is None
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or _UNSTORABLE.search(k) is not None or not _fits(v, depth + 1):
                return False
        return True
    if t is list:
        for v in value:
            if not _fits(v, depth + 1):
                return False
        return True
    if t is bool or value is None:
        return True
    if t is int:
        return -INT64 <= value < INT64
    if t is float:
        return math.isfinite(value)
    return False    # a type JSON does not give: _storable decides


def _storable(value, where: tuple = (), depth: int = 0) -> None:
    """Refuses what JSON can carry but the store cannot keep as sent: deep nesting, lone surrogates, NUL
    characters, numbers beyond 64 bits or not finite. Checked on the whole body, before the model."""
    if depth == 0 and _fits(value):
        return
    if depth > MAX_DEPTH:
        raise ApiError(400, "body.too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
    name = ".".join(str(w)[:40] for w in where) or "body"
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            raise ApiError(400, "field.invalid", f"{name}: holds a lone surrogate or a NUL character, which "
                                                 f"cannot be stored")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise ApiError(400, "field.invalid", f"{name}: a number beyond 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ApiError(400, "field.invalid", f"{name}: a number out of range")
    elif isinstance(value, dict):
        for k, v in value.items():
            _storable(k, where + ("(a key)",), depth)
            _storable(v, where + (k,), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _storable(v, where + (i,), depth + 1)


def _decoded(raw: bytes, where: str, code: str) -> str:
    """A part of the URL, percent-decoded as UTF-8. A `+` stays a `+`: it stands for a space only in HTML
    forms, and the API's dates carry it (`?at=2025-01-06T10:00:00+01:00`)."""
    try:
        text = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, code, f"{where}: not UTF-8 once percent-decoded") from None
    if "\x00" in text:
        raise ApiError(400, code, f"{where}: holds a NUL character")
    return text


def _query(request) -> dict[str, str]:
    """The query string's parameters (the first value of each), decoded by _decoded."""
    out = {}
    for part in request.uri.partition(b"?")[2].split(b"&"):
        if part:
            raw_key, _, raw_value = part.partition(b"=")
            key = _decoded(raw_key, "query", "query.invalid")
            out.setdefault(key, _decoded(raw_value, key[:40], "query.invalid"))
    return out


def _escaped(text: str) -> str:
    """One line of text, control characters and surrogates escaped: what reaches a log line."""
    return repr((text.splitlines() or [""])[0])[1:-1]


def _log_failure(failure: Failure, method: str) -> None:
    """A failure of ours, logged once, at ERROR: its type and where it happened, never the request's input.
    Its message may quote that input, or a patient's identity: escaped, at DEBUG only."""
    log.error("api.failed", method=_escaped(method)[:20], error=failure.type.__name__,
              where=[f"{Path(f[1]).name}:{f[2]} {f[0]}" for f in failure.frames[-6:]])
    log.debug("api.failed.detail", detail=_escaped(failure.getErrorMessage())[:200])


def _store_failed(failure: Failure):
    """A store operation that failed: the store thread logged it, with its traceback; here it only becomes
    the answer."""
    if failure.check(StoreUnavailable):
        raise ApiError(503, "store.unavailable", "the store cannot commit; retry")
    raise ApiError(INTERNAL[0], INTERNAL[1]["error"], INTERNAL[1]["detail"])


PATIENT_PATH = re.compile(rb"^/v1/patients/([^/]+)/([^/]+)/consent$")
PATIENT_INS_PATH = re.compile(rb"^/v1/patients/ins/([^/]+)/([^/]+)/consent$")
AUDIT_PAGE, AUDIT_PAGE_MAX = 100, 1000
STORE_READ_TIMEOUT = 3.0     # seconds /metrics and /v1/status wait for the store's figures


_GET = ("GET", "HEAD")
_METHODS = {b"/healthz": _GET, b"/livez": _GET, b"/readyz": _GET, b"/metrics": _GET, b"/v1/status": _GET,
            b"/v1/audit": _GET, b"/v1/decisions": ("POST",), b"/v1/consents": ("POST",),
            b"/v1/dmp/results": ("POST",)}


def _allowed(path: bytes) -> tuple:
    """The methods a path of the API takes; () for a path that is not one."""
    if PATIENT_PATH.match(path) or PATIENT_INS_PATH.match(path):
        return _GET
    return _METHODS.get(path, ())


def _reactor():
    from twisted.internet import reactor
    return reactor

# the API's other paths, logged as they are (any other path is not: see logged_path)
ROUTES = frozenset({b"/healthz", b"/metrics", b"/v1/decisions", b"/v1/consents", b"/v1/dmp/results", b"/v1/audit", b"/livez", b"/readyz", b"/v1/status"})


class Api(resource.Resource):
    """The HTTP API (`/v1/...`, `/healthz`, `/metrics`) as one Twisted resource: it checks the token and the
    body (HTTP 400 with a code on bad input), then runs the pipeline's operation through the group commit
    (`committer`) off the reactor thread, and wakes the dispatcher (`on_events`) once a call's events are
    committed. It owns no state of its own; the store is reached only through the pipeline and the commit."""
    isLeaf = True

    def __init__(self, pipeline, committer, token: str | None, max_body: int = 65_536, inbound_ready=None,
                 on_events=None, destinations=(), about=None, open_probes: bool = False):
        super().__init__()
        self.open_probes = open_probes
        # `GET /v1/status`: what the server knows of itself (version, configuration, endpoints, store,
        # apply process), a callable so that it is read at each call
        self.about = about or (lambda: {})
        # the configured destinations' names: their gauges are read from the store at each scrape
        self.destinations = tuple(destinations)
        self.pipeline, self.committer, self.token, self.max_body = pipeline, committer, token, max_body
        # the dispatcher's wake-up, once a call's events are committed to the outbox
        self.on_events = on_events or (lambda: None)
        # serve's apply process: while it restarts, inbound messages get AE, and /healthz says so
        self.inbound_ready = inbound_ready or (lambda: True)

    def render(self, request):
        # Twisted names itself and its version here by default: an attacker's first look-up
        request.setHeader(b"server", b"pamgate")
        method = request.method.decode("ascii", "replace")
        _access_logged(request, method)
        try:
            answer = self._answer(method, request)
        except ApiError as e:
            return self._finish_now(request, e.status, {"error": e.code, "detail": e.detail})
        except Exception:  # noqa: BLE001 — a failure of ours still answers JSON (never Twisted's HTML page)
            _log_failure(Failure(), method)
            return self._finish_now(request, *INTERNAL)
        if isinstance(answer, bytes):
            return answer
        answer.addCallback(lambda r: self._finish(request, *r))
        answer.addErrback(lambda f: self._fail(request, f, method))
        return server.NOT_DONE_YET

    def _answer(self, method, request):
        """bytes answered at once, or a Deferred of (status, body)."""
        path = request.path
        if method == "HEAD":
            # HTTP: a HEAD is answered as the GET, without the body (Twisted leaves it out); probes use it
            method = "GET"
        if path == b"/healthz" and method == "GET":
            return self._ready()
        if path in (b"/livez", b"/readyz") and method == "GET":
            if not self.open_probes:
                self._authorize(request)
            if path == b"/livez":
                # the process answers: nothing else is looked at, so a store outage never restarts it
                return self._finish_now(request, 200, {"status": "ok"})
            return self._ready()
        if path == b"/metrics" and method == "GET":
            self._authorize(request)
            return self._metrics(request)
        self._authorize(request)
        return self._route(method, path, request)

    def _ready(self):
        """/readyz (and /healthz, its older name): the apply process is ready and the store answers."""
        def unavailable(code, reason):
            return 503, {"status": "unavailable", "error": code, "reason": reason}
        if not self.inbound_ready():
            return defer.succeed(unavailable(
                "apply.not_ready", "the apply process is not ready: starting, or starting again after it ended"))

        def failed(failure):
            failure.trap(ApiError)
            return unavailable(failure.value.code, failure.value.detail)
        return self._submit(lambda uow: uow.ping()).addCallbacks(lambda _: (200, {"status": "ok"}), failed)

    def _metrics(self, request):
        """The store's gauges read now (indexed queries), then every metric; a store that does not answer
        leaves those gauges as last read, and the rest is answered all the same."""
        def text(_):
            request.setHeader(b"content-type", b"text/plain; version=0.0.4")
            return 200, generate_latest(metrics.registry)
        def unread(failure):
            metrics.store_up.set(0)
            log.warning("metrics.store_unread", error=failure.type.__name__)
        d = self.committer.submit(lambda uow: metrics.from_store(uow, self.destinations))
        # a store that does not answer (each attempt may wait 10 s) must not make the scrape time out
        d.addTimeout(STORE_READ_TIMEOUT, _reactor())
        d.addCallbacks(lambda _: metrics.store_up.set(1), unread)
        return d.addCallback(text)

    def _status(self):
        """One screen of the running instance (`pamgate status`): no patient identity in it."""
        now = time.time()

        def answer(read):
            body = {**self.about(), "store_answers": read is not None}
            summary = (read or {}).get("destinations", {})
            body["destinations"] = {
                name: {"pending": summary.get(name, {}).get("pending", 0),
                       "dead": summary.get(name, {}).get("dead", 0),
                       "oldest_pending_age_seconds": round(now - oldest.timestamp(), 1)
                       if (oldest := summary.get(name, {}).get("oldest_pending_at")) else None}
                for name in self.destinations} if read is not None else None
            body["journal_rows"] = (read or {}).get("journal_rows")
            body["senders"] = {s: datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")
                               for s, t in sorted(metrics.last_seen.items())}
            return 200, body
        d = self.committer.submit(lambda uow: metrics.from_store(uow, self.destinations))
        d.addTimeout(STORE_READ_TIMEOUT, _reactor())
        return d.addErrback(lambda f: None).addCallback(answer)

    def _authorize(self, request):
        """`Authorization: Bearer <token>`, the scheme's case aside (RFC 7235); the token compared as bytes,
        in constant time. A missing token and a wrong one get different codes; both a 401 that names the
        scheme (RFC 6750)."""
        if not self.token:
            return
        given = request.getHeader(b"authorization")
        if given is None:
            self._auth_failed(request, "none")
            request.setHeader(b"www-authenticate", b'Bearer realm="pamgate"')
            raise ApiError(401, "auth.required", "Authorization: Bearer <token> is required")
        scheme, _, token = given.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.token.encode()):
            self._auth_failed(request, "given")
            request.setHeader(b"www-authenticate", b'Bearer realm="pamgate", error="invalid_token"')
            raise ApiError(401, "auth.invalid", "the Authorization header does not hold the API token "
                                                "(Bearer <token>)")

    def _auth_failed(self, request, token: str) -> None:
        log.warning("http.auth_failed", method=_escaped(request.method.decode("ascii", "replace"))[:20],
                    path=logged_path(request.path), peer=_peer(request), token=token)

    def _body(self, request, model):
        raw = request.content.read(self.max_body + 1)
        if len(raw) > self.max_body:
            raise ApiError(413, "body.too_large", f"the body is over {self.max_body} bytes")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = self._json(raw)     # read again by json, whose errors name what is wrong
        _storable(data)    # first: a body nested too deep is refused as such, whatever its top
        if not isinstance(data, dict):
            raise ApiError(400, "body.invalid_json", "the body must be a JSON object")
        try:
            return model.model_validate(data, context={"now": now_utc()})
        except ValidationError as e:
            raise ApiError(400, *_validation_detail(e)) from None

    @staticmethod
    def _json(raw: bytes):
        """A body orjson refused, read by json: what orjson refuses but json reads (a lone surrogate, a number
        beyond 64 bits, UTF-16) is then refused by _storable, naming the field; what neither reads gets json's
        message."""
        try:
            return json.loads(raw or b"null", parse_constant=_not_json)
        except RecursionError:
            raise ApiError(400, "body.too_deep", f"JSON nested deeper than {MAX_DEPTH} levels") from None
        except ValueError as e:
            raise ApiError(400, "body.invalid_json", f"not valid JSON: {e}") from None

    def _submit(self, work, keys=()):
        return self.committer.submit(work, keys).addErrback(_store_failed)

    def _route(self, method, path: bytes, request):
        p = self.pipeline
        if method == "GET" and path == b"/v1/status":
            return self._status()
        if method == "POST" and path == b"/v1/decisions":
            b = self._body(request, DecisionBody)
            doc_type, category = self._document(b.document)
            req = DecisionRequest(action=b.action, user=b.user.id, profession=b.user.profession,
                                  specialty=b.user.specialty, mode=b.mode, reason=b.reason, visit=b.visit,
                                  at=b.at, category=category, role=b.user.role, document_type=doc_type)
            patient = b.patient.model_dump(exclude_none=True)
            started = time.perf_counter()

            def done(result):
                metrics.decision_latency.observe(time.perf_counter() - started)
                self.on_events()    # decision.made, and the triggers
                return 200, result
            # one step for both outcomes: the store's failure becomes its answer (_store_failed)
            return self.committer.submit(*decision_operation(p, patient, req)).addCallbacks(done, _store_failed)
        if method == "POST" and path == b"/v1/consents":
            b = self._body(request, ConsentBody)
            if b.consult is None and b.feed is None:
                raise ApiError(400, "field.missing", "consult or feed: give at least one")
            patient = b.patient.model_dump(exclude_none=True)
            collector = b.collected_by.model_dump(exclude_unset=True)
            return self._submit(*consent_operation(p, patient, b.consult, b.feed, b.visit, b.collected_at,
                                                   collector)).addCallback(self._woken)
        if method == "POST" and path == b"/v1/dmp/results":
            b = self._body(request, DmpResultBody)
            patient = b.patient.model_dump(exclude_none=True)
            d = self._submit(lambda uow: p.record_dmp_result(
                uow, patient, b.user.model_dump(exclude_none=True), b.transaction, b.result, now_utc()),
                [_lock_key(patient)])
            return d.addCallback(self._woken).addCallback(lambda found: (204, None) if found else (404, UNKNOWN_PATIENT))
        m_ins = PATIENT_INS_PATH.match(path)
        m = m_ins or PATIENT_PATH.match(path)
        if method == "GET" and m:
            first, second = (_decoded(m.group(1), "oid" if m_ins else "authority", "path.invalid"),
                             _decoded(m.group(2), "ins" if m_ins else "id", "path.invalid"))
            patient = {"oid": first, "ins": second} if m_ins else {"authority": first, "id": second}
            at = self._instant(_query(request), "at") or now_utc()

            def read(uow):
                pid = p.find(uow, patient)
                return (404, UNKNOWN_PATIENT) if pid is None else (200, p.view(uow, pid, at))
            return self._submit(read)
        if method == "GET" and path == b"/v1/audit":
            return self._audit(_query(request))
        shown = path.decode("utf-8", "replace")[:200]
        allowed = _allowed(path)
        if allowed:
            # a path of the API asked with another method: 405 naming those it takes (RFC 9110 §15.5.6)
            request.setHeader(b"allow", ", ".join(allowed).encode())
            raise ApiError(405, "method.not_allowed", f"{method[:20]} is not allowed here; this path takes "
                                                      f"{', '.join(allowed)}")
        raise ApiError(404, "route.unknown", f"no route {method[:20]} {shown}")

    def _audit(self, args: dict):
        """GET /v1/audit: by patient (IPP: authority and id; or INS: ins and oid, with the patients merged
        into it), by user, by time (`since` included, `until` excluded), or one entry (`audit_id`); paged by
        `limit` and the cursor `after` (the `next` of the page before)."""
        known = {"authority", "id", "ins", "oid", "user", "since", "until", "after", "limit", "audit_id"}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ApiError(400, "query.invalid", f"{unknown[0][:40]}: not a parameter of /v1/audit (it takes "
                                                 f"{', '.join(sorted(known))})")
        patient = None
        if "ins" in args or "oid" in args:
            if not args.get("ins") or not args.get("oid") or "id" in args:
                raise ApiError(400, "query.missing", "ins and oid: give both, and no id")
            patient = {"ins": args["ins"], "oid": args["oid"]}
        elif "id" in args or "authority" in args:
            if not args.get("id"):
                raise ApiError(400, "query.missing", "id: required (with authority)")
            patient = {"authority": args.get("authority"), "id": args["id"]}
        since, until = self._instant(args, "since"), self._instant(args, "until")
        limit = self._count(args, "limit", AUDIT_PAGE, 1, AUDIT_PAGE_MAX)
        after = self._count(args, "after", None, 0, INT64 - 1)
        filters = dict(user=args.get("user") or None, since=since, until=until, after=after, limit=limit,
                       audit_id=args.get("audit_id") or None)

        def entries(uow):
            ids = None
            if patient is not None:
                pid = self.pipeline.find(uow, patient)
                if pid is None:
                    return 404, UNKNOWN_PATIENT
                ids = [pid] + uow.patient_ids_merged_into(pid)
            page = uow.audit_entries(ids, **filters)
            return 200, {"entries": page, "next": page[-1]["seq"] if len(page) == limit else None}
        return self._submit(entries)

    def _instant(self, args: dict, name: str) -> datetime | None:
        value = args.get(name)
        if not value:
            return None
        try:
            return _in_range(datetime.fromisoformat(value))
        except PydanticCustomError as e:
            raise ApiError(400, e.type, f"{name}: {e.message()}") from None
        except ValueError:
            raise ApiError(400, "query.invalid", f"{name}: not an ISO 8601 date-time") from None

    @staticmethod
    def _count(args: dict, name: str, default, low: int, high: int):
        value = args.get(name)
        if value is None or value == "":
            return default
        if not value.isascii() or not value.isdigit() or not low <= int(value) <= high:
            raise ApiError(400, "query.invalid", f"{name}: a whole number from {low} to {high}")
        return int(value)

    def _document(self, doc):
        """(type, category) of the document asked about, its category derived from the type."""
        matrix = self.pipeline.policy.habilitation
        if doc is None:
            return None, None
        if matrix is None:
            return doc.type, doc.category
        try:
            return habilitation.document(matrix.reference, doc.type, doc.category)
        except habilitation.UnknownDocument as e:
            raise ApiError(400, e.code, e.detail) from None

    def _woken(self, result):
        self.on_events()
        return result

    def _finish_now(self, request, status, body):
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return to_json(body)

    def _finish(self, request, status, body):
        if request._disconnected or request.finished:
            return
        data = None if body is None else body if isinstance(body, bytes) else to_json(body)
        request.setResponseCode(status)
        if data is not None:
            if not isinstance(body, bytes):       # bytes: a text of its own type (/metrics)
                request.setHeader(b"content-type", b"application/json")
            # the length given: the body goes out with the headers, not framed in chunks
            request.setHeader(b"content-length", b"%d" % len(data))
            request.write(data)
        request.finish()

    def _fail(self, request, failure, method):
        if failure.check(ApiError):
            e = failure.value
            status, body = e.status, {"error": e.code, "detail": e.detail}
        else:
            _log_failure(failure, method)
            status, body = INTERNAL
        try:
            self._finish(request, status, body)
        except Exception:  # noqa: BLE001 — the answer had begun: closing is all that is left
            _log_failure(Failure(), method)
            try:
                request.loseConnection()
            except Exception:  # noqa: BLE001 — already gone
                pass


def decision_operation(pipeline, patient: dict, request: DecisionRequest):
    """POST /v1/decisions: (work(uow) -> the decision, the keys it locks), for the group committer. The
    console's capture screen submits the same operation: one path, one audit."""
    def work(uow):
        result = pipeline.decide(uow, patient, request, now_utc())
        metrics.decisions.labels(request.action, result["decision"]).inc()
        return result
    return work, [_lock_key(patient)]


def consent_operation(pipeline, patient: dict, consult: str | None, feed: str | None, visit: str | None,
                      collected_at: datetime, collector: dict):
    """POST /v1/consents: (work(uow) -> (status, body), the keys it locks), the ZFA codes (IC/INC/NA,
    INO/IO/NA) as the API takes them. The console's capture screen submits the same operation."""
    # the 2.11.1 codes mean what its mapping file says (mappings/codes.py); NA: nothing collected
    values = {"consult": meanings("consult").get(consult), "feed": meanings("feed").get(feed)}
    values.update({f"{k}.code": code for k, code in (("consult", consult), ("feed", feed)) if code})

    def record(uow):
        try:
            return 200, pipeline.record_consent(uow, patient, values, visit, collected_at, collector, now_utc())
        except PatientUnknown:   # raised before anything was written
            return 404, {"error": "patient.unknown", "detail": "no patient with that national identifier"}
    return record, [_lock_key(patient)]


def logged_path(path: bytes) -> str:
    """The request's path as the access log shows it: the patient's segments masked (a patient path names
    the patient), the query never (it may name one too)."""
    if path in ROUTES:
        return path.decode("ascii")
    if PATIENT_PATH.match(path) or PATIENT_INS_PATH.match(path):
        return "/v1/patients/•••/•••/consent"
    return "(another path)"   # whatever a client wrote there, it may name a patient or forge a line


def _peer(request) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", None) or str(peer)


def _access_logged(request, method: str) -> None:
    """One info line per HTTP request once answered: method, path (masked), status, duration, peer. Where
    info lines are not written, nothing is set up for it (a Deferred and a logger's bind per request)."""
    if not logs.enabled("info"):
        return
    started = time.perf_counter()

    def done(_):
        log.info("http.request", method=method[:20], path=logged_path(request.path), status=request.code,
                 duration_ms=round((time.perf_counter() - started) * 1000, 1), peer=_peer(request))
    request.notifyFinish().addBoth(done)


def _lock_key(patient: dict) -> str:
    if patient.get("ins"):
        return f"INS|{patient.get('oid') or ''}|{patient['ins']}"
    return patient_key(patient.get("authority"), patient["id"])


class _Request(server.Request):
    """A request whose headers and body must all arrive within the site's `request_timeout` of its first
    line (a client that trickles them, slowloris, would hold its connection forever), and whose body may not
    pass `max_body` bytes (Twisted keeps a body whole, in a temporary file past 100 KB, before the API reads
    it: a huge one would fill the disk). Either is answered on the wire and the connection closed."""

    def __init__(self, channel, *args, **kwargs):
        super().__init__(channel, *args, **kwargs)
        guard = getattr(channel, "site", None)
        self._limit = getattr(guard, "max_body", None)
        self._received = 0
        timeout = getattr(guard, "request_timeout", None)
        self._deadline = channel.callLater(timeout, self._too_slow) if timeout else None

    def gotLength(self, length):
        if self._limit is not None and length is not None and length > self._limit:
            return self._refuse(413, "body.too_large", f"the body is over {self._limit} bytes")
        super().gotLength(length)

    def handleContentChunk(self, data):
        self._received += len(data)
        if self._limit is not None and self._received > self._limit:
            return self._refuse(413, "body.too_large", f"the body is over {self._limit} bytes")
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        self._stop_deadline()
        super().requestReceived(command, path, version)

    def connectionLost(self, reason):
        self._stop_deadline()
        super().connectionLost(reason)

    def _stop_deadline(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self):
        self._deadline = None
        log.warning("http.request_too_slow", peer=_peer(self), limit=self.channel.site.request_timeout)
        self._refuse(408, "request.timeout", "the request did not arrive in time")

    def _refuse(self, status: int, code: str, detail: str):
        """Answered before the request is whole, so outside `render`: raw, then the connection closed. Only
        when it is the connection's first request in line: an answer still owed before it must not be cut
        into (then the connection is only closed)."""
        self._stop_deadline()
        channel, transport = self.channel, self.channel.transport
        if transport is None or getattr(self, "_refused", False):
            return
        self._refused = True
        if channel.requests and channel.requests[0] is self:
            body = json.dumps({"error": code, "detail": detail}).encode()
            reason = {408: b"Request Timeout", 413: b"Content Too Large"}[status]
            transport.write(b"HTTP/1.1 %d %s\r\nServer: pamgate\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                            % (status, reason, len(body), body))
        transport.loseConnection()


class _Site(server.Site):
    """The HTTP listener: at most `max_connections` connections (one more is closed at once, as the MLLP
    listener does, so that clients cannot take every file descriptor of the process and starve the MLLP
    listeners and the store), an idle connection closed after `idle_timeout` (Twisted's default is 12 h),
    and each request bounded by `_Request`."""

    def __init__(self, api, *, max_connections, idle_timeout, request_timeout, max_body):
        # bodies are left as they came: the API reads JSON, and Twisted's form parsing would first parse each
        # request's Content-Type with the email package (a sixth of the reactor's time per decision); the
        # console reads its own forms (console.pages._form)
        super().__init__(api, requestFactory=_Request, timeout=idle_timeout, parsePOSTFormSubmission=False)
        self.max_connections, self.request_timeout, self.max_body = max_connections, request_timeout, max_body
        self.open_connections = 0

    def buildProtocol(self, addr):
        if self.open_connections >= self.max_connections:
            log.warning("http.connection_refused", peer=getattr(addr, "host", str(addr)),
                        reason="max_connections", limit=self.max_connections)
            return None
        channel = super().buildProtocol(addr)
        self.open_connections += 1
        lost = channel.connectionLost

        def connectionLost(reason):
            self.open_connections -= 1
            return lost(reason)
        channel.connectionLost = connectionLost
        return channel


def site(api: Api, *, max_connections: int = 256, idle_timeout: float = 300.0, request_timeout: float = 30.0,
         max_body: int = 65_536) -> server.Site:
    s = _Site(api, max_connections=max_connections, idle_timeout=idle_timeout, request_timeout=request_timeout,
              max_body=max_body)
    s.displayTracebacks = False
    s.noisy = False
    # the API writes its own access line (_access_logged, the patient's path segments masked); Twisted's
    # would name them, and costs a log event per request
    s.log = lambda request: None
    return s
