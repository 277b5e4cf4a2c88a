"""The checks, as pure functions: (what was expected, what the gate answered) → a held or failed Check."""
from __future__ import annotations

from dataclasses import dataclass, field

from conformance import wording
from mllp.ack import read_ack as mllp_read_ack

HELD, FAILED, SKIPPED = "held", "failed", "skipped"
ENHANCED = {"CA": "AA", "CE": "AE", "CR": "AR"}


@dataclass
class Check:
    kind: str                  # ack, err, decision, event, structure
    name: str                  # what is checked, in words
    status: str                # held, failed, skipped
    expected: str
    actual: str
    step: str | None = None    # the expectations file's label ("4", "CONF.06 step 4")
    title: str | None = None
    detail: dict = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return self.status == HELD


@dataclass(frozen=True)
class Ack:
    text: str
    code: str                  # original mode: an enhanced-mode CA/CE/CR is read as AA/AE/AR
    sent_code: str             # as the gate sent it
    errors: tuple              # "ZBE-4: text (code 101)"
    note: str = ""             # MSA-3 of an ACK without error (a duplicate: "duplicate: already applied")

    @property
    def error_text(self) -> str:
        return "; ".join(self.errors)


def read_ack(text: str) -> Ack:
    """The gate's ACK, read by mllp's ACK reader (the one beside the builder), in the report's words."""
    read = mllp_read_ack(text)
    if not read.has_header:
        return Ack(text, "?", "?", ("the ACK cannot be read as HL7",))
    if not read.has_msa:
        return Ack(text, "?", "?", ("the ACK has no MSA segment",))
    errors = [f"{e.location + ': ' if e.location else ''}{e.text}{f' (code {e.code})' if e.code else ''}"
              for e in read.errors]
    code = ENHANCED.get(read.code, read.code)
    if not errors and read.text:
        if code == "AA":
            return Ack(text, code, read.code, (), read.text)
        errors.append(read.text)
    return Ack(text, code, read.code, tuple(errors))


def check_ack(expected: str, ack: Ack, name: str) -> Check:
    shown = ack.code if ack.sent_code == ack.code else f"{ack.code} (sent as {ack.sent_code})"
    actual = wording.ack_text(ack.code) if ack.sent_code == ack.code else f"{wording.ack_text(ack.code)}, sent as {ack.sent_code}"
    if ack.errors or ack.note:
        actual += " — " + (ack.error_text or ack.note)
    return Check("ack", name, HELD if ack.code == expected else FAILED, wording.ack_text(expected), actual,
                 detail={"expected_code": expected, "code": shown})


def check_err(fragment: str, ack: Ack, name: str) -> Check:
    found = any(fragment.casefold() in e.casefold() for e in ack.errors)
    return Check("err", name, HELD if found else FAILED, f"the error names “{fragment}”",
                 ack.error_text or "no error in the ACK")


def check_decision(expect, result: dict, name: str) -> Check:
    got = (result.get("decision"), sorted(result.get("reasons") or []))
    problems = []
    if got[0] != expect.decision:
        problems.append("decision")
    if expect.reasons is not None and got[1] != sorted(expect.reasons):
        problems.append("reasons")
    triggers = sorted(t.get("type") for t in result.get("triggers") or [])
    if expect.triggers is not None and triggers != sorted(expect.triggers):
        problems.append("triggers")
    exp_text = wording.decision_text(expect.action, expect.mode, expect.decision, expect.reasons or [])
    if expect.reasons is None:
        exp_text += " (reasons not checked)"
    act_text = wording.decision_text(expect.action, expect.mode, got[0], result.get("reasons") or [])
    if expect.triggers is not None:
        exp_text += f"; triggers: {', '.join(sorted(expect.triggers)) or 'none'}"
        act_text += f"; triggers: {', '.join(triggers) or 'none'}"
    return Check("decision", name, FAILED if problems else HELD, exp_text, act_text, expect.step, expect.title,
                 detail={"decision": got[0], "reasons": result.get("reasons") or [], "triggers": triggers,
                         "expected": {"decision": expect.decision, "reasons": expect.reasons,
                                      "triggers": expect.triggers},
                         "codes_expected": ", ".join(expect.reasons or []) if expect.reasons is not None else None,
                         "codes": ", ".join(result.get("reasons") or []), "wrong": problems,
                         "reminder_due": result.get("reminder_due"), "audit_id": result.get("audit_id")})


def matches(data: dict, wanted: dict) -> bool:
    """Every key of `wanted` is in `data` with that value; nested dicts are matched the same way."""
    for k, v in wanted.items():
        if k not in data:
            return False
        if isinstance(v, dict) and isinstance(data[k], dict):
            if not matches(data[k], v):
                return False
        elif isinstance(v, list) and isinstance(data[k], list) and v and isinstance(v[0], str):
            if sorted(map(str, data[k])) != sorted(v):
                return False
        elif not (data[k] == v or not isinstance(v, (bool, type(None))) and str(data[k]) == str(v)):
            return False
    return True


def check_events(expect, events: list[dict] | None, name: str) -> Check:
    what = wording.outbox_text(expect.type)
    if expect.data:
        what += " with " + ", ".join(f"{k} = {v}" for k, v in _flat(expect.data))
    exp_text = (f"exactly {expect.count} × " if expect.count is not None else "at least one ") + what
    if events is None:
        return Check("event", name, SKIPPED, exp_text, "not checked: the outbox cannot be read in this mode "
                     "(give --config with the server's configuration)", expect.step, expect.title)
    same_type = [e for e in events if e.get("type") == expect.type]
    found = [e for e in same_type if matches(e.get("data") or {}, expect.data or {})]
    ok = len(found) == expect.count if expect.count is not None else len(found) >= 1
    actual = f"{len(found)} found"
    if len(same_type) != len(found):
        actual += f" ({len(same_type)} of that type in all)"
    return Check("event", name, HELD if ok else FAILED, exp_text, actual, expect.step, expect.title,
                 detail={"found": [{"type": e.get("type"), "data": e.get("data")} for e in found]})


def _flat(d: dict, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        elif isinstance(v, list):
            yield f"{prefix}{k}", ", ".join(map(str, v)) or "none"
        else:
            yield f"{prefix}{k}", v
