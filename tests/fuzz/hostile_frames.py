"""Hostile MLLP traffic, generated up front from one seed: random bytes, and mutations of our own PAM FR
messages (tests/builders.py, never the shared samples).

A *session* is what one TCP connection carries: the bytes of each write, and whether it ends with a
half-close or an unfinished frame. The frames the server must answer are read back from the stream
with the reference deframer (tests/mllp/support.split_frames), so a mutation that puts ``0x1C 0x0D``
inside a message is counted as the receiver must count it.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from tests.builders import adt, zfa_2111
from tests.mllp.support import split_frames

VT, END = b"\x0b", b"\x1c\r"
BOM = b"\xef\xbb\xbf"

# MSH-18 values: HL7's own, names only Python knows, lies, and bytes no charset name holds.
CHARSETS = ["", "ASCII", "UNICODE UTF-8", "8859/1", "8859/15", "8859/2", "8859/99", "UNICODE", "ISO IR87",
            "UTF-8", "ISO-8859-1", "IDNA", "idna", "ROT13", "rot_13", "UTF-16", "UTF-16LE", "UTF-32",
            "utf_8_sig", "base64", "hex", "zlib", "bz2", "uu", "punycode", "unicode_escape",
            "raw_unicode_escape", "cp500", "undefined", "mbcs", "utf-7", "\x00", "UNICODE UTF-8\x00",
            "\x00\x00\x00", "8859/1~UNICODE UTF-8", "UNICODE UTF-8^X", "\\", "é", "8859/1\x1c\n"]

DATES = ["00010101000000", "00010101", "0001", "99999999999999+9999", "99991231235959", "20251301",
         "20250230", "2025", "-1", "20250106090000.123456789+0100", "20250106240000", "00000000",
         "20250330023000", "202510260230", "29991231235959-1400", "18000101", "2025010609000O",
         "20250106090000+2500", "20250106090000-0000", '""', "1" * 40, "20250106090000^X"]

NAMES = ["DUPONT^ÉLODIE", "MÜLLER^JÖRG", "ŁUKASZ^ŻÓŁW", "NGUYỄN^VĂN", "\U0001F600^EMOJI", "O\\F\\BRIEN^A",
         "\\X00\\^NUL", "\\E\\^ESC", "A" * 300 + "^B"]

EVENTS = ["A01", "A04", "A05", "A28", "A31", "A03", "A11", "A40", "A47", "A08", "A15", "A16", "A25",
          "A26", "A99", "Z99", "A02", "A06", "A13", "A38", "A27"]

VERSIONS = [("2.5^FRA^2.11", "2.11^IHE_FRANCE-2.11-PAM"), ("2.5^FRA^2.11.1", "2.11.1^IHE_FRANCE-2.11.1-PAM"),
            ("2.5^FRA^2.10", "2.10^IHE_FRANCE-2.10-PAM"), ("2.5^FRA^2.4", ""), ("2.5", ""), ("9.9^X^Y", "?"),
            ("", ""), ("2.5^FRA^2.11\x1c\n", "")]

ZFAS = [lambda r: zfa_2111(r.choice(["INO", "IO", "NA", "XX", ""]), r.choice(["IC", "INC", "NA", "ZZ", ""]),
                           when=r.choice(["20250106090000"] * 4 + DATES)),
        lambda r: "ACTIF|20250106090000|||||||INO|20250106090000|IC|20250106090000",
        lambda r: "|".join(r.choice(["", "ACTIF", "FERME", "IC", "INO", '""', "X" * r.randint(0, 300)])
                           for _ in range(r.randint(0, 20))),
        lambda r: None]

READABLE_ID = re.compile(rb"^[A-Za-z0-9]{1,20}$")


@dataclass
class Session:
    writes: list[bytes]
    frames: list[bytes]                 # the complete frames the server will see, in order
    expected_ids: list[str | None]      # MSA-2 each ACK must echo, None where MSH-10 is not readable
    half_close: bool = False
    sentinel: str | None = None         # MSH-10 of the clean message ending the session
    kinds: dict = field(default_factory=dict)


def readable_msh10(frame: bytes, limit: int, head: int = 4096) -> str | None:
    """MSH-10 as a sender would expect to see it echoed, or None when a reader cannot be sure of it."""
    if len(frame) > limit:
        frame = frame[:head]
    if frame.startswith(BOM):
        frame = frame[3:]
    frame = frame.lstrip(b"\r\n \t")
    if not frame.startswith(b"MSH") or len(frame) < 8:
        return None
    sep = frame[3:4]
    if not (0x21 <= sep[0] <= 0x7E) or sep.isalnum():
        return None
    first = re.split(rb"[\r\n]", frame, maxsplit=1)
    fields = first[0].split(sep)
    enc = fields[1] if len(fields) > 1 else b""
    chars = sep + enc[:4]
    if len(enc) != 4 or len(set(chars)) != 5 or any(not (0x21 <= c <= 0x7E) or bytes([c]).isalnum() for c in chars):
        return None
    if len(fields) < 10 or (len(first) == 1 and len(fields) < 11):   # MSH-10 cut by the head's end
        return None
    return fields[9].decode() if READABLE_ID.match(fields[9]) else None


class FrameFactory:
    def __init__(self, seed: int, limit: int):
        self.r = random.Random(seed)
        self.limit = limit
        self.tag = f"{seed % 46656:03X}"[:3]
        self.n = 0
        self.sent: list[bytes] = []       # earlier payloads, for exact duplicates

    def cid(self) -> str:
        self.n += 1
        return f"Z{self.tag}{self.n:07d}"

    # -- well-formed messages, our own -----------------------------------------------------------------

    def message(self, cid: str | None = None) -> str:
        r = self.r
        event = r.choice(EVENTS)
        version, profile = r.choice(VERSIONS[:3]) if r.random() < 0.8 else r.choice(VERSIONS)
        ipp = str(r.randint(700000, 700300))
        kw = dict(ipp=ipp, authority=r.choice(["HOSP-T"] * 6 + ["HOSP-U", "H\\S\\X", ""]),
                  visit=r.choice([f"V{r.randint(1, 500)}", "V" * 201, "W" * 200 + str(r.randint(0, 9)), '""']),
                  when=r.choice(["20250106090000"] * 6 + DATES), zbe_action=r.choice(["INSERT"] * 5 + ["UPDATE", "CANCEL", "BOGUS"]),
                  movement=f"M{r.randint(1, 900)}", version=version, profile=profile, control_id=cid or self.cid(),
                  name=r.choice(NAMES), charset=r.choice(["UNICODE UTF-8"] * 6 + CHARSETS),
                  patient_class=r.choice(["I", "O", "E", "R", ""]), uf=r.choice(["URG1", "CARD", "U" * 50]),
                  historic=r.choice(["N", "Y", ""]), zfa=r.choice(ZFAS)(r), pv1=r.random() < 0.9,
                  zbe=r.random() < 0.9)
        if event in ("A40", "A47"):
            kw["prior_ipp"] = str(r.randint(700000, 700300))
        if r.random() < 0.2:
            kw["ins"] = r.choice(["1800175123456", "2" * 13, "", "X", "1" * 40])
        text = adt(event, **kw)
        if r.random() < 0.1:
            text = text.replace("|P|", "|P|" + r.choice(["1", "0", "-1", "x"]) + "|AL|", 1)   # MSH-13, MSH-15
        return text

    def encode(self, text: str) -> bytes:
        """The bytes as a sender would write them, honestly or not."""
        r = self.r
        codec = r.choice(["utf-8"] * 6 + ["latin-1", "utf-16", "cp1252", "utf-8-sig"])
        raw = text.encode(codec, "replace")
        end = r.choice([b"\r"] * 6 + [b"\n", b"\r\n"])
        return raw.replace(b"\r", end) + (end if r.random() < 0.7 else b"")

    # -- mutations -------------------------------------------------------------------------------------

    def mutate(self, raw: bytes) -> bytes:
        r = self.r
        op = r.randrange(16)
        if op == 0:                                   # byte flips
            b = bytearray(raw)
            for _ in range(r.randint(1, 8)):
                if b:
                    b[r.randrange(len(b))] = r.randrange(256)
            return bytes(b)
        if op == 1:                                   # truncation
            return raw[: r.randint(0, len(raw))]
        segs = re.split(rb"(?<=\r)", raw)
        if op == 2 and len(segs) > 1:                 # dropped segments
            del segs[r.randrange(len(segs))]
            return b"".join(segs)
        if op == 3:                                   # repeated segments
            i = r.randrange(len(segs))
            segs[i:i] = [segs[i]] * r.randint(1, 30)
            return b"".join(segs)
        if op == 4:                                   # segments shuffled
            head, rest = segs[:1], segs[1:]
            r.shuffle(rest)
            return b"".join((rest + head) if r.random() < 0.3 else (head + rest))
        if op == 5:                                   # other delimiters, consistently or not
            new = bytes(r.sample(b"|^~\\&#@!$%*+,;:?/=", 5))
            if r.random() < 0.5:
                return raw.translate(bytes.maketrans(b"|^~\\&", new))
            msh1 = r.choice([new[:1], b"A", b" ", b"\r", b"\x00", b"\xe9"])
            msh2 = r.choice([new[1:], b"", b"^~", b"^~\\&&&", b"abcd", b"^^^^"])
            return raw[:3] + msh1 + msh2 + raw[8:]
        if op == 6:                                   # a huge field
            fields = raw.split(b"|")
            i = r.randrange(len(fields))
            fields[i] = r.choice([b"X", "É".encode(), b"\\", b"^", b"~"]) * r.choice([201, 201, 1000, 1000, 5000, 20000])
            return b"|".join(fields)
        if op == 7:                                   # stray start and end bytes inside
            b = bytearray(raw)
            for _ in range(r.randint(1, 4)):
                b[r.randint(0, len(b)):0] = r.choice([b"\x0b", b"\x1c", b"\x1c\x0a", b"\x0b\x0b", b"\x1c\r", b"\x00"])
            return bytes(b)
        if op == 8:                                   # 0x1C 0x0A in MSH-12 (echoed by the ACK)
            return raw.replace(b"|2.5", b"|2.5\x1c\n", 1)
        if op == 9:                                   # a lying MSH-18
            parts = raw.split(b"\r", 1)
            fields = parts[0].split(b"|")
            if len(fields) > 17:
                fields[17] = r.choice(CHARSETS).encode("utf-8")
            return b"\r".join([b"|".join(fields)] + parts[1:])
        if op == 10:                                  # NUL bytes and controls anywhere
            b = bytearray(raw)
            for _ in range(r.randint(1, 10)):
                b[r.randint(0, len(b)):0] = bytes([r.choice([0, 1, 7, 8, 0x7F, 0x85, 0xA0, 0xFF])])
            return bytes(b)
        if op == 11:                                  # bad UTF-8 in a name
            return raw.replace(b"DUPONT", r.choice([b"\xc3\x28", b"\xed\xa0\x80", b"\xff\xfe", b"\xf4\x90\x80\x80"]), 1)
        if op == 12:                                  # a BOM, or blank lines before MSH
            return r.choice([BOM, b"\r\n", b"  ", BOM + BOM, b"\x00"]) + raw
        if op == 13:                                  # HL7 escapes left open
            return raw.replace(b"DUPONT", r.choice([b"\\X", b"\\XZZ\\", b"\\X0D0A\\", b"\\.br\\", b"\\"]), 1)
        if op == 14:                                  # a repetition storm
            return raw.replace(b"^PI", b"^PI" + b"~1^^^A^PI" * r.randint(10, 500), 1)
        return raw + r.choice([b"\rZZZ|" + b"1" * r.randint(0, 99), b"\r\r\r", b"\rMSH|^~\\&|X", b"\r" + bytes(range(256))])

    def hostile(self) -> bytes:
        """One payload (unframed)."""
        r = self.r
        kind = r.random()
        if kind < 0.12:                               # random bytes
            return r.randbytes(r.choice([0, 1, 3, 10, 100, 1000, 4000]))
        if kind < 0.18:                               # HL7-looking noise
            return b"MSH" + r.randbytes(r.randint(0, 300))
        if kind < 0.22 and self.sent:                 # an exact resend
            return r.choice(self.sent[-200:])
        if kind < 0.25 and self.sent:                 # same control id, other content
            prev = r.choice(self.sent[-200:])
            return prev.replace(b"DUPONT", b"DURAND", 1).replace(b"|I|", b"|O|", 1)
        if kind < 0.255:                              # over the size limit
            body = self.encode(self.message())
            return body + b"\rNTE|" + r.choice([b"X", b"\x0b", b"\xe9"]) * (self.limit + r.randint(1, 5000))
        text = self.message()
        raw = self.encode(text)
        if r.random() < 0.85:
            for _ in range(r.choice([1, 1, 1, 2, 3])):
                raw = self.mutate(raw)
        if len(raw) < 20000:
            self.sent.append(raw)
        return raw

    def clean(self, cid: str) -> bytes:
        return adt("A28", ipp="799999", control_id=cid, zfa=zfa_2111("INO", "IC")).encode() + b"\r"

    # -- sessions --------------------------------------------------------------------------------------

    def session(self, count: int) -> Session:
        """About ``count`` hostile frames on one connection, then a clean message whose ACK must be next."""
        r = self.r
        stream: list[bytes] = []
        for _ in range(count):
            if r.random() < 0.03:                     # bytes outside any frame (no start byte in them)
                stream.append(r.randbytes(r.randint(1, 200)).replace(VT, b"") or b"\n")
            stream.append(VT + self.hostile() + END)
        sentinel = self.cid()
        stream.append(VT + self.clean(sentinel) + END)
        half_close = r.random() < 0.05
        if not half_close and r.random() < 0.05:      # a frame started and never finished
            stream.append(VT + b"MSH|^~\\&|CUT|" + r.randbytes(r.randint(0, 50)).replace(END, b""))
        writes = self._writes(stream)
        data = b"".join(writes)
        frames = split_frames(data)
        return Session(writes, frames, [readable_msh10(f, self.limit) for f in frames], half_close, sentinel)

    def _writes(self, stream: list[bytes]) -> list[bytes]:
        """Many frames per write (they share a group commit), sometimes split in the middle of one."""
        r = self.r
        writes, i = [], 0
        while i < len(stream):
            n = r.choice([1, 2, 5, 20, 64, 200])
            chunk = b"".join(stream[i:i + n])
            i += n
            if len(chunk) > 10 and r.random() < 0.2:
                cut = r.randrange(1, len(chunk))
                writes += [chunk[:cut], chunk[cut:]]
            else:
                writes.append(chunk)
        return writes

    def sessions(self, total: int, per_connection: int | None = None) -> list[Session]:
        """Connections of 10 to 400 frames (at most ``per_connection``), ``total`` frames in all."""
        out, made = [], 0
        while made < total:
            n = min(self.r.choice([10, 50, 200, 400]), per_connection or total, total - made)
            s = self.session(n)
            out.append(s)
            made += n
        return out
