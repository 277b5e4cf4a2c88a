"""Turn a deframed message into text: the character set named by MSH-18, read from the raw bytes.

MSH-18 can only be read before decoding, which works because every character set HL7 v2 uses on
the wire here is ASCII-compatible: ``MSH``, the separators and the MSH-18 value are ASCII bytes.

The rules, in order:

1. A UTF-8 byte order mark is stripped, and means UTF-8 (MSH-18 is then not consulted): it is
   stronger evidence than a header a sender may have got wrong.
2. ``force_encoding``, when set for the listener, wins over MSH-18.
3. MSH-18 (its first repetition): ``8859/1`` → latin-1, ``8859/15`` → iso8859-15,
   ``UNICODE UTF-8`` → utf-8, the other ``8859/n`` likewise, and the common spellings of these same
   character sets (``UTF-8``, ``ISO-8859-1``) leniently.
4. Empty MSH-18 means ASCII; if the bytes are not ASCII, the listener's default is tried.
5. Any other MSH-18 is refused (:class:`UnsupportedCharset`, ``AR`` 203 on MSH-18): a character set
   of table 0211 this listener cannot read (``UNICODE UTF-16``, ``ISO IR87``…), a codec Python knows
   but HL7 does not (``IDNA``, ``rot13``, ``base64``: guessing would store mangled names or run a
   codec meant for something else), or garbage (NUL bytes).

A declared charset the bytes do not match is refused (:class:`UndecodableFrame`, answered ``AR``):
decoding it otherwise would store mangled names. ``force_encoding`` is the fix for such a sender.

Then segment ends ``\\r\\n`` and ``\\n`` become ``\\r``, blank segments at the end are dropped, and
the text carries no final ``\\r`` (segments joined by ``\\r``).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

UTF8_BOM = b"\xef\xbb\xbf"

# HL7 table 0211, the ASCII-compatible part: the only character sets a frame may be read in.
_HL7_CHARSETS = {
    "": "ascii",
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    **{f"8859/{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
}
#: The Python codecs of those character sets; another name is accepted only if it means one of them.
HL7_CODECS = frozenset(_HL7_CHARSETS.values())

_ASCII_PROBE = "MSH|^~\\&"


class UndecodableFrame(ValueError):
    """The frame cannot be turned into text; the listener answers ``AR``.

    ``code`` is from HL7 table 0357 and ``location`` is ``(segment, sequence, field)`` for ERR-2.
    """

    code = 102
    location = ("MSH", 1, 18)


class MissingHeader(UndecodableFrame):
    """The frame does not start with an MSH segment."""

    code = 100
    location = ("MSH", 1, 0)


class UnsupportedCharset(UndecodableFrame):
    """MSH-18 names no character set this listener reads (HL7 table 0357 ``203``)."""

    code = 203


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    encoding: str  # canonical Python codec name
    declared: str  # MSH-18 as sent ("" when empty)
    fallback: bool  # True when the listener's default was used instead of what MSH-18 says


def canonical_codec(name: str) -> str:
    """Python's canonical name for a codec; ``LookupError`` if it does not exist."""
    return codecs.lookup(name).name


def codec_for_charset(charset: str) -> str | None:
    """The Python codec for an MSH-18 value, or None when it names nothing usable here.

    Only HL7's own character sets (table 0211, ASCII-compatible) and other spellings of them:
    ``IDNA`` or ``rot13`` are codecs to Python, not character sets to HL7.
    """
    if not charset.isascii() or not charset.isprintable():  # NUL, 0x1C…: garbage, not a name
        return None
    key = " ".join(charset.strip().upper().split())
    if key in _HL7_CHARSETS:
        return canonical_codec(_HL7_CHARSETS[key])
    try:
        codec = canonical_codec(key)
    except (LookupError, ValueError):
        return None
    return codec if codec in HL7_CODECS else None


def is_text_codec(codec: str) -> bool:
    """True for a codec that keeps ASCII as ASCII (a listener's ``default_encoding`` or
    ``force_encoding``): not ``idna``, ``punycode``, ``rot13``, ``base64`` or ``utf-16``."""
    try:
        info = codecs.lookup(codec)
    except (LookupError, ValueError):
        return False
    if not getattr(info, "_is_text_encoding", True) or info.name in ("idna", "punycode"):
        return False
    try:
        return _ASCII_PROBE.encode(info.name) == _ASCII_PROBE.encode("ascii")
    except (UnicodeError, TypeError):
        return False


def _strip_preamble(raw: bytes) -> tuple[bytes, bool]:
    bom = raw.startswith(UTF8_BOM)
    if bom:
        raw = raw[len(UTF8_BOM) :]
    # Leading blank lines or spaces before MSH are tolerated.
    return raw.lstrip(b"\r\n \t"), bom


def read_charset(raw: bytes) -> str:
    """MSH-18 (first repetition) read from the raw bytes; ``MissingHeader`` if there is no MSH.

    The field separator is the byte right after ``MSH``; MSH-2 gives the repetition separator.
    """
    body, _ = _strip_preamble(raw)
    if not body.startswith(b"MSH") or len(body) < 8:
        raise MissingHeader("the frame does not start with an MSH segment")
    separator = body[3:4]
    if separator.isalnum() or separator in (b"\r", b"\n", b" "):
        raise MissingHeader("the MSH segment has no usable field separator")
    end = len(body)
    for terminator in (b"\r", b"\n"):
        found = body.find(terminator)
        if 0 <= found < end:
            end = found
    fields = body[:end].split(separator)
    # fields[0] is "MSH" and fields[1] is MSH-2, so MSH-n is fields[n - 1].
    if len(fields) < 18:
        return ""
    repetition = fields[1][1:2] or b"~"
    value = fields[17].split(repetition, 1)[0]
    return value.decode("ascii", "replace").strip(" ")


def normalise_segments(text: str) -> str:
    """``\\r\\n`` and ``\\n`` → ``\\r``; trailing blank segments dropped; no final ``\\r``."""
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    segments = text.split("\r")
    while segments and not segments[-1].strip():
        segments.pop()
    return "\r".join(segments)


def decode_frame(
    raw: bytes, *, default_encoding: str = "utf-8", force_encoding: str | None = None
) -> Decoded:
    """Decode one deframed message; raises :class:`UndecodableFrame` (or :class:`MissingHeader`)."""
    declared = read_charset(raw)
    body, bom = _strip_preamble(raw)
    default = canonical_codec(default_encoding)
    fallback = False
    if bom:
        codec = "utf-8"
    elif force_encoding:
        codec = canonical_codec(force_encoding)
    else:
        known = codec_for_charset(declared)
        if known is None:
            raise UnsupportedCharset(
                f"MSH-18 {declared[:40]!r} is not a character set this listener reads "
                f"(HL7 table 0211: ASCII, 8859/1 to 8859/9, 8859/15, UNICODE UTF-8)")
        if known == "ascii" and not body.isascii():
            codec, fallback = default, True
        else:
            codec = known
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        raise UndecodableFrame(
            f"the bytes are not valid {codec} (MSH-18 {declared!r}) at offset {exc.start}"
        ) from None
    return Decoded(normalise_segments(text), codec, declared, fallback)


def decode_leniently(raw: bytes) -> str:
    """Best-effort text of any bytes (never raises): a message file, or a frame answered ``AR``.

    BOM → UTF-8; else the MSH-18 charset if the bytes fit it; else UTF-8 if they are valid UTF-8;
    else latin-1, which reads any byte.
    """
    body, bom = _strip_preamble(raw)
    if bom:
        return normalise_segments(body.decode("utf-8", "replace"))
    try:
        declared = codec_for_charset(read_charset(body))
    except MissingHeader:
        declared = None
    for codec in (declared, "utf-8"):
        if codec is None:
            continue
        try:
            return normalise_segments(body.decode(codec))
        except UnicodeDecodeError:
            pass
    return normalise_segments(body.decode("latin-1"))
