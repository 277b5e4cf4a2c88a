"""The console's pages (twisted.web, jinja2): one resource under /console/, its routes in one table.

Reads and actions run as the API's do, through the group committer; the consent capture screen submits
the very operations of POST /v1/consents and POST /v1/decisions (engine.api), so there is one path and one
audit. Every action writes an audit entry naming the console user who did it.
"""
from __future__ import annotations

import re
import tempfile
from datetime import datetime, timedelta, timezone
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote
from zoneinfo import ZoneInfo

import jinja2
import structlog
from twisted.internet import threads
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.http import parse_qs

from console import masking, reads
from console.access import COOKIE, Access, is_loopback
from console.wording import (ACTION_FR, ACTION_WORDS, DECISION_FR, EVENT_FR, ITEMS, KIND_FR, VALUE_FR,
                             chain_break_fr, choice_fr, movement_state, reason_fr, results_fr)
from engine.domain import in_zone

log = structlog.get_logger("pamgate.console")

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
ROUTES = []   # (method, compiled path, handler name, operator only)


def route(method: str, pattern: str, operator: bool = False):
    def mark(fn):
        ROUTES.append((method, re.compile(f"^/console{pattern}$"), fn.__name__, operator))
        return fn
    return mark


class Refused(Exception):
    """An answer other than the page: status and a French message for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Redirect(Exception):
    def __init__(self, to: str):
        super().__init__(to)
        self.to = to


class Answer:
    def __init__(self, body: bytes, content_type: bytes = b"text/html; charset=utf-8", status: int = 200,
                 headers: dict | None = None):
        self.body, self.content_type, self.status, self.headers = body, content_type, status, headers or {}


def patient_path(authority, ipp=None) -> str:
    """The {authority}/{id} of a patient's pages, each part percent-encoded; also takes (authority, id)."""
    if isinstance(authority, (tuple, list)):
        authority, ipp = authority
    return f"{quote(authority or '', safe='')}/{quote(ipp or '', safe='')}"


class Console(resource.Resource):
    isLeaf = True

    def __init__(self, pipeline, committer, cfg, on_events=None, inbound_ready=None, listeners=()):
        super().__init__()
        self.listeners = listeners   # the MLLP listeners' factories: their open connections, on the board
        self.pipeline, self.committer, self.cfg = pipeline, committer, cfg
        self.on_events = on_events or (lambda: None)
        self.inbound_ready = inbound_ready or (lambda: True)
        self.access = Access(cfg.console.users)
        # an API behind a token is not bypassed by an open console: without users, it stays closed
        self.closed = self.access.open and bool(cfg.api.token)
        self.professions = {u.name: u.profession for u in cfg.console.users}
        self.zone = ZoneInfo(cfg.timezone)
        self.silent_after = _span(cfg.console.silent_after)
        self.verify_every = _span(cfg.console.audit_verify_every)
        # the audit chain's verification asked from the board, while it runs ({"by", "since"}), and the last
        # one's failure (it could not be read or recorded), until the next
        self.verifying: dict | None = None
        self.verify_failed: str | None = None
        self._verification = None    # its Deferred: the board waits on it (two seconds at most)
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                                      trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(when=self.when, age=_age, pp=patient_path, reason=reason_fr,
                                mask=masking.shown, action=lambda a: ACTION_FR.get(a, a),
                                choice=choice_fr, item=lambda i: ITEMS.get(i, i), kind=lambda k: KIND_FR.get(k, k),
                                decision=lambda d: DECISION_FR.get(d, d), value=lambda v: VALUE_FR.get(str(v), v),
                                thousands=lambda n: f"{n or 0:,}".replace(",", "\u202f"),
                                hl7_event=lambda e: EVENT_FR.get(e or "", ""),
                                movement_action=lambda a: ACTION_WORDS.get(a, a), movement_state=movement_state)

    # --- the request's life ----------------------------------------------------------------------------
    def render(self, request):
        try:
            answer = self._dispatch(request)
        except Exception:  # noqa: BLE001 — the page is still an answer
            return self._failed(request, Failure())
        if isinstance(answer, Answer):
            return self._write(request, answer)
        answer.addCallbacks(lambda a: self._finish(request, a), lambda f: self._finish(request, self._fail(request, f)))
        return server.NOT_DONE_YET

    def _dispatch(self, request):
        path = request.path.decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace")
        if path == "/console":
            raise_redirect("/console/")
        if self.closed:
            raise Refused(403, "Console fermée : l'API exige un jeton (api.token) ; configurez console.users "
                               "pour ouvrir la console à ses utilisateurs.")
        if path == "/console/style.css":
            return Answer((STATIC / "style.css").read_bytes(), b"text/css; charset=utf-8")
        if self.access.open and not is_loopback(request.getClientAddress().host):
            raise Refused(403, "Console ouverte sur la boucle locale seulement : configurez console.users pour "
                               "y accéder d'ailleurs.")
        session = self.access.session(_cookie(request))
        if session is None:
            session = self.access.new_session()
            self._set_cookie(request, session)
        request.console_session = session
        form = _form(request) if method == "POST" else {}
        if method == "POST" and not self.access.csrf_ok(session, form.get("csrf")):
            raise Refused(403, "Formulaire expiré ou venu d'ailleurs (jeton CSRF invalide) : rechargez la page.")
        if path == "/console/login":
            if self.access.open and method == "GET":
                raise_redirect("/console/")
            return self.login(request, session, form) if method == "POST" else self.page(
                session, "login.html", title="Connexion", next=_query(request).get("next", "/console/"))
        if session.user is None:
            raise_redirect("/console/login?next=" + quote(request.uri.decode("utf-8", "replace"), safe=""))
        for m, pattern, name, operator in ROUTES:
            match = pattern.match(path)
            if match and m == method:
                if operator and not session.operator:
                    log.info("console.refused_action", user=session.user, action=name)
                    raise Refused(403, "Action réservée aux opérateurs : votre rôle (lecteur) permet seulement "
                                       "de consulter.")
                return getattr(self, name)(request, session, form, *[unquote(g) for g in match.groups()])
        raise Refused(404, "Page inconnue.")

    def _set_cookie(self, request, session) -> None:
        flags = "; Secure" if request.isSecure() else ""
        request.setHeader(b"set-cookie", f"{COOKIE.decode()}={session.token}; Path=/console; HttpOnly; "
                                         f"SameSite=Strict{flags}".encode())

    def _write(self, request, a: Answer) -> bytes:
        request.setResponseCode(a.status)
        request.setHeader(b"content-type", a.content_type)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-frame-options", b"SAMEORIGIN")
        request.setHeader(b"content-security-policy", b"default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                                      b"form-action 'self'; frame-ancestors 'self'")
        for k, v in a.headers.items():
            request.setHeader(k, v)
        return a.body

    def _finish(self, request, a: Answer) -> None:
        if request._disconnected or request.finished:
            return
        request.write(self._write(request, a))
        request.finish()

    def _fail(self, request, failure: Failure) -> Answer:
        if failure.check(Refused, Redirect):
            return self._refused(request, failure.value)
        log.error("console.failed", error=failure.type.__name__,
                  where=[f"{Path(f[1]).name}:{f[2]} {f[0]}" for f in failure.frames[-6:]])
        return self._refused(request, Refused(500, "Erreur interne de la console : voir le journal du serveur."))

    def _failed(self, request, failure: Failure) -> bytes:
        return self._write(request, self._fail(request, failure))

    def _refused(self, request, e) -> Answer:
        if isinstance(e, Redirect):
            return Answer(b"", status=303, headers={b"location": e.to.encode()})
        session = getattr(request, "console_session", None)
        return Answer(self.env.get_template("error.html").render(
            title="Refusé" if e.status == 403 else "Erreur", message=e.message, status=e.status,
            session=session, user=session and session.user, csrf=session and session.csrf,
            operator=session and session.operator).encode(), status=e.status)

    # --- helpers -----------------------------------------------------------------------------------------
    def page(self, session, template: str, **ctx) -> Answer:
        html = self.env.get_template(template).render(session=session, user=session.user, csrf=session.csrf,
                                                      operator=session.operator, **ctx)
        return Answer(html.encode())

    def store(self, work, keys=()):
        return self.committer.submit(work, keys)

    def when(self, dt, seconds=True) -> str:
        dt = in_zone(dt, self.zone)
        if not isinstance(dt, datetime):
            return dt or "—"
        return dt.strftime("%d/%m/%Y %H:%M:%S" if seconds else "%d/%m/%Y %H:%M")

    def local(self, text: str | None) -> datetime | None:
        """A date-time typed in a form (the configured zone when it has no offset)."""
        if not text:
            return None
        # a `+` of an offset typed in the address bar arrives as a space
        text = re.sub(r" (\d\d:?\d\d)$", r"+\1", text.strip())
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise Refused(400, f"Date invalide : {text[:40]!r} (attendu : AAAA-MM-JJTHH:MM).") from None
        return (dt.replace(tzinfo=self.zone) if dt.tzinfo is None else dt).astimezone(timezone.utc)

    def audit(self, uow, session, kind: str, patient_id=None, **payload) -> str:
        return uow.audit(at=_now(), patient_id=patient_id, kind=kind,
                         payload={"by": session.user, "role": session.role, "via": "console", **payload})

    # --- login ---------------------------------------------------------------------------------------------
    def login(self, request, session, form):
        nxt = form.get("next") or "/console/"
        if not nxt.startswith("/console/"):
            nxt = "/console/"
        if self.access.open:
            raise_redirect(nxt)
        new = self.access.login(session, form.get("name", ""), form.get("password", ""))
        if new is None:
            log.info("console.login_failed")
            a = self.page(session, "login.html", title="Connexion", next=nxt,
                          error="Identifiant ou mot de passe incorrect.")
            a.status = 401
            return a
        log.info("console.login", user=new.user, role=new.role)
        self._set_cookie(request, new)
        raise_redirect(nxt)

    @route("POST", "/logout")
    def logout(self, request, session, form):
        self.access.logout(session)
        raise_redirect("/console/login")

    # --- the feed board ------------------------------------------------------------------------------------
    @route("GET", "/")
    def board(self, request, session, form):
        now = _now()

        def read(uow):
            return (reads.feed_board(uow, now, self.silent_after), reads.outbox_board(uow, now),
                    reads.audit_console(uow, tuple(ACTION_FR), limit=15), uow.last_audit_verification())
        return self.store(read).addCallback(lambda r: self.page(
            session, "board.html", title="Tableau des flux", senders=r[0], destinations=r[1], actions=r[2],
            chain=self._chain(r[3], now), apply_ready=self.inbound_ready(),
            silent_after=self.cfg.console.silent_after, now=now,
            listeners=[{"name": f.settings.name, "peers": sorted(_peer(c) for c in list(f.connections))}
                       for f in self.listeners]))

    def _chain(self, last: dict | None, now: datetime) -> dict:
        """The audit chain's box on the board: its last verification, and whether it is too old (or none)."""
        age = now - last["at"] if last else None
        return {"last": last, "age": age, "stale": last is None or age > self.verify_every,
                "every": self.cfg.console.audit_verify_every, "why": last and chain_break_fr(last.get("why")),
                "running": self.verifying, "failed": self.verify_failed}

    @route("POST", "/audit/verify", operator=True)
    def verify_audit(self, request, session, form):
        """Walks the audit chain off the reactor thread, on a snapshot of a connection of its own (no write lock:
        the API and the apply process go on), then records it through the committer, naming who asked. The
        board is shown again once it is done, or after two seconds (it then says it runs)."""
        from twisted.internet import defer, reactor
        if self.verifying is None:
            self.verifying, self.verify_failed = {"by": session.user, "since": _now()}, None
            log.info("console.audit_verify", user=session.user)

            def record(result):
                return self.store(lambda uow: uow.record_audit_verification(
                    result, _now(), by=session.user, via="console", role=session.role))

            def failed(f):
                log.error("console.audit_verify_failed", error=f.type.__name__)
                self.verify_failed = f.type.__name__

            def over(_):
                self.verifying = None
            self._verification = threads.deferToThread(self.committer.store.verify_audit).addCallback(
                record).addErrback(failed).addBoth(over)
        shown = defer.Deferred()
        timer = reactor.callLater(2.0, lambda: shown.called or shown.callback(None))

        def done(result):
            if timer.active():
                timer.cancel()
            if not shown.called:
                shown.callback(None)
            return result
        self._verification.addBoth(done)
        return shown.addCallback(lambda _: raise_redirect("/console/#audit-chain"))

    # --- messages -------------------------------------------------------------------------------------------
    @route("GET", "/messages")
    def messages(self, request, session, form):
        q = _query(request)
        now = _now()
        until = self.local(q.get("until")) or now + timedelta(minutes=1)
        since = self.local(q.get("since")) or until - timedelta(hours=1)
        if q.get("control_id") and not q.get("since"):
            since = until - timedelta(days=3650)   # a control id is looked for everywhere by default
        before = int(q["before"]) if q.get("before", "").isdigit() else None
        patient = {"authority": q.get("authority") or None, "id": q["ipp"]} if q.get("ipp") else None

        def read(uow):
            ids = None
            if patient:
                pid = self.pipeline.find(uow, patient)
                ids = [] if pid is None else [pid] + uow.patient_ids_merged_into(pid)
            return reads.messages(uow, since=since, until=until, sender=q.get("sender") or None,
                                  event=q.get("event") or None, ack=q.get("ack") or None,
                                  control_id=q.get("control_id") or None, patient_ids=ids,
                                  visit=q.get("visit") or None, before=before)

        def shown(rows):
            more = len(rows) > reads.PAGE
            rows = rows[:reads.PAGE]
            nxt = None
            if more:
                nxt = "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in q.items() if k != "before" and v)
                nxt += f"&before={rows[-1]['id']}"
            return self.page(session, "messages.html", title="Messages", rows=rows, q=q, next_page=nxt,
                             since=since, until=until, local_input=self.local_input)
        return self.store(read).addCallback(shown)

    def local_input(self, dt) -> str:
        return dt.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M") if dt else ""

    def _message(self, journal_id: str, gates: bool = False):
        if not journal_id.isdigit():
            raise Refused(404, "Message inconnu.")

        def read(uow):
            row = reads.message(uow, int(journal_id))
            if row is None:
                return None
            ids = [row["patient_id"]] + uow.patient_ids_merged_into(row["patient_id"]) if row["patient_id"] else []
            entry, deliveries = reads.events_of_message(
                uow, ids, row["control_id"], f"{row['sender_application'] or ''}|{row['sender_facility'] or ''}")
            around = None
            if gates and row["patient_id"]:
                around = self._around(uow, row)
            return row, entry, deliveries, around
        return self.store(read)

    def _around(self, uow, row) -> dict | None:
        """The patient's gate just before and at the message's own time (the instant its values count from),
        read through the pipeline's view, as GET /v1/patients does."""
        from engine import rules
        from engine.pipeline import journaled_text
        work = self.pipeline.prepare(journaled_text(row["raw"])[0], row["raw"], row["received_at"])
        if not work.facts:
            return None
        at = rules.message_time(work.facts, row["received_at"])
        pid = self.pipeline.find(uow, {"authority": work.facts.get("patient.ipp_authority"),
                                       "id": work.facts.get("patient.ipp")}) or row["patient_id"]
        before = self.pipeline.view(uow, pid, at - timedelta(microseconds=1))
        after = self.pipeline.view(uow, pid, at)
        return {"at": at, "before": before["gate"], "after": after["gate"]}

    @route("GET", r"/messages/(\d+)")
    def trace(self, request, session, form, journal_id):
        def shown(found):
            if found is None:
                raise Refused(404, "Message inconnu.")
            row, entry, deliveries, around = found
            from engine.pipeline import journaled_text
            raw = row["raw"]
            text, charset = journaled_text(raw)
            charset = charset or "(MSH-18 vide ou illisible : encodage par défaut)"
            ipp = _first_pi(text)
            revealed = bool(row["patient_id"]) and session.reveals(row["patient_id"])
            shown_text = text if revealed else masking.mask_message(text)
            work = self.pipeline.prepare(text, raw, row["received_at"])
            facts = [{"name": n, "value": v if revealed or not masking.identity_fact(n) else masking.MASK,
                      "where": "-".join(str(x) for x in work.fields.get(n, ()) if x)}
                     for n, v in sorted((work.facts or {}).items())]
            return self.page(session, "trace.html", title=f"Message {row['control_id'] or row['id']}", row=row,
                             charset=charset, size=len(raw), segments=_segments(shown_text), text=shown_text,
                             work=work, facts=facts, entry=entry, deliveries=deliveries, ack=row["ack"], ipp=ipp,
                             revealed=revealed, outcome=work.outcome, around=around)
        return self._message(journal_id, gates=True).addCallback(shown)

    @route("GET", r"/messages/(\d+)\.hl7", operator=True)
    def download(self, request, session, form, journal_id):
        def audited(found):
            if found is None:
                raise Refused(404, "Message inconnu.")
            row = found[0]

            def write(uow):
                self.audit(uow, session, "console.download", row["patient_id"], journal_id=row["id"],
                           msh10=row["control_id"])
            return self.store(write).addCallback(lambda _: Answer(
                row["raw"], b"application/hl7-v2", headers={
                    b"content-disposition": f'attachment; filename="message-{row["id"]}.hl7"'.encode()}))
        return self._message(journal_id).addCallback(audited)

    @route("POST", r"/messages/(\d+)/replay")
    def replay(self, request, session, form, journal_id):
        def scratch(found):
            if found is None:
                raise Refused(404, "Message inconnu.")
            row = found[0]
            return threads.deferToThread(safe_replay, self.pipeline, row["raw"]).addCallback(
                lambda result: self.page(session, "replay.html", title="Rejeu à blanc", row=row, result=result,
                                         revealed=bool(row["patient_id"]) and session.reveals(row["patient_id"])))
        return self._message(journal_id).addCallback(scratch)

    # --- refusals -------------------------------------------------------------------------------------------
    @route("GET", "/refusals")
    def refusals(self, request, session, form):
        days = _query(request).get("days", "7")
        since = _now() - timedelta(days=int(days) if days.isdigit() else 7)
        return self.store(lambda uow: reads.refusals(uow, since)).addCallback(
            lambda groups: self.page(session, "refusals.html", title="Refus (AE/AR)", groups=groups, days=days))

    @route("POST", "/refusals/handled", operator=True)
    def handled(self, request, session, form):
        group, through = form.get("group", ""), form.get("through", "")
        if not group or not through.isdigit():
            raise Refused(400, "Groupe de refus manquant.")

        def write(uow):
            self.audit(uow, session, reads.HANDLED, group=group, through=int(through))
        return self.store(write).addCallback(lambda _: raise_redirect("/console/refusals"))

    # --- patients -------------------------------------------------------------------------------------------
    def _patient(self, authority, ipp, at, with_history=True, movements_from=None):
        """(pid, view, audit entries, messages, movements) of a patient, or None; the movements only when
        `movements_from` (the page's offset) is given."""
        patient = {"authority": authority, "id": ipp}

        def read(uow):
            pid = self.pipeline.find(uow, patient)
            if pid is None:
                return None
            ids = [pid] + uow.patient_ids_merged_into(pid)
            view = self.pipeline.view(uow, pid, at)
            entries = uow.audit_entries(ids) if with_history else []
            msgs = reads.patient_messages(uow, ids, limit=200 if with_history else 1)
            # a merged patient's rows are its survivor's: the movements are read for `pid` alone
            moves = None if movements_from is None else reads.patient_movements(uow, pid, movements_from)
            return pid, view, entries, msgs, moves
        return self.store(read)

    @route("GET", r"/patients/([^/]+)/([^/]+)")
    def patient(self, request, session, form, authority, ipp):
        q = _query(request)
        at = self.local(q.get("at")) or _now()
        first = min(int(q["moves_from"]), 10**9) if q.get("moves_from", "").isdigit() else 0

        def shown(found):
            if found is None:
                raise Refused(404, "Patient inconnu.")
            pid, view, entries, msgs, moves = found
            revealed = session.reveals(pid)
            more = len(moves) > reads.MOVEMENTS
            moves = moves[:reads.MOVEMENTS]
            here = f"/console/patients/{patient_path(authority, ipp)}?" + (
                f"at={quote(q['at'], safe='')}&" if q.get("at") else "")
            pages = {"older": f"{here}moves_from={first + reads.MOVEMENTS}#movements" if more else None,
                     "newer": f"{here}moves_from={max(0, first - reads.MOVEMENTS)}#movements" if first else None,
                     "first": first + 1, "last": first + len(moves)}
            return self.page(session, "patient.html", title="Patient", authority=authority, ipp=ipp, pid=pid,
                             view=view, entries=entries, header=_header(msgs, revealed), messages=msgs,
                             movements=moves, moves_pages=pages, stays=_stays(view, moves),
                             revealed=revealed, at=at, at_input=self.local_input(at), asked_at=q.get("at"))
        return self._patient(authority, ipp, at, movements_from=first).addCallback(shown)

    @route("POST", r"/patients/([^/]+)/([^/]+)/reveal", operator=True)
    def reveal(self, request, session, form, authority, ipp):
        reason = (form.get("reason") or "").strip()
        back = form.get("back") or f"/console/patients/{patient_path(authority, ipp)}"
        if not back.startswith("/console/"):
            back = "/console/"
        if not reason:
            raise Refused(400, "Un motif est obligatoire pour afficher les identités.")

        def write(uow):
            pid = self.pipeline.find(uow, {"authority": authority, "id": ipp})
            if pid is None:
                return None
            self.audit(uow, session, "console.reveal", pid, reason=reason[:500])
            return pid

        def done(pid):
            if pid is None:
                raise Refused(404, "Patient inconnu.")
            session.reveal(pid)
            log.info("console.reveal", user=session.user)
            raise_redirect(back)
        return self.store(write, [_lock(authority, ipp)]).addCallback(done)

    # --- outbox ---------------------------------------------------------------------------------------------
    @route("GET", "/outbox")
    def outbox(self, request, session, form):
        now = _now()
        return self.store(lambda uow: (reads.outbox_board(uow, now), reads.dead_letters(uow))).addCallback(
            lambda r: self.page(session, "outbox.html", title="File de sortie", destinations=r[0], dead=r[1],
                                now=now))

    @route("POST", "/outbox/retry", operator=True)
    def retry(self, request, session, form):
        one = form.get("delivery", "")
        now = _now()
        seq, _, dest = one.partition("/")
        if one and (not seq.isdigit() or not dest):
            raise Refused(400, "Livraison inconnue.")

        def write(uow):
            # the store operations of `pamgate outbox retry`
            if one:
                n = uow.retry_deliveries([(int(seq), dest)], now)
            else:
                n = uow.retry_dead(now)
            self.audit(uow, session, "console.retry", delivery=one or "all-dead", count=n)
            return n

        def done(_):
            self.on_events()
            raise_redirect("/console/outbox")
        return self.store(write).addCallback(done)

    # --- mappings -------------------------------------------------------------------------------------------
    @route("GET", "/mappings")
    def mappings(self, request, session, form):
        return self._mappings_page(session, None, None)

    @route("POST", "/mappings/explain")
    def explain(self, request, session, form):
        text = (form.get("message") or "").strip()
        if not text:
            raise Refused(400, "Collez un message HL7 (commençant par MSH).")
        from mappings.explain import describe
        from mappings.message import Message
        text = re.sub(r"\r\n|\n", "\r", text)
        try:
            msg = Message.parse(text)
            selection = self.pipeline.mappings.select(msg)
            explained = describe(selection, selection.mapping.extract(msg))
        except Exception as e:  # noqa: BLE001 — a pasted message the parser refuses: said, not raised
            explained = f"message illisible : {type(e).__name__}: {str(e)[:200]}"
        return self._mappings_page(session, text.replace("\r", "\n"), explained)

    def _mappings_page(self, session, pasted, explained):
        from engine.config import SHIPPED_MAPPINGS
        from mappings.check import check_files
        files = [str(SHIPPED_MAPPINGS)] + list(self.cfg.mappings.paths) + [self.cfg.habilitation_file()]
        return threads.deferToThread(check_files, files).addCallback(lambda problems: self.page(
            session, "mappings.html", title="Mappings", files=files, problems=problems,
            names=self.pipeline.mappings.names(), pasted=pasted, explained=explained))

    # --- the consent capture screens -------------------------------------------------------------------------
    @route("GET", r"/capture/([^/]+)/([^/]+)")
    def capture(self, request, session, form, authority, ipp, outcome=None):
        q = _query(request)
        visit = q.get("visit") or form.get("visit") or None

        def shown(found):
            if found is None:
                raise Refused(404, "Patient inconnu : il doit avoir été reçu par un message ADT (ou un appel "
                                   "POST /v1/consents) avant le recueil.")
            pid, view, entries, msgs, _ = found
            revealed = session.reveals(pid)
            return self.page(
                session, "capture.html", title="Recueil du consentement", authority=authority, ipp=ipp, pid=pid,
                view=view, header=_header(msgs, revealed), revealed=revealed, visit=visit,
                option=self.cfg.console.capture_option, outcome=outcome, results=results_fr(view, self.zone),
                blocked=bool((view["blocks"]["break_glass"] or {}).get("value") is True),
                break_glass=_current_break_glass(view), history=_consent_history(entries),
                dmp_checks=_dmp_checks(entries), now=_now())
        return self._patient(authority, ipp, _now()).addCallback(shown)

    @route("POST", r"/capture/([^/]+)/([^/]+)/consent", operator=True)
    def capture_consent(self, request, session, form, authority, ipp):
        from engine.api import consent_operation
        option = form.get("option")
        if option == "1":
            answer = form.get("answer")
            if answer == "oui":
                consult, feed = "IC", "INO"
            elif answer == "non":
                consult = "INC"
                feed = "IO" if form.get("oppose_feed") else "INO"
            else:
                consult, feed = "NA", "NA"   # no answer: feeding allowed, consultation denied
        elif option == "2":
            feed = "INO" if form.get("feed_ok") else "IO"
            consult = "IC" if form.get("consult_ok") else "INC"
        else:
            raise Refused(400, "Option de recueil inconnue.")
        visit = form.get("visit") or None
        patient = {"authority": authority, "id": ipp}
        collector = {"id": session.user, "via": "console"}
        work, keys = consent_operation(self.pipeline, patient, consult, feed, visit, _now(), collector)

        def done(answer):
            status, body = answer
            if status != 200:
                raise Refused(status, "Patient inconnu.")
            self.on_events()
            return self.capture(request, session, {"visit": visit or ""}, authority, ipp, outcome={
                "kind": "consent", "consult": consult, "feed": feed})
        return self.store(work, keys).addCallback(done)

    @route("POST", r"/capture/([^/]+)/([^/]+)/break-glass", operator=True)
    def capture_break_glass(self, request, session, form, authority, ipp):
        return self._decide(request, session, form, authority, ipp, "bris_de_glace",
                            (form.get("reason") or "").strip() or None)

    def _decide(self, request, session, form, authority, ipp, mode, reason):
        from engine.api import decision_operation
        from engine.domain import DecisionRequest
        visit = form.get("visit") or None
        req = DecisionRequest(action="consult", user=session.user, profession=self.professions.get(session.user, "10"),
                              mode=mode, reason=reason, visit=visit)
        work, keys = decision_operation(self.pipeline, {"authority": authority, "id": ipp}, req)

        def done(result):
            self.on_events()
            return self.capture(request, session, {"visit": visit or ""}, authority, ipp,
                                outcome={"kind": "decision", "mode": mode, **result})
        return self.store(work, keys).addCallback(done)

    @route("POST", r"/capture/([^/]+)/([^/]+)/reminder", operator=True)
    def reminder(self, request, session, form, authority, ipp):
        def write(uow):
            pid = self.pipeline.find(uow, {"authority": authority, "id": ipp})
            self.audit(uow, session, "console.reminder_acknowledged", pid)
        return self.store(write).addCallback(lambda _: self.capture(
            request, session, form, authority, ipp, outcome={"kind": "reminder"}))


def safe_replay(pipeline, raw: bytes) -> dict:
    """What the message would do to an empty scratch store (a temporary SQLite file), the real one untouched:
    its ACK code and errors, the patient's state after it, and the consult and feed decisions at its time."""
    from consent_store.store import Store
    from engine import rules
    from engine.domain import DecisionRequest
    from engine.pipeline import journaled_text
    text = journaled_text(raw)[0]
    with tempfile.TemporaryDirectory(prefix="pamgate-replay-") as tmp:
        store = Store(f"sqlite:///{tmp}/scratch.db")
        try:
            store.upgrade()
            now = _now()
            work = pipeline.prepare(text, raw, now)
            with store.transaction() as uow:
                outcome = pipeline.apply_message(uow, work)
            result = {"code": outcome.code, "errors": [e[5] for e in outcome.errors], "mapping": work.mapping,
                      "why": work.why, "events": [e["type"] for e in outcome.events], "decisions": [], "view": None}
            if outcome.code == "AA" and outcome.patient_id is not None and work.facts:
                at = rules.message_time(work.facts, now)
                patient = {"authority": work.facts.get("patient.ipp_authority"), "id": work.facts["patient.ipp"]}
                with store.transaction() as uow:
                    result["view"] = pipeline.view(uow, outcome.patient_id, at)
                    for action in ("consult", "feed"):
                        d = pipeline.decide(uow, patient, DecisionRequest(
                            action=action, user="console-replay", profession="10", at=at), now)
                        result["decisions"].append({"action": action, "decision": d["decision"],
                                                    "reasons": d["reasons"]})
            return result
        finally:
            store.dispose()


# --- small helpers ---------------------------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(timezone.utc)


def raise_redirect(to: str):
    raise Redirect(to)


def _cookie(request) -> str | None:
    raw = request.getHeader(b"cookie")
    if not raw:
        return None
    c = SimpleCookie()
    try:
        c.load(raw.decode("latin-1"))
    except Exception:  # noqa: BLE001 — a malformed cookie header is no session
        return None
    m = c.get(COOKIE.decode())
    return m.value if m else None


def _query(request) -> dict:
    return dict(parse_qsl(request.uri.partition(b"?")[2].decode("utf-8", "replace"), keep_blank_values=True))


def _form(request) -> dict:
    """A POSTed form's fields (application/x-www-form-urlencoded) over the query's. The site leaves bodies
    as they came (engine.api.site: the API's JSON needs no form parsing), so the console reads its own."""
    args = dict(request.args or {})
    ctype = (request.getHeader(b"content-type") or b"").partition(b";")[0].strip().lower()
    if ctype == b"application/x-www-form-urlencoded":
        request.content.seek(0)
        args.update(parse_qs(request.content.read(), keep_blank_values=True))   # as Twisted would have
        request.content.seek(0)
    out = {}
    for k, v in args.items():
        if v:
            out[k.decode("utf-8", "replace")] = v[0].decode("utf-8", "replace")
    return out


def _lock(authority, ipp) -> str:
    from engine.pipeline import patient_key
    return patient_key(authority, ipp)


def _span(text: str) -> timedelta:
    """An ISO 8601 duration of the configuration as a timedelta (a month counts 30 days)."""
    from engine.config import period
    p = period(text)
    return timedelta(days=p.days + 30 * p.months) + p.delta


def _age(delta) -> str:
    if delta is None:
        return "—"
    s = int(delta.total_seconds())
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d}"
    return f"{s // 86400} j {s % 86400 // 3600} h"


def _segments(text: str) -> list[dict]:
    """Segments and fields with their paths (python-hl7), for the trace."""
    import hl7
    out = []
    try:
        msg = hl7.parse(text.replace("\n", "\r"))
    except Exception:  # noqa: BLE001 — shown as plain text then
        return [{"name": "?", "fields": [(("texte", text))]}]
    counts: dict = {}
    for seg in msg:
        name = str(seg[0])
        counts[name] = counts.get(name, 0) + 1
        fields = []
        for i in range(1, len(seg)):
            # python-hl7 keeps MSH-1 (the field separator) as a field of its own, so seg[i] is MSH-i too
            value = str(seg[i])
            if value:
                fields.append((f"{name}-{i}", value))
        out.append({"name": name + (f"[{counts[name]}]" if counts[name] > 1 else ""), "fields": fields})
    return out


def _first_pi(text: str) -> tuple | None:
    """(authority, IPP) of the first PI identifier in PID-3, for the link to the patient."""
    fs = text[3] if text.startswith("MSH") and len(text) > 5 else "|"
    cs, rs = (text[4], text[5]) if len(text) > 5 else ("^", "~")
    for seg in re.split(r"\r\n|\r|\n", text):
        if seg.startswith("PID" + fs):
            f = seg.split(fs)
            for rep in (f[3] if len(f) > 3 else "").split(rs):
                c = rep.split(cs)
                if len(c) > 4 and c[4] == "PI" and c[0]:
                    auth = c[3].split(text[7] if len(text) > 7 else "&")[0] if len(c) > 3 else ""
                    return auth, c[0]
    return None


def _header(msgs: list, revealed: bool) -> dict:
    """Name, sex, birth date and INS from the patient's last message (PID-5, PID-8, PID-7, PID-3 INS)."""
    out = {"family": None, "given": None, "sex": None, "birth": None, "ins": None}
    for m in msgs:
        if not m.get("raw"):
            continue
        from engine.pipeline import journaled_text
        text = journaled_text(m["raw"])[0]
        if not text.startswith("MSH") or len(text) < 8:
            continue
        fs, cs, rs = text[3], text[4], text[5]
        for seg in re.split(r"\r\n|\r|\n", text):
            if seg.startswith("PID" + fs):
                f = seg.split(fs) + [""] * 10
                name = f[5].split(rs)[0].split(cs) + ["", ""]
                out.update(family=name[0] or None, given=name[1] or None, sex=f[8] or None,
                           birth=_date(f[7]) or None)
                for rep in f[3].split(rs):
                    c = rep.split(cs)
                    if len(c) > 4 and c[4] in ("INS", "INS-NIR", "NH", "INS-C") and c[0]:
                        out["ins"] = c[0]
                break
        if out["family"]:
            break
    return {k: (v if k == "sex" else masking.shown(v, revealed)) for k, v in out.items()}


def _date(hl7_date: str) -> str:
    d = hl7_date[:8]
    return f"{d[6:8]}/{d[4:6]}/{d[0:4]}" if len(d) == 8 and d.isdigit() else hl7_date


def _stays(view, movements) -> dict:
    """visit number -> "séjour N": the visits in the order they began (the episodes' table, in the history's
    order), so that a masked visit number is still told from another on the page."""
    numbers = [e["visit"] for e in view["episodes"]]
    for m in movements:
        if m["visit"] not in numbers:
            numbers.append(m["visit"])
    return {n: f"séjour {i}" for i, n in enumerate(numbers, 1)}


def _current_break_glass(view) -> list:
    visit = view.get("current_episode")
    return [b for b in view.get("break_glass_requests", []) if visit is None or b.get("visit") == visit]


def _consent_history(entries) -> list:
    """Consent changes (messages and API calls) and decisions, newest first, from the audit trail."""
    out = []
    for e in entries:
        p = e["payload"]
        if e["kind"] == "consent":
            out.append({"at": e["at"], "kind": "consent", "values": p.get("values"), "by": (p.get("collected_by")
                        or {}).get("id"), "collected_at": p.get("collected_at")})
        elif e["kind"] == "message" and p.get("facts"):
            out.append({"at": e["at"], "kind": "message", "values": {f["item"]: f["code"] or f["value"]
                                                                     for f in p["facts"]},
                        "by": p.get("sender"), "collected_at": (p["facts"][0] or {}).get("collected_at"),
                        "msh10": p.get("msh10")})
        elif e["kind"] == "decision":
            req = p.get("request") or {}
            out.append({"at": e["at"], "kind": "decision", "decision": p.get("decision"), "mode": p.get("mode"),
                        "reasons": p.get("reasons"), "by": req.get("user"), "reason": req.get("reason"),
                        "action": req.get("action")})
        elif e["kind"].startswith("console."):
            out.append({"at": e["at"], "kind": e["kind"], "by": p.get("by"), "reason": p.get("reason")})
    return list(reversed(out))


def _dmp_checks(entries) -> list:
    return [{"at": e["at"], "transaction": e["payload"].get("transaction"), "result": e["payload"].get("result"),
             "user": (e["payload"].get("user") or {}).get("id")} for e in reversed(entries) if e["kind"] == "dmp.result"]


def _peer(protocol) -> str:
    try:
        p = protocol.transport.getPeer()
        return f"{p.host}:{p.port}"
    except Exception:  # noqa: BLE001 — a connection closing as we look
        return "?"


def mount(site, api, cfg, listeners=()) -> None:
    """Serves the console under /console/ on the API's site (the HTTP listener); the rest stays the API's.
    `listeners`: the MLLP listeners' factories, whose open connections the feed board shows."""
    console = Console(api.pipeline, api.committer, cfg, on_events=api.on_events, inbound_ready=api.inbound_ready,
                      listeners=listeners)
    site.resource = _Root(site.resource, console)


class _Root(resource.Resource):
    isLeaf = True

    def __init__(self, api, console):
        super().__init__()
        self.api, self.console = api, console

    def render(self, request):
        if request.path == b"/console" or request.path.startswith(b"/console/"):
            return self.console.render(request)
        return self.api.render(request)


__all__ = ["Console", "mount", "safe_replay"]
