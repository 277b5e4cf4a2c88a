"""The expectations file: what each message must get, and what must hold after it (docs/conformance.md).

Loaded once, validated with pydantic, and every problem reported as one line naming the file, the line
and the key. Then each step's selector is resolved against the messages of the replay.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import isodate
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine import api as api_body
from engine.config import period
from engine.domain import add_period
from engine.errors import CommandError

ACK_CODES = ("AA", "AE", "AR")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatientRef(api_body.PatientRef):
    """The API's PATIENT, with the same checks: one place says what a patient reference is."""

    def api(self) -> dict:
        return self.model_dump(exclude_none=True)


class UserRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)
    profession: str | None = None
    specialty: str | None = None
    role: str | None = None


def _text(v):
    # YAML reads 10 or 2025-01-06 as numbers and dates; the codes and ids here are text
    return None if v is None else str(v)


class Moment(str):
    """`message` (default), `now`, `message + P7M` / `message - PT1H`, or an ISO 8601 date-time."""

    PATTERN = re.compile(r"^\s*(message|now)\s*(?:([+-])\s*(P\S+))?\s*$")

    @classmethod
    def check(cls, v) -> str:
        if isinstance(v, datetime):
            return v.isoformat()
        v = str(v)
        m = cls.PATTERN.match(v)
        if m:
            if m.group(3):
                try:
                    period(m.group(3))
                except (isodate.ISO8601Error, ValueError):
                    raise ValueError(f"{m.group(3)!r} is not an ISO 8601 duration") from None
            return v
        try:
            datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("expected message, now, message + P…, or an ISO 8601 date-time") from None
        return v


def resolve_moment(text: str | None, message_time: datetime | None, now: datetime, tz: ZoneInfo) -> datetime:
    """The instant a decision is asked at. Naive date-times are in the configured time zone."""
    text = text or "message"
    m = Moment.PATTERN.match(text)
    if not m:
        t = datetime.fromisoformat(text)
        return (t if t.tzinfo else t.replace(tzinfo=tz)).astimezone(timezone.utc)
    base = now if m.group(1) == "now" else (message_time or now)
    if m.group(3):
        # the product's own duration arithmetic: months and days on the configured zone's clock
        d = period(m.group(3))
        base = add_period(base, d if m.group(2) == "+" else -d, tz.key)
    return base


class DecisionCheck(Strict):
    """A question put to the gate after the message, and the answer it must give."""
    step: str | None = None                  # a label for reports: "1", "CONF.06 step 4"
    title: str | None = None
    action: Literal["consult", "feed"]
    patient: PatientRef | None = None       # default: the message's patient (PID-3, type PI)
    visit: str | None = None
    user: UserRef | None = None             # default: the file's `user`
    mode: Literal["normal", "bris_de_glace", "centre_15"] = "normal"
    reason: str | None = None
    document: api_body.DocumentRef | None = None   # {type: …} or {category: …}, as the API takes it
    at: str | None = None                   # default: the file's `at`, itself `message` by default
    # expected
    decision: Literal["permit", "deny"]
    reasons: list[str] | None = None        # exactly these, in any order; absent: not checked
    triggers: list[str] | None = None       # the event types it triggers, in any order

    _t = field_validator("step", "visit", mode="before")(classmethod(lambda cls, v: _text(v)))
    _at = field_validator("at", mode="before")(classmethod(lambda cls, v: None if v is None else Moment.check(v)))


class EventCheck(Strict):
    """An event that the message (and the step's decisions) must have put in the outbox."""
    step: str | None = None
    title: str | None = None
    type: str
    patient: PatientRef | None = None
    data: dict | None = None                # every key given must match; nested dicts match the same way
    count: int | None = Field(None, ge=0)   # exactly this many; absent: at least one

    _t = field_validator("step", mode="before")(classmethod(lambda cls, v: _text(v)))


class Step(Strict):
    message: str | int | None = None        # file name (optionally name#n) or the 1-based position
    msh10: str | None = None
    title: str | None = None
    ack: Literal["AA", "AE", "AR"] | None = None
    err_contains: list[str] = Field(default_factory=list)
    decisions: list[DecisionCheck] = Field(default_factory=list)
    events: list[EventCheck] = Field(default_factory=list)

    _m = field_validator("msh10", mode="before")(classmethod(lambda cls, v: _text(v)))

    @field_validator("err_contains", mode="before")
    @classmethod
    def _list(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _selector(self):
        if (self.message is None) == (self.msh10 is None):
            raise ValueError("name the message with exactly one of message (file name or position) or msh10")
        return self


class Expectations(Strict):
    name: str | None = None
    description: str | None = None
    ack: Literal["AA", "AE", "AR"] = "AA"    # what every message must get unless its step says otherwise
    isolation: Literal["none", "file"] = "none"   # file: each file is replayed alone, into a fresh store
    user: UserRef = Field(default_factory=lambda: UserRef(id="replay", profession="10"))
    at: str = "message"
    steps: list[Step] = Field(default_factory=list)

    _at = field_validator("at", mode="before")(classmethod(lambda cls, v: Moment.check(v)))


DEFAULT = Expectations()


def load(path: str | None) -> tuple[Expectations, str | None]:
    """The expectations and their file's name; without a file, every message must be AA."""
    if path is None:
        return DEFAULT, None
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise CommandError(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{path}: not UTF-8 text") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise CommandError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CommandError(f"{path}:1: the expectations must be a mapping (name, ack, steps, …)")
    try:
        return Expectations.model_validate(data), str(path)
    except ValidationError as e:
        errors = e.errors()
        # a misspelt key also makes the real one "missing": the misspelling is what to fix
        err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
        loc = tuple(err["loc"])
        key = _key_text(loc)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise CommandError(f"{path}:{_line_of(node, loc)}: {key}: {msg}") from None


def _key_text(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        elif "[" in str(part) or "-" in str(part) and not str(part).isidentifier():
            continue      # pydantic's union branch names ("str", "int", "function-after[...]")
        else:
            out += ("." if out else "") + str(part)
    return out or "(top)"


def _line_of(node, loc) -> int:
    """The line of the deepest YAML node that `loc` reaches: where the user has to look."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
            if nxt is None:
                key = next((k for k, v in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


# --- which message each step names ---------------------------------------------------------------

@dataclass(frozen=True)
class Planned:
    """The expectations of one message: the ACK it must get, and the steps that follow it."""
    ack: str
    steps: tuple


def plan(expectations: Expectations, messages, source: str | None) -> dict[int, Planned]:
    """Position → what is expected of that message. A selector that names no message is an error."""
    where = source or "expectations"
    chosen: dict[int, list[Step]] = {}
    for n, step in enumerate(expectations.steps, 1):
        position = _select(step, messages, f"{where}: steps[{n}]")
        chosen.setdefault(position, []).append(step)
    out = {}
    for m in messages:
        steps = tuple(chosen.get(m.position, ()))
        acks = {s.ack for s in steps if s.ack}
        if len(acks) > 1:
            raise CommandError(f"{where}: message {m.label} is given two ACK codes: {' and '.join(sorted(acks))}")
        out[m.position] = Planned(acks.pop() if acks else expectations.ack, steps)
    return out


def _select(step: Step, messages, where: str) -> int:
    if step.msh10 is not None:
        found = [m for m in messages if m.control_id == step.msh10]
        if not found:
            raise CommandError(f"{where}.msh10: no message with MSH-10 {step.msh10!r} in this replay")
        if len(found) > 1:
            raise CommandError(f"{where}.msh10: {len(found)} messages carry MSH-10 {step.msh10!r} "
                               f"({', '.join(m.label for m in found)}): name one by its file instead")
        return found[0].position
    sel = step.message
    if isinstance(sel, int):
        if not 1 <= sel <= len(messages):
            raise CommandError(f"{where}.message: position {sel} is outside 1..{len(messages)}")
        return sel
    name, _, index = str(sel).partition("#")
    if index and not index.isdigit():
        raise CommandError(f"{where}.message: {sel!r}: after # comes the message's number in its file")
    in_file = [m for m in messages if _names(m, name)]
    files = sorted({m.name for m in in_file})
    if not in_file:
        raise CommandError(f"{where}.message: no file {name!r} in this replay")
    if len(files) > 1:
        raise CommandError(f"{where}.message: {name!r} names several files ({', '.join(files)}): give more of the path")
    if index:
        hit = [m for m in in_file if m.index == int(index)]
        if not hit:
            raise CommandError(f"{where}.message: {files[0]} holds {len(in_file)} message(s), not #{index}")
        return hit[0].position
    if len(in_file) > 1:
        raise CommandError(f"{where}.message: {files[0]} holds {len(in_file)} messages: say which, "
                           f"e.g. {files[0]}#{len(in_file)}")
    return in_file[0].position


def _names(message, name: str) -> bool:
    return message.name == name or message.path.name == name or message.path.as_posix().endswith("/" + name)
