"""A compiled mapping: which field means what, and the extraction of facts from one message.

Everything here is decided at load time (paths compiled, codes resolved, policy applied); `extract` only
reads the fields it names and converts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from .message import Message, Path, compile_path
from .model import (
    DATA_TYPE_ERROR, DELETE, REQUIRED_FIELD_MISSING, SEGMENT_SEQUENCE_ERROR, TABLE_VALUE_NOT_FOUND,
    UNSUPPORTED_EVENT_CODE, UNSUPPORTED_MESSAGE_TYPE, UNSUPPORTED_VERSION_ID, Extraction, Fact, Problem,
)

_EVENT = compile_path("MSH-9-2")
_TYPE = compile_path("MSH-9-1")

__all__ = ["Mapping", "FactRule", "Requirement", "When", "Refusal", "parse_ts", "TsError"]


# --- HL7 TS -------------------------------------------------------------------------------------------

class TsError(ValueError):
    pass


_TS = re.compile(r"^(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?)?)?)?([+-]\d{4})?$")


@lru_cache(maxsize=2048)
def parse_ts(text: str) -> datetime:
    """HL7 v2.5 TS `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]` → datetime (naive without an offset)."""
    m = _TS.match(text)
    if not m:
        raise TsError(f"{text!r} is not an HL7 TS (YYYY[MM[DD[HH[MM[SS[.SSSS]]]]]][+/-ZZZZ])")
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        tz = None
        if off:
            minutes = int(off[1:3]) * 60 + int(off[3:5])
            tz = timezone(timedelta(minutes=-minutes if off[0] == "-" else minutes))
        return datetime(int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), int(s or 0),
                        int((frac or "0").ljust(6, "0")), tzinfo=tz)
    except ValueError as e:
        raise TsError(f"{text!r} is not a valid date: {e}") from None


# --- compiled parts -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class When:
    """A condition on the message: one of the values at `path` is in `values`."""

    path: Path
    values: frozenset

    def holds(self, msg: Message) -> bool:
        for _, v in msg.locate_all(self.path):
            if msg.unescape(v) in self.values:
                return True
        return False

    def __str__(self) -> str:
        return f"{self.path.text} in {'/'.join(sorted(self.values))}"


@dataclass(frozen=True, slots=True)
class Requirement:
    """`required:` — always, or only on some events, or only when conditions hold."""

    events: frozenset | None = None
    when: tuple = ()

    def applies(self, msg: Message, event: str | None) -> bool:
        if self.events is not None and event not in self.events:
            return False
        return all(w.holds(msg) for w in self.when)

    def describe(self, event: str | None) -> str:
        parts = []
        if self.events is not None:
            parts.append(f"on {event}")
        if self.when:
            parts.append("when " + " and ".join(str(w) for w in self.when))
        return ("required " + " ".join(parts)).strip()


@dataclass(frozen=True, slots=True)
class FactRule:
    name: str
    paths: tuple                 # of Path; several only for list facts
    type: str                    # str, ts, bool, list
    codes: dict | None           # raw code -> state (None = no fact)
    default: str | None
    required: Requirement | None
    when: tuple                  # of When
    only_with: str | None
    items: tuple | None          # ((key, component, subcomponent), ...) for records
    delete_ignores_when: bool
    path: Path = None            # the first path
    plain: bool = False          # a text copied as is: the fast path of `extract`
    header: bool = False         # a message.* fact, still extracted when the message is rejected

    def __post_init__(self):
        object.__setattr__(self, "path", self.paths[0] if self.paths else None)
        object.__setattr__(self, "plain", self.type == "str" and self.codes is None and not self.when
                           and self.default is None and self.required is None and self.items is None)
        object.__setattr__(self, "header", self.name.startswith("message."))

    @property
    def path_text(self) -> str:
        return ", ".join(p.text for p in self.paths)


_YN = {"Y": True, "N": False}
_PLAIN, _TYPED, _SLOW, _LIST = "plain", "typed", "slow", "list"   # kinds of the extraction plan


@dataclass
class Mapping:
    """One mapping file, resolved (its `extends` chain merged, paths compiled, codes and policy applied): the
    events it accepts, the segments it requires or forbids, and the fact rules. `extract(message)` reads a
    message into an `Extraction` (plain facts, problems, a rejection); it is pure and reads only the fields
    its rules name. It owns nothing else; choosing the mapping for a message is `MappingSet.select`."""
    name: str
    source: str                          # file of the mapping (the child, where extends is used)
    description: str
    message_types: frozenset
    accepted: frozenset                  # every event of every group
    groups: dict                         # group name -> frozenset of events
    excluded: dict                       # event -> why it is refused
    segments: tuple                      # ((segment, Requirement or None, once, single_valued), ...)
    forbidden: tuple                     # ((Path, reason), ...)
    facts: tuple                         # FactRule, independent ones first
    policy: dict = field(default_factory=dict)
    variant: str = ""                    # "senders.yaml:4" when a sender rule changed the policy
    chain: tuple = ()                    # the extends chain, this mapping first

    def __repr__(self) -> str:
        return f"<Mapping {self.name}{' (' + self.variant + ')' if self.variant else ''}>"

    # -- the one hot function --

    def __post_init__(self):
        # The hot loop reads plain tuples, not attributes: (rule, name, path text, segment, memo key,
        # field, component index, subcomponent index, kind). Dependent facts (`only_with`) run after the others.
        def plan(rules):
            out = []
            for r in rules:
                p = r.path
                kind = (_LIST if r.type == "list" else _SLOW if not p.simple or r.when or r.default is not None
                        else _PLAIN if r.plain else _TYPED)
                out.append((r, r.name, p.text, p.segment, f"{p.segment}.{p.field}", p.field,
                            (p.component or 1) - 1, (p.sub or 1) - 1, kind))
            return tuple(out)
        self._plan = plan(r for r in self.facts if r.only_with is None)
        self._dependent = plan(r for r in self.facts if r.only_with is not None)
        self._header = tuple(r for r in self.facts if r.header)
        # (segment, fields the facts read there) of the segments declared `single_valued`: none of those
        # fields may hold a second value (the check costs one substring test while no field repeats)
        self._single = tuple((seg, tuple(sorted({p.field for r in self.facts for p in r.paths if p.segment == seg})))
                             for seg, _, _, single in self.segments if single)

    def extract(self, message: Message | str) -> Extraction:
        msg = Message.parse(message) if isinstance(message, str) else message
        ex = Extraction()
        event = msg.get(_EVENT)
        ex.rejection = self._rejection(msg.get(_TYPE), event)
        if ex.rejection is not None:
            for rule in self._header:          # enough to log and journal the rejected message
                seq, raw = msg.locate(rule.path)
                self._fact(rule, msg, event, ex, seq, raw)
            return ex
        segments = msg.segments
        missing = set()          # segments already reported missing: their fields are not reported again
        for seg, req, once, _ in self.segments:
            if req is not None and seg not in segments and req.applies(msg, event):
                missing.add(seg)
                ex.problems.append(Problem(seg, 1, None, None, SEGMENT_SEQUENCE_ERROR,
                                           f"segment {seg} is required on {event} and is missing"))
            elif once and len(segments.get(seg, ())) > 1:
                # which one would count is a guess: a later ZFA may hold the patient's refusal
                ex.problems.append(Problem(seg, 2, None, None, SEGMENT_SEQUENCE_ERROR,
                                           f"segment {seg} appears {len(segments[seg])} times; "
                                           f"it may appear once"))
        for seg, fields in self._single:
            lines = segments.get(seg)
            if lines and msg.rs in lines[0]:
                self._repeated(msg, seg, fields, ex)
        self._run(self._plan, msg, event, ex, missing)
        facts = ex.facts
        dependent = [x for x in self._dependent if x[0].only_with in facts]
        if dependent:
            self._run(dependent, msg, event, ex, missing)
        for path, reason in self.forbidden:
            seq, raw = msg.locate(path)
            if raw is not None:
                ex.problems.append(_problem(path, seq, DATA_TYPE_ERROR,
                                            f"{path.text} must be empty ({reason}); it holds {raw!r}"))
        return ex

    @staticmethod
    def _repeated(msg: Message, seg: str, fields: tuple, ex: Extraction) -> None:
        """A field that does not repeat holding a value past its first repetition (`IC~INC`, `~IC`): which
        value counts is a guess, and a later one may be the patient's refusal. A trailing `~` is harmless."""
        values = msg._seg_fields(seg, 0)
        rs = msg.rs
        for f in fields:
            raw = values[f] if f < len(values) else ""
            if rs in raw:
                reps = raw.split(rs)
                if any(reps[1:]):
                    ex.problems.append(Problem(seg, 1, f, None, DATA_TYPE_ERROR,
                                               f"{seg}-{f} holds {len(reps)} repetitions ({raw!r}); it does not "
                                               f"repeat: which value counts would be a guess; send one value"))

    def _run(self, plan: tuple, msg: Message, event, ex: Extraction, missing: set) -> None:
        facts, trace = ex.facts, ex.trace
        ss, es = msg.ss, msg.es
        components = msg.first_components
        memo = msg._memo
        segments = msg.segments
        new_fact = tuple.__new__        # Fact is a NamedTuple: build it without the Python-level __new__
        for rule, name, ptext, seg, key, fld, ci, si, kind in plan:
            if seg not in segments:
                # most messages lack a segment or two (MRG, ZFA…): nothing to read, a problem only if required
                if rule.required is not None:
                    self._absent(rule, msg, event, ex, missing)
                continue
            if kind is _SLOW or kind is _LIST:
                if kind is _LIST:
                    self._list_fact(rule, msg, event, ex)
                else:
                    seq, raw = msg.locate(rule.path)
                    self._fact(rule, msg, event, ex, seq, raw)
                continue
            comps = memo.get(key) or components(seg, fld, key)
            raw = comps[ci] if ci < len(comps) else ""
            if ss in raw:
                subs = raw.split(ss)
                raw = subs[si] if si < len(subs) else ""
            elif si:
                raw = ""
            if kind is _PLAIN:
                if raw:
                    value = raw if es not in raw or raw == DELETE else msg.unescape(raw)
                    facts[name] = value
                    trace.append(new_fact(Fact, (name, ptext, raw, value)))
                continue
            if not raw:
                if rule.required is not None:
                    self._fact(rule, msg, event, ex, 1, None)
                continue
            if raw == DELETE:
                self._fact(rule, msg, event, ex, 1, raw)             # explicit null: the rare case
                continue
            text = raw if es not in raw else msg.unescape(raw)
            codes = rule.codes
            if codes is not None:
                if text not in codes:
                    ex.problems.append(_problem(rule.path, 1, TABLE_VALUE_NOT_FOUND,
                                                f"{_what(rule.path, rule)}: code {text!r} is not one of "
                                                f"{', '.join(codes)} (mapping {self.name})"))
                    continue
                value = codes[text]
                if value is None:
                    ex.ignored.append(new_fact(Fact, (name, rule.path.text, raw,
                                                      "not collected (code maps to no fact)")))
                    continue
            elif rule.type == "ts":
                try:
                    value = parse_ts(text)
                except TsError as e:
                    ex.problems.append(_problem(rule.path, 1, DATA_TYPE_ERROR, f"{_what(rule.path, rule)}: {e}"))
                    continue
            elif rule.type == "bool":
                value = _YN.get(text)
                if value is None:
                    ex.problems.append(_problem(rule.path, 1, TABLE_VALUE_NOT_FOUND,
                                                f"{_what(rule.path, rule)}: {text!r} is not Y or N (table 0136)"))
                    continue
            else:
                value = text
            facts[name] = value
            trace.append(new_fact(Fact, (name, ptext, raw, value)))

    def _absent(self, rule: FactRule, msg: Message, event, ex: Extraction, missing: set) -> None:
        """The fact's segment is absent: a problem only when the fact is required and the segment was not
        already reported missing."""
        p = rule.path
        if rule.required is not None and p.segment not in missing and rule.required.applies(msg, event):
            ex.problems.append(_problem(p, 0, REQUIRED_FIELD_MISSING,
                                        f"{_what(p, rule)} is {rule.required.describe(event)}; "
                                        f"segment {p.segment} is missing"))

    def _rejection(self, mtype: str | None, event: str | None) -> Problem | None:
        if mtype not in self.message_types:
            what = f"message type {mtype!r}" if mtype else "an empty message type (MSH-9-1)"
            return Problem("MSH", 1, 9, 1, UNSUPPORTED_MESSAGE_TYPE,
                           f"{what} is not supported; accepted: {', '.join(sorted(self.message_types))}")
        if not event:
            return Problem("MSH", 1, 9, 2, UNSUPPORTED_EVENT_CODE, "MSH-9-2 (trigger event) is empty")
        if event in self.excluded:
            return Problem("MSH", 1, 9, 2, UNSUPPORTED_EVENT_CODE, f"event {event} is refused: {self.excluded[event]}")
        if event not in self.accepted:
            return Problem("MSH", 1, 9, 2, UNSUPPORTED_EVENT_CODE,
                           f"event {event} is not accepted by mapping {self.name}")
        return None

    def _fact(self, rule: FactRule, msg: Message, event, ex: Extraction, seq: int, raw: str | None) -> None:
        path = rule.path
        if raw is None:
            if rule.default is None:
                if rule.required is not None and rule.required.applies(msg, event):
                    ex.problems.append(_problem(path, seq, REQUIRED_FIELD_MISSING,
                                                f"{_what(path, rule)} is {rule.required.describe(event)} and is empty"))
                return
            raw = rule.default
        if raw == DELETE:
            if rule.required is not None and rule.required.applies(msg, event):
                ex.problems.append(_problem(path, seq, REQUIRED_FIELD_MISSING,
                                            f"{_what(path, rule)} is {rule.required.describe(event)}; "
                                            "an explicit null \"\" cannot delete it"))
                return
            if rule.type == "ts":
                # The rules keep dated values, never a date alone: "" on a date deletes nothing, it reads as empty
                # (else a str would stand where a date is compared, and the message would fail as an internal error).
                ex.ignored.append(Fact(rule.name, path.text, raw, "explicit null on a date: read as empty"))
                return
            if rule.when and not rule.delete_ignores_when and not all(w.holds(msg) for w in rule.when):
                ex.ignored.append(Fact(rule.name, path.text, raw, "condition not met: " + _whens(rule)))
                return
            ex.facts[rule.name] = DELETE
            ex.trace.append(Fact(rule.name, path.text, raw, DELETE))
            return
        if rule.when and not all(w.holds(msg) for w in rule.when):
            ex.ignored.append(Fact(rule.name, path.text, raw, "condition not met: " + _whens(rule)))
            return
        text = msg.unescape(raw)
        if rule.codes is not None:
            if text not in rule.codes:
                ex.problems.append(_problem(path, seq, TABLE_VALUE_NOT_FOUND,
                                            f"{_what(path, rule)}: code {text!r} is not one of "
                                            f"{', '.join(rule.codes)} (mapping {self.name})"))
                return
            value = rule.codes[text]
            if value is None:
                ex.ignored.append(Fact(rule.name, path.text, raw, "not collected (code maps to no fact)"))
                return
        elif rule.type == "ts":
            try:
                value = parse_ts(text)
            except TsError as e:
                ex.problems.append(_problem(path, seq, DATA_TYPE_ERROR, f"{_what(path, rule)}: {e}"))
                return
        elif rule.type == "bool":
            value = _YN.get(text)
            if value is None:
                ex.problems.append(_problem(path, seq, TABLE_VALUE_NOT_FOUND,
                                            f"{_what(path, rule)}: {text!r} is not Y or N (table 0136)"))
                return
        else:
            value = text
        ex.facts[rule.name] = value
        ex.trace.append(Fact(rule.name, path.text, raw, value))

    def _list_fact(self, rule: FactRule, msg: Message, event, ex: Extraction) -> None:
        out, raws, seen = [], [], set()
        if not rule.when or all(w.holds(msg) for w in rule.when):
            for path in rule.paths:
                if rule.items:
                    for _, rep in msg.repetitions(path):
                        item = _record(msg, rep, rule.items)
                        key = tuple(item.values())
                        if not key[0] or key in seen:   # no id, or already named by another field
                            continue
                        seen.add(key)
                        out.append(item)
                        raws.append(rep)
                else:
                    for _, v in msg.locate_all(path):
                        if v not in seen:
                            seen.add(v)
                            out.append(msg.unescape(v))
                            raws.append(v)
        if out:
            ex.facts[rule.name] = out
            ex.trace.append(Fact(rule.name, rule.path_text, raws, out))
        elif rule.required is not None and rule.required.applies(msg, event):
            ex.problems.append(_problem(rule.paths[0], 0, REQUIRED_FIELD_MISSING,
                                        f"{_what(rule.paths[0], rule)} is {rule.required.describe(event)} and is empty"))


def _record(msg: Message, rep: str, items: tuple) -> dict:
    """One repetition as {key: component}, splitting it once."""
    parts = rep.split(msg.cs)
    out = {}
    for key, c, sub in items:
        v = parts[c - 1] if c <= len(parts) else ""
        if msg.ss in v:
            subs = v.split(msg.ss)
            v = subs[(sub or 1) - 1] if (sub or 1) <= len(subs) else ""
        elif sub and sub > 1:
            v = ""
        out[key] = msg.unescape(v) if msg.es in v else v
    return out


def _what(path: Path, rule: FactRule) -> str:
    return f"{path.text} ({rule.name})"


def _whens(rule: FactRule) -> str:
    return " and ".join(str(w) for w in rule.when)


def _problem(path: Path, seq: int, code: int, text: str) -> Problem:
    return Problem(path.segment, seq or 1, path.field, path.component, code, text)


class Refusal:
    """Stands in for a mapping when no rule matches and no default is configured: every message is AR 203."""

    name = "(none)"
    source = ""
    variant = ""
    chain = ()
    policy: dict = {}

    def __init__(self, why: str):
        self.why = why

    def extract(self, message: Message | str) -> Extraction:
        msg = Message.parse(message) if isinstance(message, str) else message
        ex = Extraction()
        ex.rejection = Problem("MSH", 1, 12, 3, UNSUPPORTED_VERSION_ID, self.why)
        for name, p in (("message.control_id", "MSH-10"), ("message.event", "MSH-9-2")):
            v = msg.get(p)
            if v:
                ex.facts[name] = v
        return ex
