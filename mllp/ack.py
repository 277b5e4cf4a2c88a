"""HL7 v2.5 acknowledgements (``ACK``) for inbound messages.

Acknowledgment modes (HL7 v2.5, chapter 2, "acknowledgment messages"):

* MSH-15 (accept acknowledgment type) and MSH-16 (application acknowledgment type) take the values of
  table 0155: ``AL`` always, ``NE`` never, ``ER`` on error only, ``SU`` on success only.
* Both empty: **original mode**. The receiver answers once, after processing: ``AA`` applied,
  ``AE`` refused (understood, but in error), ``AR`` rejected whole.
* Either valued: **enhanced mode**, which splits the answer in two. The *accept* acknowledgment
  (``CA`` commit accept, ``CE`` commit error, ``CR`` commit reject) says the message was committed to
  safe storage; the *application* acknowledgment (``AA/AE/AR``), driven by MSH-16, says what the
  application made of it, and is a separate message.

What pamgate sends, on the MLLP connection, once the message's effects are committed:

* MSH-15 valued and not ``NE``: the accept acknowledgment, ``CA/CE/CR``. Our commit *is* the
  processing, so a later application acknowledgment would say nothing more; none is sent.
* MSH-15 empty or ``NE`` (the sender does not want an accept acknowledgment), whether or not MSH-16
  is valued: ``AA/AE/AR``, which in enhanced mode is the application acknowledgment.
* MSH-15 or MSH-16 outside table 0155 (``XX``): the acknowledgment asked for is unknown, so the mode
  is too; the answer is in original mode, and the message is rejected (``AR`` 203, engine/pipeline.py,
  after HL7 v2.5 2.9.3: a receiver that cannot honour the acknowledgment requested rejects the message).
* ``ER``/``SU``/``NE`` are not used to stay silent: an MLLP sender waits for one answer per frame,
  and a receiver that says nothing stalls it. One answer always goes back.

Other choices: MSH-3..6 are swapped as sent (components included); MSH-11, MSH-12 and MSH-18 are
copied (defaults ``P`` and ``2.5``), so the ACK is read with the same character set it is encoded in
(MSH-18 only when it names one the listener reads: the ACK of a refused ``IDNA`` does not claim to be
IDNA); whatever is echoed carries no control character (``0x0B``, ``0x1C``, ``\\r``, NUL…: each
becomes the HL7 hex escape ``\\Xhh\\``), so no field a sender wrote can break the ACK's MLLP framing
or its segments, and encoding characters (MSH-2) that are not printable ASCII are not used;
MSH-10 is new and unique; MSA-3 repeats the first error's text for senders still on v2.3, which read
MSA-3 rather than ERR; MSA-4 carries the expected sequence number for a sender that uses the
sequence number protocol (MSH-13), and is left out otherwise.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from mllp.decoding import codec_for_charset

DEFAULT_SEPARATORS = "|^~\\&"
DEFAULT_VERSION = "2.5"

#: HL7 table 0357, message error condition codes.
ERROR_CONDITIONS = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

_ORIGINAL_CODES = ("AA", "AE", "AR")
_ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}
_ORIGINAL = {enhanced: original for original, enhanced in _ENHANCED.items()}
_SEVERITIES = ("E", "W", "I")  # HL7 table 0516


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR segment. ``segment=""`` leaves ERR-2 (location) empty; ``field=0`` names the segment."""

    segment: str
    sequence: int
    field: int
    component: int | None
    code: int
    severity: str
    text: str

    def __post_init__(self) -> None:
        if self.severity not in _SEVERITIES:
            raise ValueError(f"ERR-4 severity must be one of {_SEVERITIES}, not {self.severity!r}")


# Unique across processes (random tag) and restarts (the counter starts at the clock, in µs).
# 4 + 13 characters, within MSH-10's 20.
_PROCESS_TAG = os.urandom(2).hex().upper()
_counter = itertools.count(time.time_ns() // 1000)


def new_control_id() -> str:
    return f"{_PROCESS_TAG}{next(_counter):013X}"


@dataclass(frozen=True, slots=True)
class _Header:
    separators: str  # field, component, repetition, escape, subcomponent
    fields: list[str]  # fields[n - 1] is MSH-n, for n ≥ 3

    def get(self, n: int, default: str = "") -> str:
        """MSH-n as sent, safe to echo (no control character)."""
        value = self.fields[n - 1] if n - 1 < len(self.fields) else ""
        return _escape_controls(value, self.separators[3]) or default

    def component(self, n: int, index: int) -> str:
        parts = self.get(n).split(self.separators[1])
        return parts[index - 1] if len(parts) >= index else ""


_NO_HEADER = _Header(DEFAULT_SEPARATORS, [])


def _usable_separators(separator: str, encoding: str) -> str | None:
    chosen = separator + encoding[:4] + DEFAULT_SEPARATORS[1 + len(encoding[:4]) :]
    if len(set(chosen)) != 5 or not all(_is_delimiter(ch) for ch in chosen):
        return None
    return chosen


def _is_delimiter(ch: str) -> bool:
    return ch.isascii() and ch.isprintable() and not (ch.isalnum() or ch.isspace())


def _header_from_segment(segment: str) -> _Header | None:
    segment = segment.lstrip("\ufeff \t\x00\x0b")
    if not segment.startswith("MSH") or len(segment) < 4:
        return None
    fields = segment.split(segment[3])
    separators = _usable_separators(segment[3], fields[1] if len(fields) > 1 else "")
    return _Header(separators, fields) if separators is not None else None


def _read_header(message_text: str | None) -> _Header:
    """The inbound MSH, as leniently as possible; empty (defaults) when there is none."""
    if not message_text:
        return _NO_HEADER
    if message_text.startswith("MSH"):  # the usual case: read the first segment only
        end = message_text.find("\r")
        header = _header_from_segment(message_text if end < 0 else message_text[:end])
        if header is not None and "\n" not in header.fields[-1]:
            return header
    for segment in message_text.replace("\n", "\r").split("\r"):
        header = _header_from_segment(segment)
        if header is not None:
            return header
    return _NO_HEADER


_last_stamp: tuple[int, str] = (0, "")


def _timestamp() -> str:
    """MSH-7, local time with its offset; computed once per second (strftime is not free)."""
    global _last_stamp
    second = int(time.time())
    if _last_stamp[0] != second:
        _last_stamp = (second, datetime.fromtimestamp(second).astimezone().strftime("%Y%m%d%H%M%S%z"))
    return _last_stamp[1]


def _is_control(ch: str) -> bool:
    return ch < " " or "\x7f" <= ch <= "\x9f"


def _escape_controls(text: str, esc: str) -> str:
    """Control characters as HL7 hex escapes (``\\X1C\\``): they would break MLLP or the segments."""
    if text.isprintable():  # the usual case, and cheap
        return text
    return "".join(f"{esc}X{ord(c):02X}{esc}" if _is_control(c) else c for c in text)


def escape(text: str, separators: str = DEFAULT_SEPARATORS) -> str:
    """HL7 escape of the delimiters (``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\``) and of control characters
    (line breaks, ``0x0B``, ``0x1C``, NUL…, as ``\\Xhh\\``).

    Hand-written because python-hl7's ``escape`` also hex-escapes every non-ASCII character (as a
    code point, wrong past Latin-1), while the ACK is encoded in the message's own character set.
    """
    field, component, repetition, esc, subcomponent = separators[:5]
    replacements = {
        esc: f"{esc}E{esc}",
        field: f"{esc}F{esc}",
        component: f"{esc}S{esc}",
        repetition: f"{esc}R{esc}",
        subcomponent: f"{esc}T{esc}",
    }
    return _escape_controls("".join(replacements.get(c, c) for c in text), esc)


def _error_segment(error: AckError, separators: str) -> str:
    f, c = separators[0], separators[1]
    location = ""
    if error.segment:
        # ERL: segment ^ sequence ^ field ^ field repetition ^ component; the repetition stays empty.
        parts = [error.segment, str(error.sequence)]
        if error.field:
            parts.append(str(error.field))
            if error.component:
                parts += ["", str(error.component)]
        location = c.join(parts)
    condition = c.join(
        [str(error.code), escape(ERROR_CONDITIONS.get(error.code, ""), separators), "HL70357"]
    )
    # ERR-1 (withdrawn) | ERR-2 | ERR-3 | ERR-4 | ERR-5..7 empty | ERR-8 user message
    return f.join(
        ["ERR", "", location, condition, error.severity, "", "", "", escape(error.text, separators)]
    )


#: HL7 table 0155, the acknowledgment types of MSH-15 and MSH-16.
ACK_TYPES = ("AL", "NE", "ER", "SU")


def is_enhanced_mode(message_text: str | None) -> bool:
    """True when the sender asks for an accept acknowledgment (MSH-15 ``AL``, ``ER`` or ``SU``), and MSH-16 is
    empty or in table 0155."""
    return _wants_accept_ack(_read_header(message_text))


def unsupported_ack_type(accept: str | None, application: str | None) -> tuple[int, str] | None:
    """(15 or 16, the value) when MSH-15 (`accept`) or MSH-16 (`application`) holds a value outside table 0155:
    the sender asks for an acknowledgment this receiver cannot honour (HL7 v2.5 2.9.3), so the message is
    rejected. None otherwise."""
    for n, value in ((15, accept), (16, application)):
        value = (value or "").strip()
        if value and value.upper() not in ACK_TYPES:
            return n, value
    return None


def _wants_accept_ack(header: _Header) -> bool:
    """Enhanced mode: MSH-15 is AL, ER or SU, and MSH-16 is empty or in table 0155. A value outside the table
    leaves the mode unknown: the answer (an AR, see `unsupported_ack_type`) is then in original mode."""
    accept = header.component(15, 1).strip().upper()
    if accept not in ("AL", "ER", "SU"):
        return False
    return unsupported_ack_type(accept, header.component(16, 1)) is None


def build_ack(
    message_text: str | None,
    code: str,
    errors: Iterable[AckError] = (),
    *,
    control_id: str | None = None,
    expected_sequence: int | None = None,
    text: str | None = None,
) -> str:
    """The ACK for ``message_text`` (which may be None or garbage), segments joined by ``\\r``.

    ``code`` is ``AA``, ``AE`` or ``AR`` (original mode); it becomes ``CA/CE/CR`` when MSH-15 asks
    for an accept acknowledgment. ``control_id`` sets the ACK's own MSH-10 (a new unique one when
    None); MSA-2 is always the inbound MSH-10. ``expected_sequence`` fills MSA-4, the expected
    sequence number of the HL7 sequence number protocol (v2.5 2.10.1); None leaves it out. ``text``
    fills MSA-3 when there is no error to put there (a duplicate says so).
    """
    if code not in _ORIGINAL_CODES:
        raise ValueError(f"code must be one of {_ORIGINAL_CODES}, not {code!r}")
    errors = list(errors)
    header = _read_header(message_text)
    seps = header.separators
    f, c = seps[0], seps[1]
    event = header.component(9, 2)
    msh = [
        "MSH",
        seps[1:],
        header.get(5),
        header.get(6),
        header.get(3),
        header.get(4),
        _timestamp(),
        "",
        c.join(["ACK", event, "ACK"]) if event else "ACK",
        control_id or new_control_id(),
        header.get(11, "P"),
        header.get(12, DEFAULT_VERSION),
    ]
    charset = header.get(18)
    if charset and codec_for_charset(charset.split(seps[2])[0]) is not None:
        msh += [""] * 5 + [charset]  # MSH-13..17 empty, MSH-18
    acknowledgment = _ENHANCED[code] if _wants_accept_ack(header) else code
    msa = ["MSA", acknowledgment, header.get(10)]
    if errors or expected_sequence is not None or text:
        msa.append(escape(errors[0].text if errors else text or "", seps))
    if expected_sequence is not None:
        msa.append(str(int(expected_sequence)))  # MSA-4
    segments = [f.join(msh), f.join(msa)]
    segments += [_error_segment(error, seps) for error in errors]
    return "\r".join(segments)


def ack_summary(ack_text: str) -> tuple[str, str]:
    """``(event, code)`` of an ACK built here: MSH-9.2 and MSA-1 in original mode (``CE`` → ``AE``)."""
    header = _read_header(ack_text)
    seps = header.separators
    segments = ack_text.split("\r", 2)
    if (ack_text.startswith("MSH") and header is not _NO_HEADER and len(segments) > 1
            and segments[1].startswith("MSA" + seps[0])):
        # as build_ack writes it (every ACK counted, so read without a second parse): MSA second
        code = segments[1].split(seps[0], 2)[1].split(seps[1])[0]
    else:
        code = read_ack(ack_text).code
    return header.component(9, 2), _ORIGINAL.get(code, code)


# --- reading an ACK: the other side of build_ack --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorRead:
    """One ERR segment as read: ``location`` is ERR-2 as ``SEG-field-component`` (``PID-3-1``), ``code``
    ERR-3.1, ``text`` ERR-8 (the user message) or else ERR-3.2 (the condition's name), unescaped."""

    location: str
    code: str
    text: str


@dataclass(frozen=True, slots=True)
class AckRead:
    """An ACK as read. ``code`` is MSA-1 as sent (``AA``…``CR``, "" without MSA); ``control_id`` MSA-2, the
    MSH-10 it answers; ``text`` MSA-3, unescaped; ``expected_sequence`` MSA-4, None when absent.
    ``has_header``: the first segment is an MSH; ``has_msa``: an MSA segment was found."""

    code: str
    control_id: str
    text: str
    expected_sequence: str | None
    errors: tuple[ErrorRead, ...]
    has_header: bool
    has_msa: bool

    @property
    def accepted(self) -> bool:
        """AA (original mode) or CA (enhanced mode)."""
        return self.code in ("AA", "CA")

    def problem(self, control_id: str) -> str | None:
        """None when this ACK accepts the message whose MSH-10 is ``control_id``; else why not, in one line."""
        if not self.has_msa:
            return "the answer has no MSA segment"
        if self.control_id != control_id:
            return f"MSA-2 {self.control_id!r} does not match the MSH-10 sent {control_id!r}"
        if not self.accepted:
            text = self.text or (self.errors[0].text[:200] if self.errors else "")
            return f"ACK {self.code or '(empty)'}" + (f": {text}" if text else "")
        return None


def unescape(text: str, separators: str = DEFAULT_SEPARATORS) -> str:
    """The inverse of ``escape``: ``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\``, ``\\Xhh…\\`` and ``\\.br\\``; any other
    escape sequence (highlighting, character sets) is dropped."""
    field, component, repetition, esc, subcomponent = separators[:5]
    if esc not in text:
        return text
    named = {"F": field, "S": component, "R": repetition, "E": esc, "T": subcomponent, ".br": "\r"}
    out, pos = [], 0
    while True:
        start = text.find(esc, pos)
        end = text.find(esc, start + 1) if start >= 0 else -1
        if end < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:start])
        value = text[start + 1:end]
        if value in named:
            out.append(named[value])
        elif value[:1] == "X":
            try:
                out.append(bytes.fromhex(value[1:]).decode("latin-1"))
            except ValueError:
                pass
        pos = end + 1


def read_ack(text: str) -> AckRead:
    """The MSA and ERR segments of an ACK (segments split on CR or LF), read with the separators its MSH
    declares; an ACK without MSH is read with those of its MSA segment."""
    segments = [s for s in text.replace("\n", "\r").split("\r") if s.strip()]
    header = _header_from_segment(segments[0]) if segments else None
    seps = header.separators if header is not None else DEFAULT_SEPARATORS
    msa, errors = None, []
    for seg in segments:
        if seg.startswith("MSA") and msa is None:
            f = seps[0] if header is not None else (seg[3] if len(seg) > 3 else "|")
            msa = seg.split(f)
        elif seg.startswith("ERR" + seps[0]):
            errors.append(_read_error(seg.split(seps[0]), seps))
    msa = msa or []

    def part(n: int) -> str:
        return msa[n] if len(msa) > n else ""
    return AckRead(code=part(1).split(seps[1])[0], control_id=part(2), text=unescape(part(3), seps),
                   expected_sequence=msa[4] if len(msa) > 4 else None, errors=tuple(errors),
                   has_header=header is not None, has_msa=bool(msa))


def _read_error(fields: list[str], seps: str) -> ErrorRead:
    def component(n: int, c: int) -> str:
        value = fields[n].split(seps[2])[0] if len(fields) > n else ""
        parts = value.split(seps[1])
        return parts[c - 1] if len(parts) >= c else ""
    location = component(2, 1)
    if component(2, 3):
        location += f"-{component(2, 3)}"
        if component(2, 5):
            location += f"-{component(2, 5)}"
    user = fields[8] if len(fields) > 8 else ""
    return ErrorRead(location, component(3, 1), unescape(user or component(3, 2), seps))
