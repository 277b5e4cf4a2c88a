"""A lazy, split-based view of one HL7 v2 message, addressed by Terser-style paths.

The hot path never builds the whole tree (docs/architecture.md, "Parsing"): `parse` only splits the text into
segments and indexes them by name; a segment is split into fields the first time a path reads it, a field
into repetitions and components only when asked, and escape sequences are undone only on the values that
are actually returned.

Path language (HAPI Terser style, see mappings/README.md):

    PID-3             first repetition, component 1, subcomponent 1 (a path always ends on a primitive)
    PID-3-4-1         component 4, subcomponent 1
    PID-3(1)-1        the SECOND repetition: repetition indexes start at 0, as in HAPI's Terser
    PID-3(*)-1        every repetition (with `values`)
    ROL(*)-4-1        every ROL segment; ROL(1) is the second one
    PID-3[5=INS]-1    the repetitions whose component 5 is INS
    PID-3[5=INS,4-2=1.2.250.1.213.1.4.8|1.2.250.1.213.1.4.10]-1   all conditions hold; `|` = one of
    ROL[3=ODRP]-4     the ROL segments whose field 3 is ODRP
    MSH-1, MSH-2      the field separator and the encoding characters, as HL7 numbers them
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Message", "Path", "PathError", "compile_path", "unescape"]


class PathError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Cond:
    """`[4-2=a|b]`: the value at (field,) component, subcomponent is one of `values`."""

    field: int | None          # set in a segment filter, None in a field filter
    component: int
    sub: int
    values: frozenset


@dataclass(frozen=True, slots=True)
class Path:
    text: str
    segment: str
    seg_rep: int | None        # None = every occurrence
    seg_filter: tuple
    field: int
    field_rep: int | None      # None = every repetition
    field_filter: tuple
    component: int | None      # None: component 1 for a value, the whole repetition for `repetitions`
    sub: int | None
    simple: bool = False       # first segment, first repetition, no filter: the fast path of `locate`
    rep_key: str = ""          # the path up to the repetition: `PID-3[5=PI]` for `PID-3[5=PI]-4-1`
    # a mapping's `prefer:`: where several repetitions pass the filter, the one read is the first by these
    # ((component, subcomponent, values in order of preference), ...), then by message order
    prefer: tuple = ()

    @property
    def many(self) -> bool:
        return self.seg_rep is None or self.field_rep is None


_PATH = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})"
    r"(?:\((?P<srep>\*|\d+)\))?(?:\[(?P<sfilt>[^\]]*)\])?"
    r"-(?P<field>\d+)"
    r"(?:\((?P<frep>\*|\d+)\))?(?:\[(?P<ffilt>[^\]]*)\])?"
    r"(?:-(?P<comp>\d+)(?:-(?P<sub>\d+))?)?$"
)
_COND = re.compile(r"^(?P<loc>\d+(?:-\d+){0,2})=(?P<values>[^,]*)$")


def _conds(text: str, in_segment: bool, lists: dict | None, whole: str) -> tuple:
    out = []
    for part in text.split(","):
        m = _COND.match(part.strip())
        if not m:
            raise PathError(f"bad condition {part!r} in {whole!r}: expected N=VALUE or N-M=A|B")
        loc = [int(x) for x in m["loc"].split("-")]
        if in_segment:
            if len(loc) > 3:
                raise PathError(f"condition {part!r} in {whole!r}: at most field-component-subcomponent")
            fld, comp, sub = (loc + [1, 1])[:3]
        else:
            if len(loc) > 2:
                raise PathError(f"condition {part!r} in {whole!r}: at most component-subcomponent")
            fld, (comp, sub) = None, (loc + [1])[:2]
        if min(loc) < 1:
            raise PathError(f"condition {part!r} in {whole!r}: numbers start at 1")
        values: list[str] = []
        for v in m["values"].split("|"):
            v = v.strip()
            if v.startswith("@"):
                if lists is None or v[1:] not in lists:
                    raise PathError(f"unknown list {v!r} in {whole!r}")
                values.extend(lists[v[1:]])
            else:
                values.append(v)
        out.append(Cond(fld, comp, sub, frozenset(values)))
    return tuple(out)


def compile_path(text: str, lists: dict | None = None) -> Path:
    """Parse a path once (mappings compile theirs at load time). Raises PathError with the reason."""
    if not isinstance(text, str):
        raise PathError(f"a path is text, not {type(text).__name__}")
    m = _PATH.match(text.strip())
    if not m:
        raise PathError(f"bad path {text!r}: expected SEG[(n|*)][filter]-FIELD[(n|*)][filter][-COMP[-SUB]], "
                        "e.g. PID-3[5=PI]-4-1")
    fld = int(m["field"])
    if fld < 1:
        raise PathError(f"bad path {text!r}: fields are numbered from 1")
    for g in ("comp", "sub"):
        if m[g] is not None and int(m[g]) < 1:
            raise PathError(f"bad path {text!r}: components are numbered from 1")
    if m["srep"] is not None and m["sfilt"] is not None:
        raise PathError(f"bad path {text!r}: use a segment index or a segment filter, not both")
    if m["frep"] is not None and m["ffilt"] is not None:
        raise PathError(f"bad path {text!r}: use a repetition index or a repetition filter, not both")
    seg = m["seg"]
    if seg == "MSH" and fld <= 2 and (m["comp"] or m["frep"] or m["ffilt"]):
        raise PathError(f"bad path {text!r}: MSH-1 and MSH-2 are the separators, they have no parts")
    sfilt = _conds(m["sfilt"], True, lists, text) if m["sfilt"] else ()
    ffilt = _conds(m["ffilt"], False, lists, text) if m["ffilt"] else ()
    srep = None if m["srep"] == "*" or sfilt else int(m["srep"] or 0)
    frep = None if m["frep"] == "*" or ffilt else int(m["frep"] or 0)
    simple = srep == 0 and frep == 0 and not (seg == "MSH" and fld <= 2)
    rep_key = text.strip()[:m.end("ffilt") + 1 if m["ffilt"] is not None else m.end("frep") + 1 if m["frep"]
                           else m.end("field")]
    return Path(text.strip(), seg, srep, sfilt, fld, frep, ffilt,
                int(m["comp"]) if m["comp"] else None, int(m["sub"]) if m["sub"] else None, simple, rep_key)


_cached_path = lru_cache(maxsize=4096)(compile_path)


# --- escape sequences -----------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _escape_re(es: str):
    e = re.escape(es)
    return re.compile(e + "([^" + e + "]*)" + e)


def unescape(value: str, fs="|", cs="^", rs="~", es="\\", ss="&") -> str:
    r"""Undo HL7 escapes: \F\ \S\ \T\ \R\ \E\ \Xhh..\ (and drop the \H\ \N\ highlighting marks)."""
    if not es or es not in value:
        return value

    def one(m: re.Match) -> str:
        s = m.group(1)
        simple = {"F": fs, "S": cs, "T": ss, "R": rs, "E": es, "H": "", "N": "", ".br": "\n"}.get(s)
        if simple is not None:
            return simple
        if s[:1] == "X" and len(s) > 1 and len(s) % 2 == 1:
            try:
                data = bytes.fromhex(s[1:])
            except ValueError:
                return m.group(0)
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return data.decode("latin-1")
        return m.group(0)          # unknown escape: keep it as sent rather than guess

    return _escape_re(es).sub(one, value)


# --- the message ------------------------------------------------------------------------------------

class Message:
    """One message. `get(path)` gives the first non-empty value, `values(path)` all of them (unescaped)."""

    __slots__ = ("text", "fs", "cs", "rs", "es", "ss", "segments", "_fields", "_memo")

    def __init__(self, segments: dict[str, list[str]], text: str, fs: str, enc: str):
        self.text = text
        self.segments = segments
        self.fs = fs
        self.cs = enc[0] if len(enc) > 0 else "^"
        self.rs = enc[1] if len(enc) > 1 else "~"
        self.es = enc[2] if len(enc) > 2 else "\\"
        self.ss = enc[3] if len(enc) > 3 else "&"
        self._fields: dict = {}
        self._memo: dict = {}      # path text -> result of `locate`, for the paths with filters or (*)

    @classmethod
    def parse(cls, text: str) -> "Message":
        """Split on segment terminators (`\\r`, `\\n` or `\\r\\n`). Raises ValueError without an MSH."""
        if text[:1] in ("\ufeff", "\x0b"):
            text = text.lstrip("\ufeff\x0b")
        if "\n" in text:
            text = text.replace("\r\n", "\r").replace("\n", "\r")
        lines = text.split("\r")
        first = lines[0].lstrip()
        if not first.startswith("MSH") or len(first) < 8:
            raise ValueError("the message does not start with an MSH segment")
        fs = first[3]
        end = first.find(fs, 4)
        enc = first[4:end] if end > 0 else first[4:]
        if not enc or fs.isalnum() or fs in enc:
            raise ValueError(f"MSH-1/MSH-2 do not hold separators: {first[:9]!r}")
        lines[0] = first
        segments: dict[str, list[str]] = {}
        for line in lines:
            if len(line) > 2 and line[0] > " ":     # skip empty and blank lines
                segments.setdefault(line[:3], []).append(line)
        return cls(segments, text, fs, enc)

    # -- fields of one segment occurrence, split once --

    def _seg_fields(self, name: str, i: int) -> list[str]:
        key = name if i == 0 else (name, i)     # the first occurrence, by far the most read, keyed by name
        f = self._fields.get(key)
        if f is None:
            f = self.segments[name][i].split(self.fs)
            if name == "MSH":
                f.insert(1, self.fs)        # MSH-1 is the separator itself, so MSH-n is f[n]
            self._fields[key] = f
        return f

    def first_components(self, name: str, fld: int, key: str) -> list[str] | None:
        """The components of the first repetition of field `fld` of the first `name` segment, split once per
        message (several facts read the same field); None when the segment is absent. For `Mapping.extract`."""
        comps = self._memo.get(key)
        if comps is None:
            if name not in self.segments:
                return None
            f = self._fields.get(name) or self._seg_fields(name, 0)
            raw = f[fld] if fld < len(f) else ""
            if self.rs in raw:
                raw = raw[:raw.index(self.rs)]
            comps = self._memo[key] = raw.split(self.cs)
        return comps

    def segment_count(self, name: str) -> int:
        return len(self.segments.get(name, ()))

    def has(self, name: str) -> bool:
        return name in self.segments

    def _part(self, rep: str, comp: int | None, sub: int | None) -> str:
        """Component `comp` (default 1) and subcomponent `sub` (default 1) of one repetition."""
        cs = self.cs
        if cs in rep:
            parts = rep.split(cs)
            c = comp or 1
            if c > len(parts):
                return ""
            rep = parts[c - 1]
        elif comp and comp > 1:
            return ""
        ss = self.ss
        if ss in rep:
            parts = rep.split(ss)
            s = sub or 1
            return parts[s - 1] if s <= len(parts) else ""
        if sub and sub > 1:
            return ""
        return rep

    def _cond_holds(self, source: str, cond: Cond) -> bool:
        if self.rs not in source:
            v = self._part(source, cond.component, cond.sub)
            return (self.unescape(v) if self.es in v else v) in cond.values
        for rep in source.split(self.rs):
            v = self._part(rep, cond.component, cond.sub)
            if self.es in v:
                v = unescape(v, self.fs, self.cs, self.rs, self.es, self.ss)
            if v in cond.values:
                return True
        return False

    def _first_match(self, p: Path) -> tuple[int, str | None]:
        """The first repetition of a field of the first segment that passes the filter (the common filter)."""
        fields = self._fields.get(p.segment) or self._seg_fields(p.segment, 0)
        raw = fields[p.field] if p.field < len(fields) else ""
        if not raw:
            return 0, None
        cs, ss, es = self.cs, self.ss, self.es
        for rep in raw.split(self.rs):
            parts = rep.split(cs)
            for c in p.field_filter:
                v = parts[c.component - 1] if c.component <= len(parts) else ""
                if ss in v:
                    subs = v.split(ss)
                    v = subs[c.sub - 1] if c.sub <= len(subs) else ""
                elif c.sub > 1:
                    v = ""
                if es in v:
                    v = self.unescape(v)
                if v not in c.values:
                    break
            else:
                if rep:
                    return 1, rep
        return 0, None

    def _preferred(self, p: Path) -> tuple[int, str | None]:
        """Of the repetitions that pass the filter, the first by the path's order of preference (`prefer`)."""
        best, best_rank = (0, None), None
        for i, rep in self._reps(p):
            if not rep:
                continue
            rank = []
            for comp, sub, order in p.prefer:
                v = self.unescape(self._part(rep, comp, sub))
                rank.append(order.index(v) if v in order else len(order))
            if best_rank is None or rank < best_rank:
                best, best_rank = (i + 1, rep), rank
        return best

    def _reps(self, p: Path):
        """Yield (segment occurrence from 0, raw field repetition) for the repetitions the path names."""
        segs = self.segments.get(p.segment)
        if not segs:
            return
        if p.seg_rep is None:
            occurrences = range(len(segs))
        elif p.seg_rep < len(segs):
            occurrences = (p.seg_rep,)
        else:
            return
        for i in occurrences:
            fields = self._seg_fields(p.segment, i)
            if p.seg_filter:
                if not all(c.field < len(fields) and self._cond_holds(fields[c.field], c) for c in p.seg_filter):
                    continue
            if p.field >= len(fields):
                continue
            raw = fields[p.field]
            if not raw:
                continue
            if p.segment == "MSH" and p.field <= 2:
                yield i, raw
                continue
            rs = self.rs
            if p.field_rep == 0:
                j = raw.find(rs)
                yield i, (raw if j < 0 else raw[:j])
                continue
            reps = raw.split(rs)
            if p.field_rep is not None:
                if p.field_rep < len(reps):
                    yield i, reps[p.field_rep]
                continue
            for rep in reps:
                if p.field_filter and not all(self._cond_holds(rep, c) for c in p.field_filter):
                    continue
                yield i, rep

    def locate(self, path: str | Path) -> tuple[int, str | None]:
        """(segment occurrence from 1, the raw escaped value) of the first non-empty value; (0, None) if none."""
        p = path if path.__class__ is Path else _cached_path(path)
        segs = self.segments.get(p.segment)
        if segs is None:
            return 0, None
        if p.simple:
            # the hot path: one dict lookup, one index, at most three splits
            fields = self._fields.get(p.segment)
            if fields is None:
                fields = self._seg_fields(p.segment, 0)
            if p.field >= len(fields):
                return 1, None
            v = fields[p.field]
            if not v:
                return 1, None
            if self.rs in v:
                v = v[:v.index(self.rs)]
            if self.cs in v:
                parts = v.split(self.cs)
                c = p.component or 1
                if c > len(parts):
                    return 1, None
                v = parts[c - 1]
            elif p.component and p.component > 1:
                return 1, None
            if self.ss in v:
                parts = v.split(self.ss)
                sub = p.sub or 1
                v = parts[sub - 1] if sub <= len(parts) else ""
            elif p.sub and p.sub > 1:
                return 1, None
            return (1, v) if v else (1, None)
        msh_sep = p.segment == "MSH" and p.field <= 2
        if p.field_filter or p.seg_filter or (p.seg_rep is not None and p.field_rep is not None):
            # a filter (or an index) names ONE repetition: the first that matches. Its components are
            # then read from it, so `PID-3[5=PI]-1` and `PID-3[5=PI]-4-1` always come from the same CX.
            # The repetition is kept per message: several facts read the same one.
            hit = self._memo.get(p.rep_key)
            if hit is None:
                hit = self._preferred(p) if p.prefer else \
                    self._first_match(p) if p.field_filter and p.seg_rep == 0 else \
                    next(((i + 1, rep) for i, rep in self._reps(p)), (0, None))
                self._memo[p.rep_key] = hit
            seq, rep = hit
            if rep is None:
                return 0, None
            v = rep if msh_sep else self._part(rep, p.component, p.sub)
            return (seq, v) if v else (seq, None)
        for i, rep in self._reps(p):       # (*): the first non-empty value of all
            v = rep if msh_sep else self._part(rep, p.component, p.sub)
            if v:
                return i + 1, v
        return 0, None

    def locate_all(self, path: str | Path) -> list[tuple[int, str]]:
        p = path if isinstance(path, Path) else _cached_path(path)
        msh_sep = p.segment == "MSH" and p.field <= 2
        out = []
        for i, rep in self._reps(p):
            v = rep if msh_sep else self._part(rep, p.component, p.sub)
            if v:
                out.append((i + 1, v))
        return out

    def repetitions(self, path: str | Path) -> list[tuple[int, str]]:
        """(segment occurrence from 1, raw repetition) for each non-empty repetition: for records, `items`."""
        p = path if isinstance(path, Path) else _cached_path(path)
        segs = self.segments.get(p.segment)
        if segs is None:
            return []
        if p.field_rep is None and not p.field_filter and not p.seg_filter and p.segment != "MSH":
            # `PV1-7(*)`, `ROL(*)-4(*)`: every repetition, without the generator
            out = []
            rs = self.rs
            for i in (range(len(segs)) if p.seg_rep is None else (p.seg_rep,) if p.seg_rep < len(segs) else ()):
                f = self._fields.get(p.segment if i == 0 else (p.segment, i)) or self._seg_fields(p.segment, i)
                raw = f[p.field] if p.field < len(f) else ""
                if raw:
                    out.extend((i + 1, rep) for rep in raw.split(rs) if rep)
            return out
        return [(i + 1, rep) for i, rep in self._reps(p) if rep]

    def unescape(self, value: str) -> str:
        return unescape(value, self.fs, self.cs, self.rs, self.es, self.ss) if self.es in value else value

    def part(self, rep: str, comp: int | None, sub: int | None = None) -> str:
        """A component of a raw repetition, unescaped."""
        return self.unescape(self._part(rep, comp, sub))

    def get(self, path: str | Path) -> str | None:
        """The first non-empty value the path names, unescaped; None when empty or absent."""
        _, v = self.locate(path)
        if v is None:
            return None
        return unescape(v, self.fs, self.cs, self.rs, self.es, self.ss) if self.es in v else v

    def values(self, path: str | Path) -> list[str]:
        """Every non-empty value the path names, in message order, unescaped."""
        return [self.unescape(v) for _, v in self.locate_all(path)]
