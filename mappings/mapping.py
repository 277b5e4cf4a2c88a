"""A compiled mapping: which field means what, and the extraction of facts from one message.

Everything here is decided at load time (paths compiled, codes resolved, policy applied); `extract` only
reads the fields it names and converts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from .message import Message, Path
from .model import (
    DATA_TYPE_ERROR, DELETE, REQUIRED_FIELD_MISSING, SEGMENT_SEQUENCE_ERROR, TABLE_VALUE_NOT_FOUND,
    UNSUPPORTED_EVENT_CODE, UNSUPPORTED_MESSAGE_TYPE, UNSUPPORTED_VERSION_ID, Extraction, Fact, Problem,
)

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

    @property
    def path_text(self) -> str:
        return ", ".join(p.text for p in self.paths)


_YN = {"Y": True, "N": False}


@dataclass
class Mapping:
    name: str
    source: str                          # file of the mapping (the child, where extends is used)
    description: str
    message_types: frozenset
    accepted: frozenset                  # every event of every group
    groups: dict                         # group name -> frozenset of events
    excluded: dict                       # event -> why it is refused
    segments: tuple                      # ((segment, Requirement), ...)
    forbidden: tuple                     # ((Path, reason), ...)
    facts: tuple                         # FactRule, independent ones first
    policy: dict = field(default_factory=dict)
    variant: str = ""                    # "senders.yaml:4" when a sender rule changed the policy
    chain: tuple = ()                    # the extends chain, this mapping first

    def __repr__(self) -> str:
        return f"<Mapping {self.name}{' (' + self.variant + ')' if self.variant else ''}>"

    # -- the one hot function --

    def extract(self, message: Message | str) -> Extraction:
        msg = Message.parse(message) if isinstance(message, str) else message
        ex = Extraction()
        event = msg.get("MSH-9-2")
        ex.rejection = self._rejection(msg.get("MSH-9-1"), event)
        if ex.rejection is None:
            for seg, req in self.segments:
                if seg not in msg.segments and req.applies(msg, event):
                    ex.problems.append(Problem(seg, 1, None, None, SEGMENT_SEQUENCE_ERROR,
                                               f"segment {seg} is required on {event} and is missing"))
        for rule in self.facts:
            if ex.rejection is not None and not rule.name.startswith("message."):
                continue
            if rule.only_with is not None and rule.only_with not in ex.facts:
                continue
            if rule.type == "list":
                self._list_fact(rule, msg, event, ex)
            else:
                self._fact(rule, msg, event, ex)
        if ex.rejection is None:
            for path, reason in self.forbidden:
                seq, raw = msg.locate(path)
                if raw is not None:
                    ex.problems.append(_problem(path, seq, DATA_TYPE_ERROR,
                                                f"{path.text} must be empty ({reason}); it holds {raw!r}"))
        return ex

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

    def _fact(self, rule: FactRule, msg: Message, event, ex: Extraction) -> None:
        path = rule.paths[0]
        seq, raw = msg.locate(path)
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
                        item = {k: msg.part(rep, c, s) for k, c, s in rule.items}
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
