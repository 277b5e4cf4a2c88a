"""The pipeline: message → mapping → facts → rules → one unit of work. Also the API's writes and reads.

Each operation is prepared without the store (parse, extract, the patients it touches), then run inside
the unit of work that the group commit hands it. Nothing here touches sockets or threads.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import structlog

from consent_store import errors as store_errors
from consent_store.tables import NotStorable
from engine import identity, patient_view, rules, sequence
from engine.domain import (CLOCK_SKEW, CONSULT, DMP_STATUS, EARLIEST, FEED, LATEST, PERMIT, Changes, DecisionRequest,
                           PatientState, Policy, R_PATIENT_UNKNOWN, break_glass_row, dmp_result_row, fact_row,
                           from_header, header, movement_row, usable_instant, visit_row, visit_start)
from engine.forward import forwarded_message
from engine.sequence import sequence_number
from engine.unit_of_work import UnitOfWork
from mappings.message import Message, compile_path
from mllp.ack import AckError, build_ack, unsupported_ack_type

log = structlog.get_logger("pamgate.pipeline")

_ACCEPT_ACK, _APPLICATION_ACK = compile_path("MSH-15"), compile_path("MSH-16")
_HEADER = tuple((k, compile_path(p)) for k, p in (("app", "MSH-3-1"), ("facility", "MSH-4-1"),
                                                   ("control_id", "MSH-10"), ("event", "MSH-9-2")))

# a value the message carries that cannot be stored or computed with: HL7 table 0357 "data type error"
DATA_TYPE_ERROR = 102
# a fault of pamgate's own while applying the message (a bug, not the store): final, never 207, which says
# "store unavailable, retry later" (README); the message is kept in the journal to be replayed once fixed
INTERNAL_ERROR = 206
INTERNAL_TEXT = ("internal error of pamgate while applying the message: nothing was applied; the message is "
                 "kept in the journal")


class MessageError(NamedTuple):
    """One ERR segment of an ACK: where (ERR-2), the HL7 table 0357 code (ERR-3) and the text (ERR-8)."""
    segment: str
    sequence: int
    field: int
    component: int | None
    code: int
    text: str


@dataclass
class Outcome:
    """What a message got: the ACK code (original mode) and the errors its ERR segments carry."""
    code: str
    errors: list = field(default_factory=list)   # MessageError, one per ERR segment
    duplicate: bool = False
    conflicting: bool = False   # a duplicate MSH-3/4/10 whose content differs from the message applied
    patient_id: int | None = None
    events: list = field(default_factory=list)
    expected_sequence: int | None = None   # MSA-4, for a sender that uses the sequence number protocol
    ack: str | None = None      # the ACK as journaled, sent as it is once the transaction commits
    note: str | None = None     # MSA-3 of an ACK without error: what a duplicate is told

    def __post_init__(self):
        self.errors = [e if isinstance(e, MessageError) else MessageError(*e) for e in self.errors]


class Answered(NamedTuple):
    """What the ACK and the server's logs and metrics need of an applied message (it crosses from the
    apply process to the server, so plain values only)."""
    code: str
    errors: list          # MessageError, as Outcome.errors
    event: str | None
    sender: str
    control_id: str | None
    patient: str | None   # the IPP, logged at DEBUG only
    expected_sequence: int | None = None   # MSA-4 (sequence number protocol senders only)
    events: int = 0       # events it put in the outbox: the server wakes the dispatcher for them
    conflicting: bool = False   # a resend under an MSH-3/4/10 already applied, with other content
    ack: str | None = None      # the ACK text journaled with the message: the one to send
    duplicate: bool = False


class PatientUnknown(Exception):
    """An API operation names a patient the store does not know and cannot create (by INS). Raised before
    anything is written: the client's error, answered 404, not a failure of ours."""


_last_event_id = (0, 0)   # (ms, 74-bit counter) of the last event id made in this process
_event_id_lock = threading.Lock()


def event_id() -> str:
    """A new event id: a UUIDv7 (RFC 9562: 48-bit Unix time in ms, version 7, variant, 74 random bits), so
    that ids made later sort later and each joins the outbox's unique index at its right edge (a uuid4 dirtied
    a random page of it per event). Within a millisecond, or if the clock steps back, the last id's random
    bits are counted on, so the ids of a process strictly increase. Ids given before (uuid4) stay valid."""
    global _last_event_id
    with _event_id_lock:
        ms, counter = time.time_ns() // 1_000_000, secrets.randbits(74)
        last_ms, last_counter = _last_event_id
        if ms <= last_ms:
            ms, counter = last_ms, last_counter + 1 + secrets.randbits(16)
            if counter >> 74:
                ms, counter = ms + 1, secrets.randbits(74)
        _last_event_id = (ms, counter)
    rand_a, rand_b = counter >> 62, counter & ((1 << 62) - 1)
    return str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b))


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


class UnusableDate(ValueError):
    """A date of the message that cannot be converted to UTC, or that the rules cannot compute with."""

    def __init__(self, fact: str, why: str):
        super().__init__(f"{fact}: {why}")
        self.fact, self.why = fact, why


def localise(facts: dict, tz: ZoneInfo) -> dict:
    """HL7 timestamps without an offset are the sender's local time; the rules compare in UTC. A date that
    cannot be converted, or lies outside the instants the rules compute with, raises UnusableDate."""
    out, converted = {}, {}     # a message's dates are mostly one instant: converted once
    for k, v in facts.items():
        if isinstance(v, datetime):
            utc = converted.get(v)
            if utc is None:
                try:
                    utc = converted[v] = (v.replace(tzinfo=tz) if v.tzinfo is None else v).astimezone(timezone.utc)
                except (OverflowError, ValueError):
                    raise UnusableDate(k, "the date cannot be converted to UTC") from None
                if not usable_instant(utc):
                    raise UnusableDate(k, f"the date is outside the years {EARLIEST.year} to {LATEST.year - 1}")
            v = utc
        out[k] = v
    return out


def patient_key(authority, ipp) -> str:
    return f"PI|{authority or ''}|{ipp}"


class Pipeline:
    """The edges tied together: a message's text → the mapping's facts → the rules → the store's unit of
    work, and the API's operations (decide, record a consent or a DMP result) likewise. It owns the mapping
    set, the policy, the time zone and the routes; it holds no connection and no state between calls: each
    call is given the `UnitOfWork` to use. `prepare` touches no store (it runs in the server process);
    `apply_message` runs in the apply process, inside the transaction that also answers the ACK."""
    def __init__(self, mapping_set, policy: Policy, tz: str = "Europe/Paris", routes: dict | None = None,
                 sequenced: frozenset = frozenset()):
        self.mappings = mapping_set
        # (MSH-3-1, MSH-4-1) of the senders that use the sequence number protocol (MSH-13)
        self.sequenced = frozenset(sequenced)
        self.policy = policy
        self.tz = ZoneInfo(tz)
        self.routes = routes or {}
        # an mllp destination with forward_adt takes the inbound ADT, its ZFA rewritten (engine/forward.py)
        self.forwarding = any("adt.forward" in types for types in self.routes.values())

    # --- inbound messages ---------------------------------------------------------------------

    def prepare(self, text: str, raw: bytes, received_at: datetime) -> "MessageWork":
        work = MessageWork(self, text, raw, received_at, fields={})
        try:
            self._prepare(work)
        except Exception as e:  # noqa: BLE001 — a bug of ours: a final AE, journaled, never "store unavailable"
            log.error("message.prepare_failed", error=type(e).__name__, exc_info=e)
            work.facts = None
            work.outcome = Outcome("AE", [MessageError("", 1, 0, None, INTERNAL_ERROR, INTERNAL_TEXT)])
        return work

    def rejected(self, raw: bytes, text: str, received_at: datetime, code: str, error: str,
                 ack: str | None = None) -> "MessageWork":
        """A frame the listener answered by itself (no MSH, undecodable, too large): journaled as answered,
        with `ack`, the text the listener sent."""
        work = MessageWork(self, text, raw, received_at)
        work.outcome = Outcome(code, [MessageError("", 1, 0, None, 0, error)], ack=ack)
        return work

    def _prepare(self, work: "MessageWork") -> None:
        try:
            msg = Message.parse(work.text)
        except Exception as e:   # noqa: BLE001 — any parse failure is the sender's, answered AR
            work.outcome = Outcome("AR", [MessageError("MSH", 1, 1, None, 102, f"unparseable message: {e}")])
            return
        work.header = {k: (msg.get(p) or "") for k, p in _HEADER}
        if self.sequenced and (work.header["app"], work.header["facility"]) in self.sequenced:
            number = work.header["sequence"] = msg.get("MSH-13") or ""
            if sequence_number(number) in (0, -1):
                # the link (re)starts (0) or is resynchronised (-1): no functional content, nothing to map
                # (HL7 v2.5 2.10.1 b, e, f); apply_message answers it from the store
                return
        refused = unsupported_ack_type(msg.get(_ACCEPT_ACK), msg.get(_APPLICATION_ACK))
        if refused is not None:
            # HL7 v2.5 2.9.3: an acknowledgment the receiver cannot honour is rejected, in original mode (the
            # ACK cannot be in a mode the sender did not name); 203, as for an MSH-18 this listener does not read
            n, value = refused
            work.outcome = Outcome("AR", [MessageError(
                "MSH", 1, n, None, 203, f"MSH-{n} {value[:20]!r} is not an acknowledgment type of HL7 table 0155 "
                                        f"(AL, NE, ER, SU); nothing was applied")])
            return
        try:
            selection, extraction = self.read(msg)
        except Exception as e:   # noqa: BLE001 — a mapping that cannot read this message: a bug of ours
            log.error("mapping.failed", error=type(e).__name__, exc_info=e)
            work.outcome = Outcome("AE", [MessageError("MSH", 1, 9, None, INTERNAL_ERROR,
                                                       f"cannot map message: {type(e).__name__}; nothing was applied")])
            return
        work.mapping = selection.mapping.name
        work.why = selection.why
        if extraction.rejection is not None:
            work.outcome = Outcome("AR", [_err(extraction.rejection)])
            return
        if extraction.problems:
            work.outcome = Outcome("AE", [_err(p) for p in extraction.problems])
            return
        work.fields = _locations(extraction.trace)
        facts = extraction.facts
        for name, value in facts.items():
            if isinstance(value, str) and "\x00" in value:
                work.outcome = work.data_type_error(name, "it holds a NUL byte, which cannot be stored")
                return
        try:
            work.facts = localise(facts, self.tz)
        except UnusableDate as e:
            work.outcome = work.data_type_error(e.fact, e.why)
            return
        latest = work.received_at + CLOCK_SKEW
        for name, value in work.facts.items():
            # as the API's collected_at (date.in_future): a collection dated ahead would win over later ones
            if name.endswith(".collected_at") and isinstance(value, datetime) and value > latest:
                work.outcome = work.data_type_error(
                    name, f"the collection date is in the future (our clock says "
                          f"{work.received_at.isoformat(timespec='seconds')})")
                return
        if not work.facts.get("patient.ipp"):
            work.outcome = Outcome("AE", [MessageError("PID", 1, 3, 1, 101,
                                                        "no patient identifier of type PI in PID-3")])

    def locations(self, text: str) -> dict:
        """fact name -> (segment, field, component) it is read from in this message, as `prepare` found them
        (MessageWork.located: the apply process is not sent them; only an error that names a field needs
        them)."""
        try:
            return _locations(self.read(Message.parse(text))[1].trace)
        except Exception:   # noqa: BLE001 — a message prepare could not read: no field to name
            return {}

    def read(self, msg) -> tuple:
        """(selection, extraction): the mapping chosen for `msg`, and what it reads. `prepare` and
        `pamgate mappings explain` both read a message this way."""
        selection = self.mappings.select(msg)
        return selection, selection.mapping.extract(msg)

    def apply_message(self, uow: UnitOfWork, work: "MessageWork") -> Outcome:
        if "sequence" in work.header:
            return self._apply_sequenced(uow, work)
        return self._apply(uow, work)

    def _apply(self, uow: UnitOfWork, work: "MessageWork", numbered: tuple | None = None) -> Outcome:
        """`numbered`: (number, expected) of a sender that uses the sequence number protocol, for MSA-4."""
        h = work.header
        if work.outcome is None and h.get("control_id"):
            applied = uow.applied_hash(h["app"], h["facility"], h["control_id"])
            if applied is not None:
                # answered AA: the number is taken, as for a message applied (MSA-4 the next one)
                return self._duplicate(uow, work, applied, expected=numbered[0] + 1 if numbered else None)
        outcome = work.outcome or self._apply_facts(uow, work)
        if numbered is not None:
            number, expected = numbered
            outcome.expected_sequence = number + 1 if outcome.code == "AA" else expected
        self._journal(uow, work, outcome, error="; ".join(e.text for e in outcome.errors) or None,
                      patient_id=outcome.patient_id, applied=outcome.code == "AA",
                      content_hash=work.content_hash if outcome.code == "AA" else None)
        return outcome

    def _journal(self, uow: UnitOfWork, work: "MessageWork", outcome: Outcome, **row) -> None:
        """Journal the message with the ACK it gets, built here, in the transaction: the text the sender is
        sent after the commit is this very one (its MSH-7 and MSH-10 are drawn once), so the journal shows the
        ACK as sent. Rebuilt later it would carry another time and control id."""
        h, facts = work.header, work.facts or {}
        if work.text:
            outcome.ack = build_ack(work.text, outcome.code, ack_errors(outcome.errors),
                                    expected_sequence=outcome.expected_sequence, text=outcome.note)
        # else: a frame the listener answered by itself, whose ACK (already sent) came with it
        uow.journal(received_at=work.received_at, app=h.get("app"), facility=h.get("facility"),
                    control_id=h.get("control_id"), event=h.get("event"), ack_code=outcome.code, raw=work.raw,
                    ack=outcome.ack, ipp=facts.get("patient.ipp"), visit=facts.get("visit.number"), **row)

    def _apply_sequenced(self, uow: UnitOfWork, work: "MessageWork") -> Outcome:
        """The HL7 sequence number protocol (v2.5 2.10.1), for a sender configured for it. The sender's last
        accepted number is read, checked and updated in the transaction that applies the message, so the number
        and the effects commit together. MSA-4 (`expected_sequence`) always says the number expected next;
        -1 when the next number accepted will set it (the link never started, or was resynchronised)."""
        h = work.header
        app, facility = h["app"], h["facility"]
        last = uow.last_sequence(app, facility)
        v = sequence.verdict(h["sequence"], last)
        if v.action == sequence.REFUSE:
            return self._answered_alone(uow, work, Outcome("AR", [MessageError("MSH", 1, 13, None, *v.refusal)],
                                                           expected_sequence=v.expected))
        if v.action == sequence.START:
            log.info("sequence.link_started", sender=work.sender, expected=v.expected)
            return self._answered_alone(uow, work, Outcome("AA", expected_sequence=v.expected), v.note)
        if v.action == sequence.RESYNCHRONISE:
            log.info("sequence.resynchronised", sender=work.sender, last_accepted=last)
            uow.set_sequence(app, facility, None, work.received_at)
            return self._answered_alone(uow, work, Outcome("AA", expected_sequence=v.expected), v.note)
        if v.action == sequence.EARLIER:
            applied = uow.applied_hash(app, facility, h["control_id"]) if h.get("control_id") else None
            if applied is not None:
                # a resend of a message applied before: answered AA, applied once (as any duplicate)
                return self._duplicate(uow, work, applied, expected=v.expected)
            refused = MessageError("MSH", 1, 13, None, *sequence.reused(v))
            return self._answered_alone(uow, work, Outcome("AR", [refused], expected_sequence=v.expected))
        outcome = self._apply(uow, work, (v.number, v.expected))
        if outcome.code == "AA":
            uow.set_sequence(app, facility, v.number, work.received_at)
        return outcome

    def _duplicate(self, uow: UnitOfWork, work: "MessageWork", applied_hash: str,
                   expected: int | None = None) -> Outcome:
        """A message already applied under this MSH-3/4/10: AA, not applied again (interface.md). When its
        content differs from the one applied (a sender reusing control ids), it is still journaled, marked,
        for the engineer to see (the server logs it and counts it)."""
        h = work.header
        conflicting = bool(applied_hash) and applied_hash != work.content_hash
        # the ACK's MSA-3 says it too, so a sender (or a replay) sees why nothing changed
        note = ("duplicate with different content: this MSH-3/4/10 was already applied to another message; this "
                "one was not applied") if conflicting else "duplicate: already applied"
        outcome = Outcome("AA", duplicate=True, conflicting=conflicting, expected_sequence=expected, note=note)
        self._journal(uow, work, outcome, error=note, applied=False)
        return outcome

    def refusal(self, work: "MessageWork", error: Exception) -> Outcome:
        """The answer to a message whose operation failed by its own fault (its savepoint rolled back)."""
        if isinstance(error, NotStorable):
            return work.data_type_error(work.fact_holding(error.value), f"{error.why} ({error.column})",
                                        column=error.column)
        if store_errors.value_refused(error):
            log.warning("message.value_refused_by_store", error=type(error.orig).__name__,
                        sqlstate=store_errors.sqlstate(error))
            return Outcome("AE", [MessageError("", 1, 0, None, DATA_TYPE_ERROR,
                                   "a value of the message cannot be stored as received: nothing was applied")])
        log.error("message.apply_failed", error=type(error).__name__, exc_info=error)
        return Outcome("AE", [MessageError("", 1, 0, None, INTERNAL_ERROR, INTERNAL_TEXT)])

    def _answered_alone(self, uow: UnitOfWork, work: "MessageWork", outcome: Outcome,
                        note: str | None = None) -> Outcome:
        """A message answered without being applied: journaled with the ACK code it got, and why."""
        self._journal(uow, work, outcome, error="; ".join(e.text for e in outcome.errors) or note, applied=False)
        return outcome

    def _apply_facts(self, uow: UnitOfWork, work: "MessageWork") -> Outcome:
        f = work.facts
        event = f.get("message.event")
        source = {"msh10": f.get("message.control_id"), "sender": work.sender, "mapping": work.mapping}
        key, _ = identity.keys(f)
        now = work.received_at
        audit_extra = {}

        target = identity.resolve(f, {k: uow.find_patient(*k) for k in identity.lookups(f)})
        if target.refusal is not None:
            return Outcome("AE", [MessageError("PID", 1, 3, 1, *target.refusal)])
        pid, created = target.patient, target.patient is None and not target.new_survivor
        if target.new_survivor:
            pid = uow.create_patient(header(PatientState()), now)
        # a new patient is written once, with its first state, at the end
        head = PatientState() if created else from_header(uow.patient_header(pid))
        if target.absorbed is not None:
            head, offset = identity.merged(head, from_header(uow.patient_header(target.absorbed)))
            uow.merge_patient(target.absorbed, pid, offset, now)
            audit_extra["merged"] = target.absorbed
        head = identity.without_prior(head, f)
        if created:
            state = PatientState()
        elif rules.changes_history(f) or self.forwarding:
            state = patient_view.for_message(uow, pid, header(head), f, now, latest_ever=self.forwarding)
        else:
            state = head    # identity only: nothing of the history is read (rules.changes_history)

        changes, events = rules.apply(state, f, source, self.policy, now)
        new = changes.state
        if created:
            pid = uow.create_patient(header(new), now)
        else:
            uow.save_header(pid, header(new), now)
        write_changes(uow, pid, changes)
        if created or changes.identifiers is not None:
            uow.set_identifiers(pid, new.identifiers)
        added = changes.facts
        envelopes = self.envelopes(events, key, source)
        uow.audit(at=now, patient_id=pid, kind="message", payload={
            "event": event, "msh10": source["msh10"], "sender": source["sender"], "mapping": work.mapping,
            "selection": work.why, "created": created, **audit_extra,
            "facts": [{"item": x.item, "value": x.value, "code": x.code, "visit": x.visit,
                       "collected_at": x.collected_at} for x in added],
            "events": _audited(envelopes),
        })
        if self.forwarding:
            envelopes += self.envelopes([self._forward(work, new)], key, source)
        uow.enqueue(envelopes, self.routes, now)
        return Outcome("AA", patient_id=pid, events=envelopes)

    def _forward(self, work: "MessageWork", state) -> dict:
        """The inbound message with its ZFA in the 2.11.1 layout, from the state after it was applied."""
        try:
            text = forwarded_message(work.text, state, work.facts, self.policy, self.tz)
        except Exception as e:  # noqa: BLE001 — forward it as it came rather than lose it
            log.warning("forward.rewrite_failed", error=f"{type(e).__name__}: {e}"[:200])
            text = work.text
        return {"type": "adt.forward", "time": work.received_at, "episode": {"visit": work.facts.get("visit.number")},
                "data": {"message": text, "event": work.facts.get("message.event")}}

    def envelopes(self, events, key, source, named: dict | None = None) -> list[dict]:
        """`named`: the patient as the events name them, where not by the IPP of `key` (an unknown INS)."""
        authority, ipp = key
        return [{
            "id": event_id(),
            "type": e["type"],
            "time": _in_utc(e.get("time")) or now_utc(),
            "patient": dict(named) if named else {"id": ipp, "authority": authority},
            "patient_key": patient_key(authority, ipp),
            "episode": e.get("episode") or {},
            "data": e.get("data") or {},
            "source": {"msh10": source.get("msh10"), "sender": source.get("sender")},
        } for e in events]

    # --- API operations -------------------------------------------------------------------------

    def find(self, uow: UnitOfWork, patient: dict) -> int | None:
        if patient.get("ins"):
            return uow.find_patient("INS", patient.get("oid"), patient["ins"])
        return uow.find_patient("PI", patient.get("authority"), patient["id"])

    def decide(self, uow: UnitOfWork, patient: dict, request: DecisionRequest, now: datetime) -> dict:
        at = request.at or now
        pid = self.find(uow, patient)
        last = uow.last_reminded(request.user)
        reminder = rules.reminder_due(last, at, self.policy)
        if reminder:
            uow.set_reminded(request.user, at)
        if pid is None:
            result = {"decision": "deny", "mode": request.mode, "reasons": [R_PATIENT_UNKNOWN], "episode": None,
                      "triggers": [], "reminder_due": reminder}
            state = None
        else:
            state = patient_view.for_decision(uow, pid, request, now)
            d = rules.decide(state, request, self.policy, now)
            if d.decision == PERMIT and request.mode == "bris_de_glace":
                state = rules.record_break_glass(state, request, at, d.episode.get("visit"))
                uow.add_break_glass(pid, break_glass_row(state.break_glass[-1]))
            result = {"decision": d.decision, "mode": d.mode, "reasons": list(d.reasons), "episode": d.episode,
                      "triggers": [], "reminder_due": reminder}
            if d.habilitation is not None:
                result["habilitation"] = d.habilitation
        key = _key_of(patient, state)
        named = _named_by_ins(patient, key)
        source = {"msh10": None, "sender": "api"}
        triggers = self.envelopes([{"type": t["type"], "time": at, "episode": result["episode"],
                                    "data": t["data"]} for t in (d.triggers if pid is not None else ())],
                                  key, source, named)
        request_view = {"action": request.action, "user": request.user, "profession": request.profession,
                        "mode": request.mode, "reason": request.reason, "visit": request.visit, "at": at}
        if request.role or request.document_type or request.category:
            request_view.update(role=request.role, document={"type": request.document_type,
                                                             "category": request.category})
        made = self.envelopes([{"type": "decision.made", "time": at, "episode": result["episode"],
                                "data": {**{k: result[k] for k in ("decision", "mode", "reasons")},
                                         "request": request_view}}], key, source, named)
        # each trigger as the outbox delivers it (interface: `"triggers": [EVENT…]`), the ordering key aside
        result["triggers"] = [{k: v for k, v in t.items() if k != "patient_key"} for t in triggers]
        result["audit_id"] = uow.audit(at=now, patient_id=pid, kind="decision", user=request.user,
                                       payload={"request": request_view, "patient": patient, **result,
                                                "triggers": [{"id": t["id"], "type": t["type"], "data": t["data"]}
                                                             for t in triggers]})
        uow.enqueue(made + triggers, self.routes, now)
        return result

    def record_consent(self, uow: UnitOfWork, patient: dict, values: dict, visit, collected_at, collected_by,
                       now) -> dict:
        pid = self.find(uow, patient)
        created = pid is None
        if created:
            if patient.get("ins"):
                raise PatientUnknown()
            pid = uow.create_patient(header(PatientState()), now)
        head = uow.patient_header(pid)
        if created:
            head = {**head, "identifiers": [["PI", patient.get("authority"), patient["id"]]]}
        source = {"api": True, "collected_by": collected_by}
        if (collected_by or {}).get("id"):
            # DMP/CONF.16: the logged-in user who records the consent has their DMP access checked
            values = {**values, "professionals": [{"id": collected_by["id"], "authority": collected_by.get("authority"),
                                                   "type": "collector"}]}
        state = patient_view.for_message(uow, pid, head, rules.consent_facts(values, visit, collected_at),
                                         collected_at)
        changes, events = rules.record_consent(state, values, visit, collected_at, source, self.policy)
        new = changes.state
        uow.save_header(pid, header(new), now)
        write_changes(uow, pid, changes)
        uow.set_identifiers(pid, new.identifiers)
        key = _key_of(patient, new)
        envelopes = self.envelopes(events, key, {"msh10": None, "sender": "api"})
        uow.audit(at=now, patient_id=pid, kind="consent", user=(collected_by or {}).get("id"), payload={
            "values": {k: v for k, v in values.items() if k != "professionals"}, "visit": visit,
            "collected_at": collected_at, "collected_by": collected_by, "events": _audited(envelopes)})
        uow.enqueue(envelopes, self.routes, now)
        return self.view(uow, pid, now)

    def record_dmp_result(self, uow: UnitOfWork, patient: dict, user: dict, transaction: str, result: str, now) -> bool:
        pid = self.find(uow, patient)
        if pid is None:
            return False
        # appended: nothing of the history is read
        state = from_header(uow.patient_header(pid))
        new, events = rules.record_dmp_result(state, user["id"], transaction, result, now)
        for e in events:
            e["data"]["user"] = {**user}
        uow.add_dmp_result(pid, dmp_result_row(new.dmp_results[-1]))
        envelopes = self.envelopes(events, _key_of(patient, new), {"msh10": None, "sender": "api"})
        uow.audit(at=now, patient_id=pid, kind="dmp.result", user=(user or {}).get("id"),
                  payload={"user": user, "transaction": transaction, "result": result,
                           "events": _audited(envelopes)})
        uow.enqueue(envelopes, self.routes, now)
        return True

    def view(self, uow: UnitOfWork, pid: int, at: datetime) -> dict:
        """The patient's consent state at an instant, each value with its collection date and source."""
        return self.described(patient_view.whole(uow, pid), uow.patient_identifiers(pid), at)

    def described(self, state: PatientState, identities: list[dict], at: datetime) -> dict:
        """`view`'s answer, from the patient's whole history."""
        def latest(item):
            facts = [f for f in state.facts if f.item == item and f.collected_at <= at and not f.cancelled]
            f = rules.latest(facts)
            return None if f is None else {"value": f.value, "code": f.code, "collected_at": f.collected_at,
                                           "visit": f.visit, "source": f.source}

        gate = rules.gate(state, self.policy, at)
        return {
            "at": at,
            "identities": identities,
            # as at `at`: an episode begun later was not known yet, a later discharge had not happened
            "episodes": [{"visit": v.number, "nda": v.nda, "patient_class": v.patient_class, "uf": v.uf,
                          "admitted_at": v.admitted_at,
                          "discharged_at": v.discharged_at if v.discharged_at and v.discharged_at <= at else None,
                          "cancelled": v.cancelled} for v in state.visits if _begun_by(v, at)],
            "current_episode": gate["visit"],
            "consent": latest(CONSULT),
            "feed_opposition": latest(FEED),
            "dmp_status": latest(DMP_STATUS),
            "blocks": {"break_glass": latest("block.break_glass"), "centre_15": latest("block.centre_15")},
            # a request is collected by the decision that asked for it: `collected_at` and `source` as for
            # every other value (`at` is its older name, kept)
            "break_glass_requests": [{"user": b.user, "reason": b.reason, "at": b.at, "collected_at": b.at,
                                      "visit": b.visit, "source": {"api": True, "user": b.user}}
                                     for b in state.break_glass if b.at <= at],
            "gate": {k: gate[k] for k in ("consult", "feed", "reasons", "valid_until")},
            "history": [{"item": f.item, "value": f.value, "code": f.code, "collected_at": f.collected_at,
                         "visit": f.visit, "cancelled": f.cancelled, "source": f.source}
                        for f in sorted(state.facts, key=lambda f: (f.collected_at, f.seq))
                        if f.collected_at <= at],
        }


@dataclass
class MessageWork:
    pipeline: Pipeline
    text: str
    raw: bytes
    received_at: datetime
    header: dict = field(default_factory=dict)
    facts: dict | None = None
    outcome: Outcome | None = None
    mapping: str | None = None
    why: str | None = None
    # fact name -> (segment, field, component) it was read from; None until `located()` reads them again
    # (they do not cross the pipe to the apply process: only an error that names a field needs them)
    fields: dict | None = None

    @property
    def sender(self) -> str:
        return f"{self.header.get('app', '')}|{self.header.get('facility', '')}"

    @property
    def content_hash(self) -> str:
        """SHA-256 of the message's text (segment ends made one): what tells a resend from a reused MSH-10."""
        return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()

    def keys(self) -> list[str]:
        """The patients this message touches, locked before it runs (PostgreSQL, several instances); and the
        sender, when it uses the sequence number protocol, so its messages are taken one after the other."""
        f = self.facts or {}
        keys = [patient_key(f.get("patient.ipp_authority"), f["patient.ipp"])] if f.get("patient.ipp") else []
        if f.get("prior.ipp"):
            keys.append(patient_key(f.get("prior.ipp_authority"), f["prior.ipp"]))
        if "sequence" in self.header:
            keys.append(f"SEQ|{self.sender}")
        return keys

    def run(self, uow: UnitOfWork) -> Outcome:
        return self.pipeline.apply_message(uow, self)

    def refused(self, uow, error: Exception) -> Outcome:
        """run() failed by the message's own fault and was rolled back: its own AE, journaled (the journal
        keeps every message). Given to the group commit with run()."""
        outcome = self.pipeline.refusal(self, error)
        if "sequence" in self.header:
            last = uow.last_sequence(self.header["app"], self.header["facility"])
            outcome.expected_sequence = -1 if last is None else last + 1
        return self.pipeline._answered_alone(uow, self, outcome)

    def located(self) -> dict:
        if self.fields is None:
            self.fields = self.pipeline.locations(self.text) if self.text else {}
        return self.fields

    def fact_holding(self, value) -> str | None:
        """The fact that holds `value`, or a part of it (a key made of several): where a refusal points."""
        facts = self.facts or {}
        fields = self.located()
        best = None
        for name, v in facts.items():
            if isinstance(v, str) and v and name in fields:
                if v == value:
                    return name
                if isinstance(value, str) and v in value and (best is None or len(v) > len(facts[best])):
                    best = name
        return best

    def data_type_error(self, fact: str | None, why: str, column: str | None = None) -> Outcome:
        """AE 102 naming the field a fact was read from."""
        seg, fld, comp = self.located().get(fact) or ("", 0, None)
        where = f"{seg}-{fld}{f'-{comp}' if comp else ''} ({fact})" if seg else (fact or column or "a value")
        return Outcome("AE", [MessageError(seg, 1, fld, comp, DATA_TYPE_ERROR, f"{where}: {why}; nothing was applied")])

    def answered(self, outcome: Outcome) -> Answered:
        return Answered(outcome.code, list(outcome.errors), self.header.get("event"), self.sender,
                        self.header.get("control_id"), (self.facts or {}).get("patient.ipp"),
                        outcome.expected_sequence, len(outcome.events), outcome.conflicting, outcome.ack,
                        outcome.duplicate)


def _begun_by(visit, at: datetime) -> bool:
    start = visit_start(visit)
    return start is None or start <= at


def write_changes(uow: UnitOfWork, pid: int, changes: Changes) -> None:
    """The rows a message changes: the facts it adds, the visit it writes (and its movements that changed),
    the consents of a visit it cancels."""
    if changes.facts:
        uow.add_facts(pid, [fact_row(f) for f in changes.facts])
    if changes.visit is not None:
        v = changes.visit
        uow.put_visit(pid, visit_row(v), [movement_row(v.number, i, m) for i, m in changes.movements()])
    if changes.cancels_visit:
        uow.cancel_consents_of_visit(pid, changes.cancels_visit)


def _audited(envelopes) -> list[dict]:
    """What the audit entry keeps of the events a change caused: enough to find them in the outbox."""
    return [{"id": e["id"], "type": e["type"], "data": e["data"]} for e in envelopes]


_LOCATION = re.compile(r"^([A-Z][A-Z0-9]{2})(?:\([^)]*\))?(?:\[[^\]]*\])?-(\d+)(?:\([^)]*\))?(?:\[[^\]]*\])?"
                       r"(?:-(\d+))?")


@lru_cache(maxsize=4096)
def _location(path: str) -> tuple | None:
    """(segment, field, component) of a path's text: a mapping has a few dozen, read on every message."""
    m = _LOCATION.match(path)
    return (m[1], int(m[2]), int(m[3]) if m[3] else None) if m else None


def _locations(trace) -> dict:
    """fact name -> (segment, field, component) of the path it was read from (single paths only)."""
    out = {}
    for fact in trace:
        path = fact.path
        where = _location(path) if path.__class__ is str else None
        if where is not None:
            out[fact.name] = where
    return out


def ack_errors(errors) -> list[AckError]:
    """Outcome.errors as the ERR segments of the ACK."""
    return [AckError(segment=e.segment, sequence=e.sequence, field=e.field, component=e.component, code=e.code,
                     severity="E", text=e.text) for e in errors]


def _err(p) -> MessageError:
    return MessageError(p.segment, p.sequence, p.field, p.component, p.code, p.text)


def _in_utc(t):
    """Events carry their times in UTC (docs/outbound.md), whatever offset a decision's `at` was asked with."""
    return t.astimezone(timezone.utc) if isinstance(t, datetime) and t.tzinfo is not None else t


def _named_by_ins(patient: dict, key: tuple) -> dict | None:
    """An INS the store does not know (no IPP to name the patient by) is named in the events as it was asked."""
    if patient.get("ins") and key == (None, patient["ins"]):
        return {"ins": patient["ins"], "oid": patient.get("oid")}
    return None


def _key_of(patient: dict, state) -> tuple:
    if patient.get("ins") and state is not None:
        for kind, authority, value in state.identifiers:
            if kind == "PI":
                return authority, value
    return patient.get("authority"), patient.get("id") or patient.get("ins")


def journaled_text(raw: bytes) -> tuple[str, str | None]:
    """A journaled frame's text, and the character set its MSH-18 names (None when it names none): read as
    the listener read it, for the web console's trace and safe replay."""
    from mllp.decoding import decode_leniently, read_charset
    try:
        charset = read_charset(raw) or None
    except Exception:  # noqa: BLE001 — a frame without a readable MSH-18 still has its text shown
        charset = None
    return decode_leniently(raw), charset
