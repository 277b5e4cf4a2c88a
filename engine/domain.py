"""Domain types: patient, episode, consent, decision. Plain frozen data, standard library only.

A patient's history is every value ever collected for them (consent facts), with provenance, plus their
identities, visits and DMP results. The current answer is always the latest value at an instant, so arrival
order never matters and a past instant can be asked. The rules see a *view* of that history
(`PatientState`): the whole of it, or only the rows their answer depends on (engine/patient_view.py), which
gives the same answers.
"""
from __future__ import annotations

import calendar
import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

# Items recorded per patient and episode, each dated and kept with its source (REM DPI, DMP/CONF.06).
CONSULT = "consult"            # consent to consultation (consentement à la consultation)
FEED = "feed"                  # feed opposition (opposition à l'alimentation)
DMP_STATUS = "dmp_status"      # ACTIF / FERME / INEXISTANT
BLOCK_BREAK_GLASS = "block.break_glass"   # patient blocks break-glass (bris de glace)
BLOCK_CENTRE_15 = "block.centre_15"       # patient blocks the centre de régulation
FACILITY_AUTHORIZATION = "facility_authorization"  # obsolete ZFA-4 (≤ 2.10), kept for the record
ITEMS = (CONSULT, FEED, DMP_STATUS, BLOCK_BREAK_GLASS, BLOCK_CENTRE_15, FACILITY_AUTHORIZATION)

CONSENT, REFUSED, LEGACY_CONSENT = "consent", "refused", "legacy_consent"
NO_OPPOSITION, OPPOSED = "no_opposition", "opposed"

PERMIT, DENY = "permit", "deny"
NORMAL, BREAK_GLASS, CENTRE_15 = "normal", "bris_de_glace", "centre_15"
MODES = (NORMAL, BREAK_GLASS, CENTRE_15)
ACTIONS = ("consult", "feed")

# Reason codes: stable, documented in the README.
R_NOT_COLLECTED = "consent.not_collected"
R_REFUSED = "consent.refused"
R_EXPIRED = "consent.expired"
R_FEED_OPPOSED = "feed.opposed"
R_BG_REASON_MISSING = "break_glass.reason_missing"
R_BG_BLOCKED = "break_glass.blocked"
R_C15_BLOCKED = "centre_15.blocked"
R_PROFESSION = "profession.not_authorized"
R_DMP_CLOSED = "dmp.closed"
R_DMP_ABSENT = "dmp.absent"
R_DMP_FORBIDDEN = "dmp.access_forbidden"
R_PATIENT_UNKNOWN = "patient.unknown"
R_EPISODE_CANCELLED = "episode.cancelled"
# informative codes carried by a permit
I_BREAK_GLASS = "break_glass"
I_CENTRE_15 = "centre_15"
I_LEGACY = "consent.legacy_non_opposition"
I_UNKNOWN_CELL = "habilitation.unknown_cell"   # the answer rests on a cell the matrix does not give

DELETE = '""'  # HL7's explicit null: delete the value

# The years a date given to the product may fall in. Periods are added to dates and the calendar ends in
# 9999, so a date near either edge is refused where it comes in, never stored.
YEARS = range(1900, 2200)
# How far ahead of our clock a collection date may be (a sender's or a client's clock may run a little
# fast), no more: a value dated later would outrank, by its collection date, every value collected
# until then.
CLOCK_SKEW = timedelta(minutes=5)

# What each DMP web-service transaction may answer (domain.md): TD0.2 tests the access, TD0.3 sets it.
DMP_RESULTS = {"TD0.2": ("VALIDE", "EXPIRE", "INTERDIT", "NON_EXISTE"), "TD0.3": ("OK", "FAILED")}


def utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def in_zone(value, zone=None):
    """A stored instant (a datetime, or its ISO 8601 text) on `zone`'s clock, UTC where it carries no offset.
    Anything else (None, a text that is no date) comes back as it is: a page or a report shows it rather
    than fail. The console and the replay report read instants this one way."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(value, datetime):
        return value
    value = utc(value)
    return value.astimezone(zone) if zone is not None else value


@dataclass(frozen=True)
class Period:
    """An ISO 8601 duration as calendars read it: months and days (`P6M`, `P1D`) count on the clock of a
    time zone, hours to seconds (`PT24H`) are elapsed time."""
    months: int = 0
    days: int = 0
    delta: timedelta = timedelta(0)       # the time part: exact

    def after(self, start: datetime, zone: str) -> datetime:
        return add_period(start, self, zone)

    def before(self, end: datetime, zone: str) -> datetime:
        return add_period(end, -self, zone)

    def __neg__(self) -> "Period":
        return Period(-self.months, -self.days, -self.delta)

    def _forward(self) -> bool:
        return (self.months, self.days, self.delta) > (0, 0, timedelta(0))


SIX_MONTHS = Period(months=6)
END_OF_TIME = datetime.max.replace(tzinfo=timezone.utc)
START_OF_TIME = datetime.min.replace(tzinfo=timezone.utc)


def add_period(start: datetime, period: Period, zone: str) -> datetime:
    """`start` plus an ISO 8601 duration, the one way durations are added: months then days on the wall clock
    of `zone` (six months from 3 March 09:10 in Paris end on 3 September at 09:10 in Paris, summer time or
    not; the 31st gives the month's last day), then the exact time part. The result is in UTC; one beyond
    the calendar's range is the end (or the start) of time, never an error."""
    start = utc(start)
    try:
        if period.months or period.days:
            local = start.astimezone(ZoneInfo(zone))
            month0 = local.month - 1 + period.months
            year, month = local.year + month0 // 12, month0 % 12 + 1
            day = min(local.day, calendar.monthrange(year, month)[1])
            # aware arithmetic on one zone is wall-clock arithmetic; the offset is taken again at the end
            local = local.replace(year=year, month=month, day=day, fold=0) + timedelta(days=period.days)
            start = local.astimezone(timezone.utc)
        return start + period.delta
    except (OverflowError, ValueError):
        return END_OF_TIME if period._forward() else START_OF_TIME

# The instants the rules can compute with: a period added to one (a validity, a reminder) or taken from it
# stays a date. A message's date outside them (year 0001, 9999) is the message's fault, answered AE 102.
EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)


def usable_instant(at: datetime) -> bool:
    """An aware instant the rules can compute with (between EARLIEST and LATEST)."""
    return EARLIEST <= at < LATEST


@dataclass(frozen=True)
class EpisodePolicy:
    scope: str = "establishment"          # or "visit"
    validity: Period = SIX_MONTHS
    validity_by_uf: dict = field(default_factory=dict)            # UF code -> Period
    validity_by_patient_class: dict = field(default_factory=dict)  # PV1-2 -> Period
    feed_opposition_ends_with_episode: bool = False


@dataclass(frozen=True)
class Policy:
    episode: EpisodePolicy = EpisodePolicy()
    # the habilitation matrix (mappings.habilitation.Matrix; None: any profession may consult anything)
    habilitation: object | None = None
    habilitation_unknown: str = DENY      # what a cell the matrix does not give decides: deny or permit
    reminder_period: Period = SIX_MONTHS
    # a VALIDE TD0.2 younger than this spares a new dmp.access.verify
    verify_max_age: Period = Period(delta=timedelta(hours=24))
    # the IANA zone whose clock counts months and days (config `timezone`)
    zone: str = "Europe/Paris"


@dataclass(frozen=True)
class Fact:
    """One collected value, with where and when it came from."""
    item: str
    value: object
    collected_at: datetime
    seq: int                       # arrival order, breaks ties between equal collection dates
    visit: str | None = None
    code: str | None = None        # the raw code as sent (IC, INO, ...)
    source: dict = field(default_factory=dict)   # msh10, sender, mapping, or api + collector
    cancelled: bool = False


@dataclass(frozen=True)
class Movement:
    id: str
    event: str
    action: str                    # INSERT / UPDATE / CANCEL
    start: datetime | None
    historic: bool = False
    nature: str | None = None
    uf_medical: str | None = None
    uf_care: str | None = None
    cancelled: bool = False


@dataclass(frozen=True)
class Visit:
    number: str
    nda: str | None = None
    patient_class: str | None = None
    uf: str | None = None
    admitted_at: datetime | None = None
    discharged_at: datetime | None = None
    cancelled: bool = False
    movements: tuple = ()


@dataclass(frozen=True)
class BreakGlassRequest:
    user: str
    reason: str
    at: datetime
    visit: str | None = None


@dataclass(frozen=True)
class DmpResult:
    user: str
    transaction: str
    result: str
    at: datetime


@dataclass(frozen=True)
class PatientState:
    """A view of a patient: every row of its history, or only those an answer depends on (for each item,
    the latest value by an instant; the visits that instant can fall in; a user's last DMP results)."""
    identifiers: tuple = ()        # ((kind, authority, value), ...) kind: PI or INS
    facts: tuple = ()
    visits: tuple = ()
    break_glass: tuple = ()
    dmp_results: tuple = ()
    next_seq: int = 1
    known: bool = False            # the patient has facts or visits, be they in this view or not

    def visit(self, number: str | None) -> Visit | None:
        for v in self.visits:
            if v.number == number:
                return v
        return None


@dataclass(frozen=True)
class Changes:
    """What one message (or one consent recorded through the API) changes: the rows to write."""
    state: PatientState            # the view after it
    facts: tuple = ()              # the facts it adds
    visit: Visit | None = None     # the visit it wrote, whole, when it wrote one
    visit_before: Visit | None = None
    identifiers: tuple | None = None   # the identifiers held after it, when they changed

    @property
    def cancels_visit(self) -> str | None:
        """A visit cancelled by this message: the consents collected on it are cancelled with it."""
        v, b = self.visit, self.visit_before
        return v.number if v is not None and v.cancelled and (b is None or not b.cancelled) else None

    def movements(self) -> list[tuple[int, "Movement"]]:
        """(ordinal, movement) of the movements of the visit that this message added or changed."""
        if self.visit is None:
            return []
        old = self.visit_before.movements if self.visit_before is not None else ()
        return [(i, m) for i, m in enumerate(self.visit.movements) if i >= len(old) or old[i] != m]


@dataclass(frozen=True)
class DecisionRequest:
    action: str
    user: str
    profession: str | None = None
    specialty: str | None = None
    mode: str = NORMAL
    reason: str | None = None
    visit: str | None = None
    at: datetime | None = None
    category: str | None = None        # the document's category (TRE_A03), derived from its type if given
    role: str | None = None            # the second role value: R01 savoir-faire, G05 section, R85 role
    document_type: str | None = None   # the document's XDS typeCode


@dataclass(frozen=True)
class Decision:
    decision: str
    mode: str
    reasons: tuple
    episode: dict
    triggers: tuple = ()           # event dicts, type + data
    habilitation: dict | None = None   # what the matrix said: the deciding row, the types allowed


def visit_start(v: Visit) -> datetime | None:
    """When a visit began: its admission, else its first movement."""
    return v.admitted_at or min((m.start for m in v.movements if m.start), default=None)


# --- plain rows, so that the store knows nothing of these types ---

BOOLEAN_ITEMS = frozenset({BLOCK_BREAK_GLASS, BLOCK_CENTRE_15, FACILITY_AUTHORIZATION})
_BOOLEAN_TEXT = {True: "true", False: "false"}   # as json.dumps writes them


def _at(d):
    """A date as the store keeps it: UTC (SQLite keeps no offset)."""
    if d is None:
        return None
    return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)


def fact_row(f: Fact) -> dict:
    src = f.source or {}
    by = src.get("collected_by")
    value = f.value if isinstance(f.value, str) else _BOOLEAN_TEXT.get(f.value) if isinstance(f.value, bool) \
        else json.dumps(f.value, sort_keys=True, default=str)
    return {"seq": f.seq, "item": f.item, "value": value, "code": f.code, "visit": f.visit,
            "collected_at": _at(f.collected_at), "cancelled": f.cancelled, "source_msh10": src.get("msh10"),
            "source_sender": src.get("sender"),
            "source_mapping": src.get("mapping") or ("api" if src.get("api") else None),
            "collected_by": json.dumps(by, sort_keys=True, default=str) if by else None}


def fact_from_row(r: dict) -> Fact:
    value = r["value"]
    if r["item"] in BOOLEAN_ITEMS and value in ("true", "false"):
        value = value == "true"
    if r["source_mapping"] == "api" and r["source_msh10"] is None and r["source_sender"] is None:
        by = r["collected_by"]
        source = {"api": True, "collected_by": json.loads(by) if by else None}
    else:
        source = {"msh10": r["source_msh10"], "sender": r["source_sender"], "mapping": r["source_mapping"]}
    return Fact(item=r["item"], value=value, collected_at=_at(r["collected_at"]), seq=r["seq"], visit=r["visit"],
                code=r["code"], source=source, cancelled=bool(r["cancelled"]))


def visit_row(v: Visit) -> dict:
    return {"visit": v.number, "nda": v.nda, "patient_class": v.patient_class, "uf": v.uf,
            "admitted_at": _at(v.admitted_at), "discharged_at": _at(v.discharged_at), "cancelled": v.cancelled,
            "started_at": _at(visit_start(v))}


def movement_row(visit: str, ordinal: int, m: Movement) -> dict:
    return {"visit": visit, "ordinal": ordinal, "movement_id": m.id, "event": m.event, "action": m.action,
            "start": _at(m.start), "historic": m.historic, "nature": m.nature, "uf_medical": m.uf_medical,
            "uf_care": m.uf_care, "cancelled": m.cancelled}


def visit_from_rows(r: dict, movements) -> Visit:
    """An episode row and its movement rows (in their order) as a Visit."""
    return Visit(number=r["visit"], nda=r["nda"], patient_class=r["patient_class"], uf=r["uf"],
                 admitted_at=_at(r["admitted_at"]), discharged_at=_at(r["discharged_at"]),
                 cancelled=bool(r["cancelled"]), movements=tuple(
                     Movement(id=m["movement_id"], event=m["event"], action=m["action"], start=_at(m["start"]),
                              historic=bool(m["historic"]), nature=m["nature"], uf_medical=m["uf_medical"],
                              uf_care=m["uf_care"], cancelled=bool(m["cancelled"])) for m in movements))


def dmp_result_row(r: DmpResult) -> dict:
    return {"user_id": r.user, "transaction": r.transaction, "result": r.result, "at": _at(r.at)}


def dmp_result_from_row(r: dict) -> DmpResult:
    return DmpResult(r["user_id"], r["transaction"], r["result"], _at(r["at"]))


def break_glass_row(b: BreakGlassRequest) -> dict:
    return {"user_id": b.user, "reason": b.reason, "at": _at(b.at), "visit": b.visit}


def break_glass_from_row(r: dict) -> BreakGlassRequest:
    return BreakGlassRequest(r["user_id"], r["reason"], _at(r["at"]), r["visit"])


def header(s: PatientState) -> dict:
    """What the patient row keeps of a patient: its identifiers and counters, bounded whatever its history."""
    return {"identifiers": [list(i) for i in s.identifiers], "next_seq": s.next_seq, "known": s.known}


def from_header(d: dict | None, **rows) -> PatientState:
    if not d:
        return PatientState(**rows)
    return PatientState(identifiers=tuple(tuple(i) for i in d.get("identifiers", ())),
                        next_seq=d["next_seq"], known=bool(d.get("known")), **rows)


def replace(obj, **changes):
    """dataclasses.replace, without its walk over the fields: it runs several times per message. These
    types are frozen, with no __post_init__ nor init=False field, so a copy of __dict__ is the same object."""
    d = obj.__dict__
    if type(obj) not in _PLAIN_TYPES or not changes.keys() <= d.keys():
        return dataclasses.replace(obj, **changes)
    new = object.__new__(type(obj))
    nd = new.__dict__
    nd.update(d)
    nd.update(changes)
    return new


_PLAIN_TYPES = frozenset({Fact, Movement, Visit, BreakGlassRequest, DmpResult, PatientState, Changes})
for _t in _PLAIN_TYPES:
    assert not hasattr(_t, "__post_init__") and all(f.init for f in dataclasses.fields(_t)), _t


__all__ = [n for n in dir() if not n.startswith("_")] + ["replace"]
