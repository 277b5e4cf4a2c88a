"""The fact vocabulary of docs/internals.md, as data: the names a mapping may produce, their type, their states.

A mapping that names a fact outside this table is refused (a typo would silently feed nothing), except
names starting with `x.`: site-specific facts, kept in the trace and the facts, ignored by the rules.
"""

from __future__ import annotations

TYPES = ("str", "ts", "bool", "list")

_DMP_STATUS = frozenset({"ACTIF", "FERME", "INEXISTANT"})

#: name -> (type, allowed states or None for free text)
VOCABULARY: dict[str, tuple[str, frozenset | None]] = {
    "message.sending_application": ("str", None),
    "message.sending_facility": ("str", None),
    "message.control_id": ("str", None),
    "message.event": ("str", None),
    "message.structure": ("str", None),
    "message.version": ("str", None),
    "message.profile": ("str", None),
    "message.recorded_at": ("ts", None),
    "message.event_at": ("ts", None),
    "patient.ipp": ("str", None),
    "patient.ipp_authority": ("str", None),
    "patient.ins": ("str", None),
    "patient.ins_oid": ("str", None),
    "patient.identity_status": ("str", None),
    "patient.nda": ("str", None),
    "prior.ipp": ("str", None),
    "prior.ipp_authority": ("str", None),
    "prior.ins": ("str", None),
    "prior.ins_oid": ("str", None),
    "prior.nda": ("str", None),
    "visit.number": ("str", None),
    "visit.patient_class": ("str", None),
    "visit.admitted_at": ("ts", None),
    "visit.discharged_at": ("ts", None),
    "movement.id": ("str", None),
    "movement.start": ("ts", None),
    "movement.action": ("str", frozenset({"INSERT", "UPDATE", "CANCEL"})),
    "movement.historic": ("bool", None),
    "movement.original_trigger": ("str", None),
    # free text: real senders combine the letters (CPAGE sends MHC, HMSC, MC on Z99)
    "movement.nature": ("str", None),
    "movement.uf_medical": ("str", None),
    "movement.uf_care": ("str", None),
    "dmp.status": ("str", _DMP_STATUS),
    "dmp.collected_at": ("ts", None),
    "dmp.closed_at": ("ts", None),
    "feed": ("str", frozenset({"no_opposition", "opposed"})),
    "feed.collected_at": ("ts", None),
    "feed.code": ("str", None),
    "consult": ("str", frozenset({"consent", "refused", "legacy_consent"})),
    "consult.collected_at": ("ts", None),
    "consult.code": ("str", None),
    "block.break_glass": ("bool", None),
    "block.centre_15": ("bool", None),
    "block.collected_at": ("ts", None),
    "facility_authorization": ("bool", None),
    "facility_authorization.collected_at": ("ts", None),
    "professionals": ("list", None),
}

#: the keys of one item of `professionals`
PROFESSIONAL_KEYS = ("id", "authority", "type")


def known(name: str) -> bool:
    return name in VOCABULARY or name.startswith("x.")


def fact_type(name: str) -> str | None:
    entry = VOCABULARY.get(name)
    return entry[0] if entry else None


def states(name: str) -> frozenset | None:
    entry = VOCABULARY.get(name)
    return entry[1] if entry else None
