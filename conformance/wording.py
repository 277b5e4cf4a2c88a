"""Plain-language labels, for readers who have never seen HL7: what an auditor reads in the reports."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from engine.domain import in_zone

REASONS = {
    "consent.not_collected": "consent not collected",
    "consent.refused": "consent refused",
    "consent.expired": "consent expired (the episode's validity has passed)",
    "feed.opposed": "the patient opposes feeding",
    "break_glass.reason_missing": "break-glass asked for without a reason",
    "break_glass.blocked": "the patient blocked break-glass access",
    "centre_15.blocked": "the patient blocked centre 15 access",
    "profession.not_authorized": "this profession may not consult (habilitation matrix)",
    "dmp.closed": "the DMP is closed",
    "dmp.absent": "the patient has no DMP",
    "dmp.access_forbidden": "the patient forbade this professional (TD0.2 INTERDIT)",
    "patient.unknown": "patient unknown",
    "episode.cancelled": "the episode of care was cancelled",
    "break_glass": "break-glass mode",
    "centre_15": "centre 15 mode",
    "consent.legacy_non_opposition": "a 2.11 non-opposition counted as consent",
    "habilitation.unknown_cell": "the habilitation matrix does not give this cell: the configured policy decided",
}

ACTIONS = {"consult": "Consultation", "feed": "Feeding the DMP"}
MODES = {"normal": "", "bris_de_glace": " in break-glass mode", "centre_15": " in centre 15 mode"}

ACKS = {
    "AA": "accepted and applied (AA)",
    "AE": "refused: an error in the message (AE)",
    "AR": "rejected whole (AR)",
}

EVENTS = {
    "A01": "Admission", "A02": "Transfer", "A03": "Discharge", "A04": "External visit",
    "A05": "Pre-admission", "A06": "Change outpatient to inpatient", "A07": "Change inpatient to outpatient",
    "A11": "Cancel admission", "A12": "Cancel transfer", "A13": "Cancel discharge",
    "A14": "Pending admission", "A15": "Pending transfer", "A16": "Pending discharge",
    "A21": "Leave of absence", "A22": "Return from leave of absence", "A25": "Cancel pending discharge",
    "A26": "Cancel pending transfer", "A27": "Cancel pending admission", "A28": "Create patient", "A31": "Update patient",
    "A38": "Cancel pre-admission", "A40": "Merge two patients", "A44": "Move an account",
    "A47": "Change a patient identifier", "A52": "Cancel leave of absence", "A53": "Cancel return",
    "A54": "Change attending doctor", "A55": "Cancel change of attending doctor",
    "Z99": "Update a movement",
}

OUTBOX = {
    "consent.changed": "Consent state changed",
    "decision.made": "Decision recorded",
    "dmp.access.verify": "Check the professional's DMP access right (TD0.2)",
    "dmp.access.authorize": "Set the professional's DMP authorization (TD0.3)",
    "break_glass.used": "Break-glass access used",
}

CONSULT_VALUES = {"consent": "given", "refused": "refused", "legacy_consent": "non-opposition counted as consent"}
FEED_VALUES = {"no_opposition": "does not object", "opposed": "objects"}


def reasons_text(reasons) -> str:
    return ", ".join(REASONS.get(r, r) for r in reasons)


def decision_text(action: str, mode: str, decision: str, reasons=()) -> str:
    """`Consultation: DENIED — consent refused`."""
    head = f"{ACTIONS.get(action, action)}{MODES.get(mode, '')}: {'PERMITTED' if decision == 'permit' else 'DENIED'}"
    # a permit's informative codes repeat the mode; only a deny's reasons explain it
    shown = [r for r in reasons if decision == "deny" or r not in ("break_glass", "centre_15")]
    return f"{head} — {reasons_text(shown)}" if shown else head


def ack_text(code: str) -> str:
    return ACKS.get(code, code)


def event_text(event: str) -> str:
    name = EVENTS.get(event)
    return f"{name} ({event})" if name else event or "(no event)"


def outbox_text(kind: str) -> str:
    name = OUTBOX.get(kind)
    return f"{name} ({kind})" if name else kind


def when(value, tz: ZoneInfo | None = None) -> str:
    """A date-time as people read it, in the site's time zone: `2025-01-06 09:10 (Europe/Paris)`."""
    value = in_zone(value, tz)
    if not isinstance(value, datetime):
        return "—" if value is None else value
    return value.strftime("%Y-%m-%d %H:%M") + (f":{value.second:02d}" if value.second else "")


def consent_text(entry) -> str:
    """`given (IC)`, from the state's `consent` entry."""
    if not entry:
        return "not collected"
    word = CONSULT_VALUES.get(entry.get("value"), str(entry.get("value")))
    return f"{word} ({entry['code']})" if entry.get("code") else word


def feed_text(entry) -> str:
    if not entry:
        return "none recorded (feeding allowed by default)"
    word = FEED_VALUES.get(entry.get("value"), str(entry.get("value")))
    return f"{word} ({entry['code']})" if entry.get("code") else word


def gate_text(gate: dict | None) -> tuple[str, str]:
    """(consultation, feeding) for anyone, as the state says."""
    if not gate:
        return "—", "—"
    reasons = gate.get("reasons") or []
    consult_r = [r for r in reasons if not r.startswith("feed.")]
    feed_r = [r for r in reasons if r.startswith("feed.") or r.startswith("dmp.")]
    return (decision_text("consult", "normal", gate.get("consult"), consult_r if gate.get("consult") == "deny" else []),
            decision_text("feed", "normal", gate.get("feed"), feed_r if gate.get("feed") == "deny" else []))
