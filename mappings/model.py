"""The plain values that `mappings` hands to the pipeline (see docs/internals.md, "mappings/ → the facts")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    from .mapping import Mapping

#: HL7's explicit null `""`: "delete this value". An absent fact means "no change".
DELETE = '""'

# HL7 table 0357 (message error condition codes) that mappings produce.
SEGMENT_SEQUENCE_ERROR = 100     # a required segment is missing
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102            # bad TS, a forbidden field carrying a value
TABLE_VALUE_NOT_FOUND = 103      # a code the mapping does not know, Y/N expected
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
UNSUPPORTED_VERSION_ID = 203


@dataclass(frozen=True)
class Problem:
    """Why a message is refused. `field` is None when a whole segment is missing (ERR-2 names the segment)."""

    segment: str
    sequence: int          # which occurrence of the segment, from 1
    field: int | None
    component: int | None
    code: int              # HL7 table 0357
    text: str

    def __str__(self) -> str:
        where = self.segment if self.field is None else f"{self.segment}-{self.field}"
        if self.component is not None and self.field is not None:
            where += f"-{self.component}"
        return f"{where}: {self.text} ({self.code})"


class Fact(NamedTuple):
    """One extracted fact, for `mappings explain` and the audit: where it came from and what it became.

    A NamedTuple rather than a frozen dataclass: one is built per fact per message, on the hot path."""

    name: str
    path: str
    raw: Any               # the text as it stands in the message (escaped), or a list for list facts
    value: Any


@dataclass
class Extraction:
    facts: dict[str, Any] = field(default_factory=dict)
    trace: list[Fact] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rejection: Problem | None = None
    #: facts the mapping read but that produce nothing (`NA`, a `when` not met), shown by `explain`
    ignored: list[Fact] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rejection is None and not self.problems


@dataclass(frozen=True)
class Selection:
    """The mapping chosen for one message, and a sentence saying why (the engine logs it)."""

    mapping: "Mapping"
    why: str
    rule: str = ""         # file:line of the rule that won, "" for the built-in refusal
