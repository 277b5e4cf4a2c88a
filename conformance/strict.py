"""`--strict`: each message is also validated with hl7apy against HL7 v2.5, and its problems listed.

hl7apy drops ZBE when it looks for groups, so messages are parsed with `find_groups=False`, which keeps
every segment in a flat list. Validating that flat list against the message structure would then report
every segment that belongs to a group (ROL in PROCEDURE, IN1 in INSURANCE…) as misplaced. So the check is
made in two parts, both from hl7apy's own HL7 v2.5 reference:

- the segment order: the non-Z segments must follow the structure that MSH-9.3 names, groups and
  repetitions included (an unknown segment, a missing required one, or one out of place is a problem);
- each non-Z segment: data types (dates, numbers), required fields and repetition counts, as hl7apy
  checks them (a value outside an HL7 table, or too long, is a warning: French tables extend HL7's, e.g.
  `INS` in CX-5, `VALI` in PID-32).

Z segments are expected: PAM FR defines ZBE, ZFA, ZFP, ZFV, ZFM, ZFD and ZFS, which HL7 v2.5 does not
describe. They are not validated here (the mapping checks the fields it reads). Any other Z segment is
noted as a warning.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

VERSION = "2.5"
PAM_FR_Z = ("ZBE", "ZFA", "ZFP", "ZFV", "ZFM", "ZFD", "ZFS")


@dataclass
class Validation:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    structure: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def validate(text: str) -> Validation:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message
    out = Validation()
    segments = [s for s in text.split("\r") if s.strip()]
    msh = segments[0].split(segments[0][3]) if segments and len(segments[0]) > 3 else []
    if len(msh) > 11 and msh[11].split(msh[1][:1] or "^")[0] != VERSION:
        out.warnings.append(f"MSH-12 says {msh[11]!r}: validated as HL7 v{VERSION} all the same")
        msh[11] = VERSION + msh[11][len(msh[11].split(msh[1][:1] or "^")[0]):]
        segments[0] = segments[0][3].join(msh)
    try:
        msg = parse_message("\r".join(segments), find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    except Exception as e:  # noqa: BLE001 — hl7apy's parse errors are the finding
        out.errors.append(f"cannot be parsed as HL7 v{VERSION}: {_say(e)}")
        return out
    out.structure = msg.name
    names = [c.name for c in msg.children]
    _check_order(msg.name, names, out)
    for seg_text, seg in zip(segments, msg.children):
        name = seg.name
        if name.startswith("Z"):
            if name not in PAM_FR_Z:
                out.warnings.append(f"{name}: a Z segment that PAM FR does not define; not checked")
            continue
        _check_segment(seg_text, seg, msg.encoding_chars, out)
    return out


# --- the segment order, from the reference structure ----------------------------------------------

def _check_order(structure: str, names: list[str], out: Validation) -> None:
    from hl7apy import load_reference
    from hl7apy.exceptions import ChildNotFound
    try:
        ref = load_reference(structure, "Message", VERSION)
    except (ChildNotFound, KeyError, ValueError):
        out.errors.append(f"MSH-9: message structure {structure!r} is not defined by HL7 v{VERSION}")
        return
    tokens = [n for n in names if not n.startswith("Z")]
    order = _Order(tokens)
    ends = order.sequence(ref, {0})
    if len(tokens) in ends:
        return
    known = _segments_of(ref)
    for t in tokens:
        if t not in known:
            out.errors.append(f"{t}: not a segment of {structure} (HL7 v{VERSION})")
    if any(t not in known for t in tokens):
        return
    at = order.furthest
    if at >= len(tokens):
        missing = [c[0] for c in _required(ref) if c[0] not in tokens]
        out.errors.append(f"{structure}: required segment {', '.join(missing) or '(one)'} missing")
    else:
        before = tokens[at - 1] if at else "the start"
        out.errors.append(f"{tokens[at]}: not expected after {before} in {structure} "
                          f"(segment {at + 1} of the message, Z segments aside): out of order, or a required "
                          f"segment is missing before it")


class _Order:
    """Which positions of the segment list a part of the structure can end at (a small NFA walk)."""

    def __init__(self, tokens):
        self.tokens = tokens
        self.furthest = 0

    def child(self, ref, starts: set) -> set:
        name, body, (lo, hi), kind = ref[0], ref[1], ref[2], ref[3]
        one = (lambda s: self.sequence(body, s)) if kind == "GRP" else (lambda s: self.segment(name, s))
        reached = set(starts) if lo == 0 else set()
        frontier, count = set(starts), 0
        while frontier and (hi == -1 or count < hi):
            frontier = one(frontier)
            count += 1
            if count >= lo:
                new = frontier - reached
                reached |= frontier
                if hi == -1:
                    frontier = new      # only positions not seen yet can lead further
        return reached

    def segment(self, name: str, starts: set) -> set:
        ends = {p + 1 for p in starts if p < len(self.tokens) and self.tokens[p] == name}
        if ends:
            self.furthest = max(self.furthest, max(ends))
        return ends

    def sequence(self, body, starts: set) -> set:
        kind, children = body[0], body[1]
        if kind == "choice":
            out = set()
            for c in children:
                out |= self.child(c, starts)
            return out
        current = set(starts)
        for c in children:
            current = self.child(c, current)
            if not current:
                break
        return current


def _segments_of(body) -> set:
    out = set()
    for c in body[1]:
        if c[3] == "GRP":
            out |= _segments_of(c[1])
        else:
            out.add(c[0])
    return out


def _required(body):
    return [c for c in body[1] if c[3] == "SEG" and c[2][0] >= 1]


# --- each segment ---------------------------------------------------------------------------------

def _check_segment(seg_text: str, seg, encoding_chars, out: Validation) -> None:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_segment
    from hl7apy.validation import Validator
    name = seg.name
    if name != "MSH":
        try:   # data types: dates, numbers, too many components
            parse_segment(seg_text, version=VERSION, encoding_chars=encoding_chars,
                          validation_level=VALIDATION_LEVEL.STRICT)
        except Exception as e:  # noqa: BLE001
            out.errors.append(f"{name}: {_say(e)}")
    fd, report = tempfile.mkstemp(prefix="pamgate-hl7apy-", suffix=".txt")
    os.close(fd)
    try:
        try:
            Validator.validate(seg, report_file=report)
        except Exception as e:  # noqa: BLE001 — every error is in the report file; this is the first
            first = _say(e)
        else:
            first = None
        with open(report, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    finally:
        os.unlink(report)
    errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
    if first and not errors:
        errors = [first]
    for e in dict.fromkeys(errors):
        text = f"{name}: {e}"
        if text not in out.errors:
            out.errors.append(text)
    for w in dict.fromkeys(line.removeprefix("Warning: ") for line in lines if line.startswith("Warning: ")):
        out.warnings.append(f"{name}: {w}")


def _say(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:300]
