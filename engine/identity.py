"""ITI-30 identity decisions (A40 merge, A47 identifier change) as pure functions over plain data.

The pipeline looks up the identifiers `lookups` names (indexed reads), hands what it found to `resolve`,
and does what the answer says: apply the message to a patient record (a new one when none), merge another
into it first, or refuse the message. The headers of the records (domain.header) are combined by `merged`
and `without_prior`; moving the merged record's rows is the store's (UnitOfWork.merge_patient).
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.domain import PatientState, replace

MERGE, CHANGE_ID = "A40", "A47"
# HL7 table 0357 "duplicate key identifier": the new IPP of an A47 already leads to another record
DUPLICATE_KEY = 205


@dataclass(frozen=True)
class Target:
    """Where a message applies. `patient` None: a new record. `absorbed`: the record merged into it (A40).
    `new_survivor`: A40 to a survivor not known yet, created empty before the merge. `refusal`: (0357 code,
    text) of an AE on PID-3, nothing applied."""
    patient: int | None = None
    absorbed: int | None = None
    new_survivor: bool = False
    refusal: tuple | None = None


def keys(facts: dict) -> tuple[tuple, tuple | None]:
    """(authority, IPP) of PID-3, and of MRG-1 when there is one."""
    key = (facts.get("patient.ipp_authority"), facts["patient.ipp"])
    prior = (facts.get("prior.ipp_authority"), facts.get("prior.ipp")) if facts.get("prior.ipp") else None
    return key, prior


def lookups(facts: dict) -> list[tuple[str, str | None, str]]:
    """The identifiers (kind, authority, value) whose record `resolve` needs."""
    event = facts.get("message.event")
    key, prior = keys(facts)
    out = [("PI", *key)]
    if prior and event in (MERGE, CHANGE_ID):
        out.append(("PI", *prior))
    if event == CHANGE_ID and facts.get("prior.ins"):
        out.append(("INS", facts.get("prior.ins_oid"), facts["prior.ins"]))
    return out


def resolve(facts: dict, found: dict) -> Target:
    """`found`: (kind, authority, value) -> the record it leads to, or None, for each of `lookups`."""
    event = facts.get("message.event")
    key, prior = keys(facts)
    pid = found.get(("PI", *key))
    if event == CHANGE_ID and prior:
        # A47: the patient known by MRG-1 now answers to PID-3
        old = found.get(("PI", *prior))
        if old is not None and pid is not None and old != pid:
            # two records: that is a merge (A40), not an identifier change
            return Target(refusal=(DUPLICATE_KEY, "the new IPP in PID-3 already identifies another patient: "
                                                  "send A40 to merge"))
        pid = old or pid
    if pid is None and event == CHANGE_ID and facts.get("prior.ins"):
        pid = found.get(("INS", facts.get("prior.ins_oid"), facts["prior.ins"]))
    absorbed = found.get(("PI", *prior)) if event == MERGE and prior else None
    if absorbed is not None and absorbed == pid:
        absorbed = None   # MRG-1 leads to the survivor already: nothing to merge
    return Target(patient=pid, absorbed=absorbed, new_survivor=pid is None and absorbed is not None)


def merged(survivor: PatientState, absorbed: PatientState) -> tuple[PatientState, int]:
    """A40, on the records' headers: the survivor keeps its identifiers (the message's are put next), and
    numbers the absorbed record's facts after its own. Returns the header and that offset."""
    offset = survivor.next_seq
    return replace(survivor, next_seq=offset + absorbed.next_seq, known=survivor.known or absorbed.known), offset


def without_prior(state: PatientState, facts: dict) -> PatientState:
    """A47: the IPP of MRG-1 is no longer one the patient holds (it still leads to it, for late messages)."""
    key, prior = keys(facts)
    if facts.get("message.event") != CHANGE_ID or not prior or prior == key:
        return state
    return replace(state, identifiers=tuple(i for i in state.identifiers
                                            if not (i[0] == "PI" and (i[1], i[2]) == prior)))
