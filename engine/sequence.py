"""The HL7 sequence number protocol (v2.5 2.10.1): what a sender's MSH-13 calls for, as pure functions.

The pipeline reads the sender's last accepted number, asks `verdict`, and does what it says, in the
transaction that applies the message (so the number and the effects commit together). MSA-4 (`expected`)
always says the number expected next; -1 when the next number accepted will set it (the link never
started, or was resynchronised).
"""
from __future__ import annotations

from dataclasses import dataclass

# HL7 table 0357 codes of the protocol's refusals (ERR-2 = MSH^1^13)
SEQ_MISSING, SEQ_MALFORMED, SEQ_GAP, SEQ_REUSED = 101, 102, 204, 205
REFUSE, START, RESYNCHRONISE, APPLY, EARLIER = "refuse", "start", "resynchronise", "apply", "earlier"


@dataclass(frozen=True)
class Verdict:
    action: str                     # one of REFUSE, START, RESYNCHRONISE, APPLY, EARLIER
    expected: int                   # MSA-4 of the answer
    number: int | None = None
    refusal: tuple | None = None    # REFUSE: (0357 code, text) of the AR on MSH-13
    note: str | None = None         # START, RESYNCHRONISE: why the journal says nothing was applied


def sequence_number(text: str) -> int | None:
    """MSH-13 as an integer (HL7 NM, 15 characters at most), or None when it is not one."""
    text = text.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit() or len(text) > 15:
        return None
    return int(text)


def verdict(raw: str, last: int | None) -> Verdict:
    """What MSH-13 `raw` calls for, the sender's last accepted number being `last` (None: the next number
    accepted sets it). EARLIER: a number already accepted; a resend of the message applied under it (its
    MSH-10 known) is a duplicate, anything else is refused with `reused`."""
    number = sequence_number(raw)
    expected = -1 if last is None else last + 1
    if number is None or number < -1:
        if raw.strip():
            refusal = (SEQ_MALFORMED, f"MSH-13 is not a sequence number (an integer: 0 starts the link, "
                                      f"-1 resynchronises it, 1 and above number the messages): "
                                      f"{raw[:20]!r}; nothing was applied")
        else:
            refusal = (SEQ_MISSING, "MSH-13 is empty, and this sender uses the sequence number protocol: "
                                    "nothing was applied")
        return Verdict(REFUSE, expected, number, refusal)
    if number == 0:
        # the link (re)starts: the expected number, nothing applied
        return Verdict(START, expected, 0, note=f"sequence number 0: the link starts, {expected} expected")
    if number == -1:
        # resynchronisation: the next positive number accepted becomes the link's number
        return Verdict(RESYNCHRONISE, -1, -1,
                       note="sequence number -1: resynchronised, the next number accepted sets it")
    if last is not None and number > expected:
        return Verdict(REFUSE, expected, number, (
            SEQ_GAP, f"MSH-13 is {number}, {expected} was expected: the messages before it have not arrived; "
                     f"nothing was applied"))
    if last is not None and number < expected:
        return Verdict(EARLIER, expected, number)
    # the number expected (or the first one, which sets it)
    return Verdict(APPLY, expected, number)


def reused(v: Verdict) -> tuple:
    """The refusal of an EARLIER number that is not a resend of the message accepted under it."""
    return (SEQ_REUSED, f"MSH-13 is {v.number}, {v.expected} was expected: {v.number} was already accepted, "
                        f"for another message (MSH-10); nothing was applied")
