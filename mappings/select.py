"""Choosing the mapping for one message, from MSH-3/MSH-4, MSH-12.3, MSH-21 and, where needed, the codes.

The most specific rule wins:

    sender rules (senders file)  >  version + profile (MSH-21)  >  version + codes  >  version  >  default

Within a level, a rule with more conditions wins; then the first one loaded. A sender rule may also carry
conditions on version and profile, and is then more specific than a bare sender rule.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from .mapping import Mapping, Refusal
from .message import Message
from .model import Selection

__all__ = ["Rule", "MappingSet", "Header"]

SENDER, PROFILE, CODES, VERSION, DEFAULT = 4, 3, 2, 1, 0
_LEVEL_NAME = {SENDER: "sender rule", PROFILE: "version and profile rule", CODES: "version and codes rule",
               VERSION: "version rule", DEFAULT: "default"}


class Patterns:
    """Exact values or shell-style patterns (`2.10.*`, `2.[0-9]`), compiled once."""

    __slots__ = ("texts", "exact", "regex")

    def __init__(self, texts):
        self.texts = tuple(texts)
        self.exact = frozenset(t for t in self.texts if not any(c in t for c in "*?["))
        pats = [fnmatch.translate(t) for t in self.texts if t not in self.exact]
        self.regex = re.compile("|".join(pats)) if pats else None

    def match(self, value: str | None) -> bool:
        if value is None:
            return False
        return value in self.exact or (self.regex is not None and self.regex.match(value) is not None)


@dataclass(frozen=True)
class Header:
    application: str | None
    facility: str | None
    version: str | None
    profiles: tuple        # each MSH-21 repetition, components joined by ^

    @classmethod
    def of(cls, msg: Message) -> "Header":
        profiles = tuple("^".join(msg.unescape(c) for c in rep.split(msg.cs)).rstrip("^")
                         for _, rep in msg.repetitions("MSH-21(*)"))
        return cls(msg.get("MSH-3-1"), msg.get("MSH-4-1"), msg.get("MSH-12-3"), profiles)

    def describe(self) -> str:
        return (f"MSH-3 = {self.application or '(empty)'}, MSH-4 = {self.facility or '(empty)'}, "
                f"MSH-12.3 = {self.version or '(empty)'}, MSH-21 = {' ~ '.join(self.profiles) or '(absent)'}")


@dataclass
class Rule:
    mapping: Mapping
    origin: str                          # file:line
    site: bool                           # from a senders file
    order: int
    application: Patterns | None = None
    facility: Patterns | None = None
    version: Patterns | None = None
    profile: Patterns | None = None
    codes: tuple = ()                    # ((Path, frozenset), ...)
    default: bool = False

    @property
    def level(self) -> int:
        if self.site or self.application or self.facility:
            return SENDER
        if self.profile:
            return PROFILE
        if self.codes:
            return CODES
        if self.version:
            return VERSION
        return DEFAULT

    @property
    def conditions(self) -> int:
        return sum(x is not None for x in (self.application, self.facility, self.version, self.profile)) + len(self.codes)

    def rank(self) -> tuple:
        return (-int(self.site), -self.level, -self.conditions, self.order)

    def matches(self, h: Header, msg: Message) -> list[str] | None:
        """The reasons this rule matches, or None."""
        why = []
        if self.application is not None:
            if not self.application.match(h.application):
                return None
            why.append(f"MSH-3 = {h.application}")
        if self.facility is not None:
            if not self.facility.match(h.facility):
                return None
            why.append(f"MSH-4 = {h.facility}")
        if self.version is not None:
            if not self.version.match(h.version):
                return None
            why.append(f"MSH-12.3 = {h.version}")
        if self.profile is not None:
            hit = next((p for p in h.profiles if self.profile.match(p)), None)
            if hit is None:
                return None
            why.append(f"MSH-21 = {hit}")
        for path, codes in self.codes:
            v = msg.get(path)
            if v not in codes:
                return None
            why.append(f"{path.text} = {v}, a code of this layout ({'/'.join(sorted(codes))})")
        return why


class MappingSet:
    """All the mappings loaded, and the rules that choose one per message."""

    def __init__(self, mappings: dict, rules: list, code_paths: tuple = ()):
        self.mappings: dict[str, Mapping] = mappings
        self.rules: list[Rule] = sorted(rules, key=Rule.rank)
        self._code_paths = code_paths   # the paths that code rules read, named in `why` when none matched
        self._cache: dict = {}

    def __getitem__(self, name: str) -> Mapping:
        return self.mappings[name]

    def __contains__(self, name: str) -> bool:
        return name in self.mappings

    def names(self) -> list[str]:
        return sorted(self.mappings)

    def select(self, message: Message | str) -> Selection:
        msg = Message.parse(message) if isinstance(message, str) else message
        # The choice depends only on a few header values and the codes that code rules read: keep it.
        f = msg._seg_fields("MSH", 0)
        key = (*f[3:5], *f[12:13], *f[21:22], *[msg.get(p) for p in self._code_paths])
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        found = self._select(msg)
        if len(self._cache) > 4096:        # a bound, against a sender that varies its header endlessly
            self._cache.clear()
        self._cache[key] = found
        return found

    def _select(self, msg: Message) -> Selection:
        h = Header.of(msg)
        for rule in self.rules:
            reasons = rule.matches(h, msg)
            if reasons is None:
                continue
            m = rule.mapping
            level = _LEVEL_NAME[SENDER if rule.site else rule.level]
            why = f"{m.name}: {level} {rule.origin}"
            if reasons:
                why += ": " + ", ".join(reasons)
            if rule.level in (VERSION, DEFAULT) and not rule.site:
                why += "; no more specific rule matched (" + self._context(h, msg) + ")"
            if m.variant:
                why += f"; policy {_policy_text(m.policy)} from {m.variant}"
            return Selection(m, why, rule.origin)
        why = f"no mapping matches ({h.describe()}) and no default mapping is configured"
        return Selection(Refusal(why), why, "")

    def _context(self, h: Header, msg: Message) -> str:
        parts = [f"MSH-21 = {' ~ '.join(h.profiles) or '(absent)'}"]
        for p in self._code_paths:
            parts.append(f"{p.text} = {msg.get(p) or '(empty)'}")
        return ", ".join(parts)


def _policy_text(policy: dict) -> str:
    return ", ".join(f"{k}={'~' if v is None else v}" for k, v in sorted(policy.items()))
