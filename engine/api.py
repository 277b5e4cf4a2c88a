"""The HTTP API (twisted.web): decisions, consent changes, DMP results, state and audit reads.

Bodies are validated with pydantic; a bad body gets 400 {"error": CODE, "detail": "..."} naming the field.
Every store operation goes through the group commit, so a 200 means the change is committed.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Literal

import structlog
from prometheus_client import generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from twisted.web import resource, server

from engine import metrics
from engine.domain import DecisionRequest
from engine.pipeline import now_utc, patient_key
from mappings.codes import meanings

log = structlog.get_logger("pamgate.api")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatientRef(Body):
    id: str | None = Field(None, min_length=1)
    authority: str | None = None
    ins: str | None = Field(None, min_length=1)
    oid: str | None = None

    @model_validator(mode="after")
    def _one(self):
        if not self.id and not self.ins:
            raise ValueError("give either id (with authority) or ins (with oid)")
        if self.ins and not self.oid:
            raise ValueError("an ins needs its oid")
        return self


class User(Body):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)
    profession: str | None = None
    specialty: str | None = None


def _aware(v: datetime | None) -> datetime | None:
    if v is None:
        return None
    return v if v.tzinfo else v.replace(tzinfo=timezone.utc)


class DecisionBody(Body):
    patient: PatientRef
    visit: str | None = None
    action: Literal["consult", "feed"]
    user: User
    mode: Literal["normal", "bris_de_glace", "centre_15"] = "normal"
    reason: str | None = None
    at: datetime | None = None
    category: str | None = None
    _at = field_validator("at")(classmethod(lambda cls, v: _aware(v)))


class ConsentBody(Body):
    patient: PatientRef
    visit: str | None = None
    consult: Literal["IC", "INC", "NA"] | None = None
    feed: Literal["INO", "IO", "NA"] | None = None
    collected_at: datetime
    collected_by: dict = Field(default_factory=dict)
    _at = field_validator("collected_at")(classmethod(lambda cls, v: _aware(v)))


class DmpResultBody(Body):
    patient: PatientRef
    user: User
    transaction: Literal["TD0.2", "TD0.3"]
    result: Literal["VALIDE", "EXPIRE", "INTERDIT", "NON_EXISTE", "OK", "FAILED"]


def to_json(value) -> bytes:
    def default(o):
        if isinstance(o, datetime):
            return o.isoformat()
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        return str(o)
    return json.dumps(value, default=default, ensure_ascii=False).encode()


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _validation_detail(e: ValidationError) -> tuple[str, str]:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "body"
    code = {"missing": "field.missing", "extra_forbidden": "field.unknown"}.get(err["type"], "field.invalid")
    msg = err["msg"].removeprefix("Value error, ")
    return code, f"{loc}: {msg}"


PATIENT_PATH = re.compile(r"^/v1/patients/([^/]+)/([^/]+)/consent$")


class Api(resource.Resource):
    """The HTTP API (`/v1/...`, `/healthz`, `/metrics`) as one Twisted resource: it checks the token and the
    body (HTTP 400 with a code on bad input), then runs the pipeline's operation through the group commit
    (`committer`) off the reactor thread, and wakes the dispatcher (`on_events`) once a call's events are
    committed. It owns no state of its own; the store is reached only through the pipeline and the commit."""
    isLeaf = True

    def __init__(self, pipeline, committer, token: str | None, max_body: int = 65_536, inbound_ready=None,
                 on_events=None):
        super().__init__()
        self.pipeline, self.committer, self.token, self.max_body = pipeline, committer, token, max_body
        # the dispatcher's wake-up, once a call's events are committed to the outbox
        self.on_events = on_events or (lambda: None)
        # serve's apply process: while it restarts, inbound messages get AE, and /healthz says so
        self.inbound_ready = inbound_ready or (lambda: True)

    def render(self, request):
        path = request.path.decode("utf-8", "replace")
        method = request.method.decode()
        try:
            if path == "/healthz" and method == "GET":
                if not self.inbound_ready():
                    raise ApiError(503, "apply.not_ready",
                                   "the apply process is not ready: starting, or starting again after it ended")
                d = self.committer.submit(lambda uow: uow.conn.exec_driver_sql("SELECT 1").scalar())
                d.addCallback(lambda _: (200, {"status": "ok"}))
            elif path == "/metrics" and method == "GET":
                self._authorize(request)
                request.setHeader(b"content-type", b"text/plain; version=0.0.4")
                return generate_latest(metrics.registry)
            else:
                self._authorize(request)
                d = self._route(method, path, request)
        except ApiError as e:
            return self._finish_now(request, e.status, {"error": e.code, "detail": e.detail})
        d.addCallbacks(lambda r: self._finish(request, *r), lambda f: self._fail(request, f))
        return server.NOT_DONE_YET

    def _authorize(self, request):
        if self.token and request.getHeader("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "auth.required", "Authorization: Bearer <token> is required")

    def _body(self, request, model):
        raw = request.content.read(self.max_body + 1)
        if len(raw) > self.max_body:
            raise ApiError(413, "body.too_large", f"the body is over {self.max_body} bytes")
        try:
            data = json.loads(raw or b"null")
        except ValueError as e:
            raise ApiError(400, "body.invalid_json", f"not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body.invalid_json", "the body must be a JSON object")
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise ApiError(400, *_validation_detail(e)) from None

    def _at(self, request, name=b"at"):
        values = request.args.get(name)
        if not values:
            return None
        try:
            return _aware(datetime.fromisoformat(values[0].decode()))
        except ValueError:
            raise ApiError(400, "query.invalid", f"{name.decode()}: not an ISO 8601 date-time") from None

    def _route(self, method, path, request):
        p = self.pipeline
        if method == "POST" and path == "/v1/decisions":
            b = self._body(request, DecisionBody)
            req = DecisionRequest(action=b.action, user=b.user.id, profession=b.user.profession,
                                  specialty=b.user.specialty, mode=b.mode, reason=b.reason, visit=b.visit,
                                  at=b.at, category=b.category)
            patient = b.patient.model_dump(exclude_none=True)

            def done(result):
                metrics.decisions.labels(b.action, result["decision"]).inc()
                self.on_events()    # decision.made, and the triggers
                return 200, result
            return self.committer.submit(lambda uow: p.decide(uow, patient, req, now_utc()),
                                         [_lock_key(patient)]).addCallback(done)
        if method == "POST" and path == "/v1/consents":
            b = self._body(request, ConsentBody)
            if b.consult is None and b.feed is None:
                raise ApiError(400, "field.missing", "consult or feed: give at least one")
            # the 2.11.1 codes mean what its mapping file says (mappings/codes.py); NA: nothing collected
            values = {"consult": meanings("consult").get(b.consult), "feed": meanings("feed").get(b.feed)}
            values.update({f"{k}.code": code for k, code in (("consult", b.consult), ("feed", b.feed)) if code})
            patient = b.patient.model_dump(exclude_none=True)
            d = self.committer.submit(lambda uow: p.record_consent(
                uow, patient, values, b.visit, b.collected_at, b.collected_by, now_utc()), [_lock_key(patient)])
            return d.addCallback(self._woken).addCallback(lambda view: (200, view))
        if method == "POST" and path == "/v1/dmp/results":
            b = self._body(request, DmpResultBody)
            patient = b.patient.model_dump(exclude_none=True)
            d = self.committer.submit(lambda uow: p.record_dmp_result(
                uow, patient, b.user.model_dump(exclude_none=True), b.transaction, b.result, now_utc()),
                [_lock_key(patient)])
            return d.addCallback(self._woken).addCallback(lambda found: (204, None) if found else (404, {
                "error": "patient.unknown", "detail": "no patient with that identifier"}))
        m = PATIENT_PATH.match(path)
        if method == "GET" and m:
            from urllib.parse import unquote
            patient = {"authority": unquote(m.group(1)), "id": unquote(m.group(2))}
            at = self._at(request) or now_utc()

            def read(uow):
                pid = p.find(uow, patient)
                return (404, {"error": "patient.unknown", "detail": "no patient with that identifier"}) \
                    if pid is None else (200, p.view(uow, pid, at))
            return self.committer.submit(read)
        if method == "GET" and path == "/v1/audit":
            args = {k.decode(): v[0].decode() for k, v in request.args.items()}
            if "id" not in args:
                raise ApiError(400, "query.missing", "id: required (with authority)")
            patient = {"authority": args.get("authority"), "id": args["id"]}

            def entries(uow):
                pid = p.find(uow, patient)
                if pid is None:
                    return 404, {"error": "patient.unknown", "detail": "no patient with that identifier"}
                ids = [pid] + uow.patient_ids_merged_into(pid)
                return 200, {"entries": uow.audit_entries(ids)}
            return self.committer.submit(entries)
        raise ApiError(404 if method in ("GET", "POST") else 405, "route.unknown", f"no route {method} {path}")

    def _woken(self, result):
        self.on_events()
        return result

    def _finish_now(self, request, status, body):
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return to_json(body)

    def _finish(self, request, status, body):
        if request._disconnected:
            return
        request.setResponseCode(status)
        if body is not None:
            request.setHeader(b"content-type", b"application/json")
            request.write(to_json(body))
        request.finish()

    def _fail(self, request, failure):
        from engine.commit import StoreUnavailable
        if failure.check(LookupError):
            status, body = 404, {"error": "patient.unknown", "detail": "no patient with that national identifier"}
        elif failure.check(StoreUnavailable):
            status, body = 503, {"error": "store.unavailable", "detail": "the store cannot commit; retry"}
        else:
            log.error("api.failed", error=failure.getErrorMessage()[:200])
            status, body = 500, {"error": "internal", "detail": "internal error; see the server log"}
        self._finish(request, status, body)


def _lock_key(patient: dict) -> str:
    if patient.get("ins"):
        return f"INS|{patient.get('oid') or ''}|{patient['ins']}"
    return patient_key(patient.get("authority"), patient["id"])


def site(api: Api) -> server.Site:
    s = server.Site(api)
    s.displayTracebacks = False
    s.noisy = False
    return s
