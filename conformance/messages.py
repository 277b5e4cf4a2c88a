"""The messages of a replay: files and folders in name order, split into messages, and read once.

Splitting a file (any line ending, a BOM, batch envelopes) is `read_message_file`, the one way the product
reads message files (`pamgate mappings explain` uses it too); the rest chooses the files and reads the few
header fields that the replay and its reports need, with python-hl7.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

import hl7

from engine.errors import CommandError
from mllp.client import encode_message
from mllp.decoding import codec_for_charset, decode_leniently

EXTENSIONS = (".hl7", ".er7", ".txt")


def read_message_file(path: str) -> list[str]:
    """The messages of one file: any line ending, with or without a BOM, batch envelopes skipped."""
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        raise CommandError(f"{path}: {e.strerror}") from None
    # a file saved from the wire keeps its MLLP framing (0x0B … 0x1C 0x0D): the frame bytes are no part of HL7
    raw = raw.replace(b"\x0b", b"").replace(b"\x1c", b"")
    text = decode_leniently(raw)
    messages, current = [], []
    for seg in text.split("\r"):
        if not seg.strip():
            continue
        if seg.startswith("MSH"):
            if current:
                messages.append("\r".join(current))
            current = [seg]
        elif seg[:3] in ("FHS", "BHS", "BTS", "FTS"):
            continue
        elif current:
            current.append(seg)
    if current:
        messages.append("\r".join(current))
    if not messages:
        raise CommandError(f"{path}: no HL7 message (no MSH segment) in this file")
    return messages


@dataclass(frozen=True)
class ReplayMessage:
    position: int        # 1-based, in replay order
    path: Path           # the file it came from
    name: str            # that file as the user sees it: relative to the folder given, or the file's name
    index: int           # 1-based, within its file
    count_in_file: int
    text: str            # decoded, segments joined by "\r"

    @property
    def label(self) -> str:
        return self.name if self.count_in_file == 1 else f"{self.name}#{self.index}"

    @cached_property
    def tree(self):
        """python-hl7's tree, or None when python-hl7 cannot read it (the gate answers for that)."""
        try:
            return hl7.parse(self.text)
        except Exception:  # noqa: BLE001 — a broken message is replayed as is; the ACK says what is wrong
            return None

    def field(self, segment: str, number: int, component: int = 1, repetition: int = 1,
              subcomponent: int = 1) -> str:
        """One value's text, '' when absent (python-hl7 numbers MSH fields as HL7 does)."""
        if self.tree is None:
            return ""
        try:
            return str(self.tree.extract_field(segment, 1, number, repetition, component, subcomponent))
        except (KeyError, IndexError, ValueError):
            return ""

    @property
    def control_id(self) -> str:
        return self.field("MSH", 10)

    @property
    def event(self) -> str:
        return self.field("MSH", 9, 2)

    @property
    def message_type(self) -> str:
        return "^".join(x for x in (self.field("MSH", 9, 1), self.event, self.field("MSH", 9, 3)) if x)

    @property
    def charset(self) -> str:
        return self.field("MSH", 18)

    def patient(self) -> dict | None:
        """The patient as the API names them: the PI repetition of PID-3, with its authority's namespace."""
        return _pi_of(self, "PID", 3)

    def prior_patient(self) -> dict | None:
        """MRG-1: the absorbed patient (A40) or the old identifier (A47)."""
        return _pi_of(self, "MRG", 1)

    def time(self, tz: ZoneInfo) -> datetime | None:
        """The message's own instant: the latest of MSH-7, EVN-2 and EVN-6, when everything in it had happened."""
        found = []
        for seg, num in (("MSH", 7), ("EVN", 2), ("EVN", 6)):
            text = self.field(seg, num)
            if not text:
                continue
            try:
                t = hl7.parse_datetime(text)
            except (ValueError, TypeError):
                continue
            if t is not None:
                found.append((t if t.tzinfo else t.replace(tzinfo=tz)).astimezone(timezone.utc))
        return max(found, default=None)

    def wire_bytes(self) -> tuple[bytes, str]:
        """The bytes a conforming sender puts on the wire: the text encoded as MSH-18 says (else UTF-8)."""
        codec = codec_for_charset(self.charset) if self.charset else None
        for c in (codec, "utf-8"):
            if c is None or c == "ascii" and not self.text.isascii():
                continue
            try:
                return encode_message(self.text, c), c
            except UnicodeEncodeError:
                continue
        return encode_message(self.text, "utf-8"), "utf-8"


def _pi_of(message: ReplayMessage, segment: str, number: int) -> dict | None:
    """The CX repetition of type PI (for MRG-1, the first one when none is typed)."""
    try:
        count = len(message.tree.segment(segment)[number])
    except (AttributeError, KeyError, IndexError):
        return None
    first = None
    for r in range(1, count + 1):
        ident = message.field(segment, number, 1, r)
        if not ident:
            continue
        ref = {"id": ident, "authority": message.field(segment, number, 4, r, 1)}
        if message.field(segment, number, 5, r) == "PI":
            return ref
        first = first or ref
    return first if segment == "MRG" else None


@dataclass
class Replay:
    """Every message, in order, and which file each came from."""
    messages: list[ReplayMessage] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def message_files(paths) -> list[tuple[Path, str]]:
    """(file, name shown) for each PATH: a file as given, a folder's .hl7/.er7/.txt files in name order."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted((f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS),
                           key=lambda f: f.relative_to(p).parts)
            if not found:
                raise CommandError(f"{p}: no message file (.hl7, .er7, .txt) in this folder")
            out += [(f, f.relative_to(p).as_posix()) for f in found]
        elif p.is_file():
            out.append((p, p.name))
        else:
            raise CommandError(f"{p}: no such file or folder")
    return out


def collect(paths) -> Replay:
    replay = Replay()
    for path, name in message_files(paths):
        texts = read_message_file(str(path))
        replay.files.append(path)
        for i, text in enumerate(texts, 1):
            replay.messages.append(ReplayMessage(len(replay.messages) + 1, path, name, i, len(texts), text))
    return replay
