"""Reading mapping and senders files: extends, deep merge, validation with `file:line: key: problem`, compiling.

Validation and compilation are one pass, so `mappings check` and the start of the engine can never
disagree: `check` collects every error, `load` raises the first.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from pathlib import Path as FsPath

from . import vocabulary
from .mapping import FactRule, Mapping, Requirement, When, parse_ts, TsError
from .message import PathError, compile_path
from .select import MappingSet, Patterns, Rule
from .yamlio import Mark, MappingFileError, MarkedDict, MarkedList, load_yaml

SHIPPED_DIR = FsPath(__file__).resolve().parent

TOP_KEYS = ("mapping", "abstract", "description", "extends", "match", "message_types", "events",
            "excluded_events", "segments", "forbidden", "policy", "lists", "prefer", "facts")
NOT_INHERITED = ("mapping", "abstract", "description", "extends", "match")
DROP_NULL_UNDER = ("facts", "segments", "forbidden", "events", "excluded_events", "lists", "prefer")
RULE_KEYS = ("version", "profile", "codes", "application", "facility", "default", "description")
FACT_KEYS = ("path", "type", "codes", "default", "required", "when", "only_with", "items",
             "delete_ignores_when", "description")
SEGMENT_KEYS = ("required", "once", "single_valued", "description")
REQUIRED_KEYS = ("events", "when")
SENDERS_TOP_KEYS = ("senders", "default", "description")
SENDER_KEYS = ("application", "facility", "version", "profile", "mapping", "policy", "description")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_EVENT = re.compile(r"^(?:A[0-9]{2}|Z[0-9A-Z]{2})$")
_SEGMENT = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")


class Errors:
    def __init__(self):
        self.items: list[MappingFileError] = []

    def add(self, mark: Mark, key: str, problem: str) -> None:
        self.items.append(MappingFileError(mark.file, mark.line, key, problem))

    def __bool__(self) -> bool:
        return bool(self.items)


def _flag(spec, name: str, key: str, errors) -> bool:
    """A true/false key of a mapping entry; anything else is an error naming it, read as false."""
    value = spec.get(name, False)
    if not isinstance(value, bool):
        errors.add(spec.mark_of(name), f"{key}.{name}", "expected true or false")
        return False
    return value


def _unknown(errors: Errors, d: MarkedDict, allowed, where: str) -> None:
    for k in d:
        if k not in allowed:
            hint = difflib.get_close_matches(k, allowed, n=1)
            errors.add(d.mark_of(k), _k(where, k),
                       "unknown key" + (f"; did you mean {hint[0]!r}?" if hint else
                                          f"; expected one of: {', '.join(allowed)}"))


def _k(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def _strs(value, errors: Errors, mark: Mark, key: str) -> list[str] | None:
    """A string or a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    errors.add(mark, key, "expected a text or a non-empty list of texts")
    return None


# --- files --------------------------------------------------------------------------------------------

def kind_of(doc) -> str | None:
    if isinstance(doc, dict):
        for key, kind in (("mapping", "mapping"), ("senders", "senders"), ("habilitation", "habilitation")):
            if key in doc:
                return kind
    return None


@dataclass
class Source:
    name: str
    file: str
    doc: MarkedDict


def yaml_files(paths) -> list[FsPath]:
    """Files named, and the `*.yaml`/`*.yml` of folders named (sorted), each once."""
    out, seen = [], set()
    for p in paths:
        p = FsPath(p)
        found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")]) if p.is_dir() else [p]
        for f in found:
            r = f.resolve()
            if r not in seen:
                seen.add(r)
                out.append(f)
    return out


def read_sources(files, errors: Errors):
    """Read files; returns (mapping sources by name, senders docs, habilitation files)."""
    mappings: dict[str, Source] = {}
    senders, habilitation = [], []
    for f in files:
        try:
            doc = load_yaml(f)
        except MappingFileError as e:
            errors.items.append(e)
            continue
        kind = kind_of(doc)
        if kind == "senders":
            senders.append((str(f), doc))
        elif kind == "habilitation":
            habilitation.append(str(f))
        elif kind == "mapping":
            name = doc["mapping"]
            if not isinstance(name, str) or not _NAME.match(name):
                errors.add(doc.mark_of("mapping"), "mapping", "a mapping name is letters, digits, '.', '-', '_'")
                continue
            if name in mappings:
                errors.add(doc.mark_of("mapping"), "mapping",
                           f"mapping {name!r} is already defined in {mappings[name].file}; give this one "
                           "another name and use `extends`")
                continue
            mappings[name] = Source(name, str(f), doc)
        else:
            mark = doc.mark if isinstance(doc, MarkedDict) else Mark(str(f), 1)
            errors.add(mark, "(file)", "not a mapping file: expected a top-level `mapping:` "
                                       "(or `senders:` for a senders file, `habilitation:` for the matrix)")
    return mappings, senders, habilitation


# --- extends and deep merge ----------------------------------------------------------------------------

def merge(base: MarkedDict, over: MarkedDict) -> MarkedDict:
    """Deep merge: mappings merge key by key; lists and texts of `over` replace those of `base`."""
    out = MarkedDict(mark=over.mark)
    for k, v in base.items():
        out[k] = v
        out.marks[k] = base.mark_of(k)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
        out.marks[k] = over.mark_of(k)
    return out


def resolve(name: str, sources: dict, errors: Errors, cache: dict, stack=()) -> tuple | None:
    """(merged document, extends chain) of one mapping, or None when its chain is broken."""
    if name in cache:
        return cache[name]
    doc = sources[name].doc
    result = None
    parent = doc.get("extends")
    if parent is None:
        result = (doc, (name,))
    elif not isinstance(parent, str):
        errors.add(doc.mark_of("extends"), "extends", "expected the name of one mapping")
    elif parent == name or parent in stack:
        cycle = " -> ".join((*stack, name, parent)[list((*stack, name)).index(parent):])
        errors.add(doc.mark_of("extends"), "extends", f"cycle of extends: {cycle}")
    elif parent not in sources:
        hint = difflib.get_close_matches(parent, list(sources), n=1)
        errors.add(doc.mark_of("extends"), "extends",
                   f"unknown mapping {parent!r}" + (f"; did you mean {hint[0]!r}?" if hint else
                                                    f"; known: {', '.join(sorted(sources))}"))
    else:
        up = resolve(parent, sources, errors, cache, (*stack, name))
        if up is not None:
            pdoc, chain = up
            base = MarkedDict(mark=pdoc.mark)
            for k, v in pdoc.items():
                if k not in NOT_INHERITED:
                    base[k] = v
                    base.marks[k] = pdoc.mark_of(k)
            result = (merge(base, doc), (name, *chain))
    cache[name] = result
    return result


def _drop_nulls(doc: MarkedDict) -> MarkedDict:
    """`facts: {x: ~}` in a child removes the inherited fact x (and so for segments, events…)."""
    for key in DROP_NULL_UNDER:
        d = doc.get(key)
        if isinstance(d, MarkedDict):
            for k in [k for k, v in d.items() if v is None]:
                del d[k]
    return doc


# --- compiling one mapping --------------------------------------------------------------------------------

def compile_mapping(doc: MarkedDict, chain: tuple, errors: Errors, *, policy_override: dict | None = None,
                    variant: str = "") -> Mapping | None:
    n_before = len(errors.items)
    _unknown(errors, doc, TOP_KEYS, "")
    name = doc.get("mapping")
    abstract = doc.get("abstract", False)
    if not isinstance(abstract, bool):
        errors.add(doc.mark_of("abstract"), "abstract", "expected true or false")
        abstract = False
    description = doc.get("description") or ""
    if not isinstance(description, str):
        errors.add(doc.mark_of("description"), "description", "expected a text")

    lists = _lists(doc, errors)
    policy = _policy(doc, errors, policy_override)
    groups = _events(doc, errors)
    accepted = frozenset().union(*groups.values()) if groups else frozenset()
    excluded = _excluded(doc, errors, accepted)
    message_types = frozenset(_strs(doc["message_types"], errors, doc.mark_of("message_types"), "message_types")
                              or ()) if "message_types" in doc else frozenset()
    if not abstract:
        if not message_types:
            errors.add(doc.mark, "message_types", "required: the message types accepted, e.g. [ADT]")
        if not accepted:
            errors.add(doc.mark, "events", "required: the accepted events, in named groups")
    segments = _segments(doc, errors, groups, lists)
    forbidden = _forbidden(doc, errors, lists)
    facts = _prefer(doc, errors, lists, _facts(doc, errors, groups, lists, policy))
    _match(doc, errors, abstract)   # validated here, compiled by build_rules
    if len(errors.items) > n_before:
        return None
    return Mapping(name=name, source=doc.mark.file, description=description.strip(),
                   message_types=message_types, accepted=accepted, groups=groups, excluded=excluded,
                   segments=segments, forbidden=forbidden, facts=facts, policy=policy, variant=variant,
                   chain=chain)


def _dict(doc: MarkedDict, key: str, errors: Errors, where: str = "") -> MarkedDict:
    v = doc.get(key)
    if v is None:
        return MarkedDict(mark=doc.mark)
    if not isinstance(v, MarkedDict):
        errors.add(doc.mark_of(key), _k(where, key), "expected a mapping of keys to values")
        return MarkedDict(mark=doc.mark)
    return v


def _lists(doc, errors) -> dict:
    out = {}
    d = _dict(doc, "lists", errors)
    for k, v in d.items():
        vals = _strs(v, errors, d.mark_of(k), f"lists.{k}")
        if vals is not None:
            out[k] = vals
    return out


def _policy(doc, errors, override) -> dict:
    d = _dict(doc, "policy", errors)
    out = {}
    for k, v in d.items():
        if v is not None and not isinstance(v, (str, bool)):
            errors.add(d.mark_of(k), f"policy.{k}", "expected a state name or ~")
            continue
        out[k] = v
    for k, v in (override or {}).items():
        out[k] = v
    return out


def _events(doc, errors) -> dict:
    d = _dict(doc, "events", errors)
    out = {}
    for group, v in d.items():
        codes = _strs(v, errors, d.mark_of(group), f"events.{group}")
        if codes is None:
            continue
        for c in codes:
            if not _EVENT.match(c):
                errors.add(d.mark_of(group), f"events.{group}",
                           f"unknown event code {c!r}: expected Ann (HL7 ADT trigger) or Zxx (local)")
        out[group] = frozenset(codes)
    return out


def _excluded(doc, errors, accepted) -> dict:
    d = _dict(doc, "excluded_events", errors)
    out = {}
    for ev, why in d.items():
        if not _EVENT.match(ev):
            errors.add(d.mark_of(ev), f"excluded_events.{ev}", "unknown event code: expected Ann or Zxx")
        if not isinstance(why, str):
            errors.add(d.mark_of(ev), f"excluded_events.{ev}", "expected the reason, as text")
            continue
        if ev in accepted:
            errors.add(d.mark_of(ev), f"excluded_events.{ev}", "this event is also accepted under `events`")
        out[ev] = why
    return out


def _path(text, errors, mark, key, lists):
    try:
        return compile_path(text, lists)
    except PathError as e:
        errors.add(mark, key, str(e))
        return None


def _when(spec, errors, mark, key, lists) -> tuple:
    if not isinstance(spec, MarkedDict) or not spec:
        errors.add(mark, key, "expected conditions, e.g. {PID-32: VALI} or {ZBE-4: [UPDATE, CANCEL]}")
        return ()
    out = []
    for ptext, values in spec.items():
        m = spec.mark_of(ptext)
        p = _path(ptext, errors, m, f"{key}.{ptext}", lists)
        if isinstance(values, str) and values.startswith("@"):
            if values[1:] not in lists:
                errors.add(m, f"{key}.{ptext}", f"unknown list {values!r}")
                continue
            vals = lists[values[1:]]
        else:
            vals = _strs(values, errors, m, f"{key}.{ptext}")
        if p is not None and vals is not None:
            out.append(When(p, frozenset(vals)))
    return tuple(out)


def _requirement(spec, errors, mark, key, groups, lists) -> Requirement | None:
    if spec is True:
        return Requirement()
    if spec is False or spec is None:
        return None
    if not isinstance(spec, MarkedDict):
        errors.add(mark, key, "expected true, false, or {events: GROUP or [EVENTS], when: {PATH: VALUES}}")
        return None
    _unknown(errors, spec, REQUIRED_KEYS, key)
    events = None
    if "events" in spec:
        names = _strs(spec["events"], errors, spec.mark_of("events"), f"{key}.events")
        if names is not None:
            events = set()
            for n in names:
                if n in groups:
                    events |= groups[n]
                elif _EVENT.match(n):
                    events.add(n)
                else:
                    errors.add(spec.mark_of("events"), f"{key}.events",
                               f"{n!r} is neither an event group ({', '.join(groups) or 'none'}) nor an event code")
            events = frozenset(events)
    when = _when(spec["when"], errors, spec.mark_of("when"), f"{key}.when", lists) if "when" in spec else ()
    return Requirement(events, when)


def _segments(doc, errors, groups, lists) -> tuple:
    d = _dict(doc, "segments", errors)
    out = []
    for seg, spec in d.items():
        key = f"segments.{seg}"
        if not _SEGMENT.match(seg):
            errors.add(d.mark_of(seg), key, "a segment name is three capitals or digits, e.g. PV1")
            continue
        if not isinstance(spec, MarkedDict):
            errors.add(d.mark_of(seg), key, "expected {required: ..., once: true|false, single_valued: true|false}")
            continue
        _unknown(errors, spec, SEGMENT_KEYS, key)
        req = _requirement(spec.get("required"), errors, spec.mark_of("required"), f"{key}.required", groups, lists)
        once = _flag(spec, "once", key, errors)
        single = _flag(spec, "single_valued", key, errors)
        if req is not None or once or single:
            out.append((seg, req, once, single))
    return tuple(out)


def _forbidden(doc, errors, lists) -> tuple:
    d = _dict(doc, "forbidden", errors)
    out = []
    for ptext, reason in d.items():
        p = _path(ptext, errors, d.mark_of(ptext), f"forbidden.{ptext}", lists)
        if not isinstance(reason, str):
            errors.add(d.mark_of(ptext), f"forbidden.{ptext}", "expected the reason, as text")
        elif p is not None:
            out.append((p, reason))
    return tuple(out)


def _facts(doc, errors, groups, lists, policy) -> tuple:
    d = _dict(doc, "facts", errors)
    rules: dict[str, FactRule] = {}
    marks = {}
    for name, spec in d.items():
        key = f"facts.{name}"
        mark = d.mark_of(name)
        marks[name] = mark
        if not vocabulary.known(name):
            hint = difflib.get_close_matches(name, list(vocabulary.VOCABULARY), n=1)
            errors.add(mark, key, "unknown fact" + (f"; did you mean {hint[0]!r}?" if hint else "")
                       + " (see the fact vocabulary in docs/internals.md; site-specific facts start with 'x.')")
            continue
        if isinstance(spec, str):          # shorthand: `name: PATH`
            spec = MarkedDict({"path": spec}, mark=mark)
            spec.marks["path"] = mark
        if not isinstance(spec, MarkedDict):
            errors.add(mark, key, "expected a path, or {path: ..., ...}")
            continue
        _unknown(errors, spec, FACT_KEYS, key)
        rule = _fact(name, spec, key, errors, groups, lists, policy)
        if rule is not None:
            rules[name] = rule
    for name, rule in rules.items():
        if rule.only_with is not None:
            target = rules.get(rule.only_with)
            m = d[name].mark_of("only_with") if isinstance(d[name], MarkedDict) else marks[name]
            if rule.only_with not in d:
                errors.add(m, f"facts.{name}.only_with", f"unknown fact {rule.only_with!r} in this mapping")
            elif target is not None and target.only_with is not None:
                errors.add(m, f"facts.{name}.only_with", f"{rule.only_with!r} itself depends on another fact")
    first = [r for r in rules.values() if r.only_with is None]
    return tuple(first + [r for r in rules.values() if r.only_with is not None])


def _prefer(doc, errors, lists, facts: tuple) -> tuple:
    """`prefer: {REPETITION: {COMPONENT[-SUB]: [values in order]}}`: where several repetitions pass a filter,
    every fact read from it takes the first by that order (PAM FR: the INS-NIR before the INS-NIA)."""
    d = _dict(doc, "prefer", errors)
    for ptext, spec in d.items():
        key, mark = f"prefer.{ptext}", d.mark_of(ptext)
        p = _path(ptext, errors, mark, key, lists)
        if p is None:
            continue
        if not p.field_filter or p.component is not None:
            errors.add(mark, key, "expected a repetition with a filter and no component, e.g. "
                                  "PID-3[5=INS,4-2=@ins_oids]: the preference chooses among the repetitions it "
                                  "lets through")
            continue
        if not isinstance(spec, MarkedDict) or not spec:
            errors.add(mark, key, "expected {COMPONENT[-SUB]: [values, first preferred]}, e.g. {4-2: '@ins_oids'}")
            continue
        order = []
        for loc, values in spec.items():
            m = _ITEM.match(str(loc))
            if not m or int(m[1]) < 1 or (m[2] and int(m[2]) < 1):
                errors.add(spec.mark_of(loc), f"{key}.{loc}", "expected COMPONENT or COMPONENT-SUBCOMPONENT, e.g. 4-2")
                continue
            if isinstance(values, str) and values.startswith("@"):
                if values[1:] not in lists:
                    errors.add(spec.mark_of(loc), f"{key}.{loc}", f"unknown list {values!r}")
                    continue
                values = lists[values[1:]]
            else:
                values = _strs(values, errors, spec.mark_of(loc), f"{key}.{loc}")
                if values is None:
                    continue
            order.append((int(m[1]), int(m[2] or 1), tuple(values)))
        if len(order) != len(spec):
            continue
        where = (p.segment, p.seg_rep, p.seg_filter, p.field, p.field_rep, p.field_filter)
        preferred = dataclasses.replace(p, prefer=tuple(order), rep_key=f"{p.rep_key}>{order!r}")
        matched = False
        new_facts = []
        for rule in facts:
            paths = tuple(dataclasses.replace(x, prefer=preferred.prefer, rep_key=preferred.rep_key)
                          if (x.segment, x.seg_rep, x.seg_filter, x.field, x.field_rep, x.field_filter) == where
                          else x for x in rule.paths)
            if paths != rule.paths:
                matched = True
                rule = dataclasses.replace(rule, paths=paths)
            new_facts.append(rule)
        if not matched:
            errors.add(mark, key, "no fact of this mapping reads that repetition (compare the filters of the "
                                  "facts' paths)")
        facts = tuple(new_facts)
    return facts


def _fact(name, spec, key, errors, groups, lists, policy) -> FactRule | None:
    n_before = len(errors.items)
    expected = vocabulary.fact_type(name)
    ftype = spec.get("type", expected or "str")
    if ftype not in vocabulary.TYPES:
        errors.add(spec.mark_of("type"), f"{key}.type", f"unknown type {ftype!r}; expected one of "
                                                         f"{', '.join(vocabulary.TYPES)}")
        return None
    if expected and ftype != expected:
        errors.add(spec.mark_of("type"), f"{key}.type", f"{name} is of type {expected}, not {ftype}")
    # paths
    raw_paths = spec.get("path")
    if raw_paths is None:
        errors.add(spec.mark, f"{key}.path", "required: the field that carries this fact, e.g. PID-3[5=PI]-1")
        return None
    if isinstance(raw_paths, list) and ftype != "list":
        errors.add(spec.mark_of("path"), f"{key}.path", "several paths are for list facts only")
        return None
    texts = raw_paths if isinstance(raw_paths, list) else [raw_paths]
    paths = tuple(p for p in (_path(t, errors, spec.mark_of("path"), f"{key}.path", lists) for t in texts) if p)
    # codes
    codes = None
    states = vocabulary.states(name)
    if "codes" in spec:
        codes = _codes(spec, key, errors, ftype, states, policy)
    elif states is not None:
        errors.add(spec.mark, f"{key}.codes", f"required: map each code to one of {', '.join(sorted(states))} "
                                             "(or ~ for no fact)")
    # default
    default = spec.get("default")
    if default is not None:
        if not isinstance(default, str):
            errors.add(spec.mark_of("default"), f"{key}.default", "expected the raw value, as text")
        elif codes is not None and default not in codes:
            errors.add(spec.mark_of("default"), f"{key}.default", f"code {default!r} is not in codes")
        elif codes is None and ftype == "ts":
            try:
                parse_ts(default)
            except TsError as e:
                errors.add(spec.mark_of("default"), f"{key}.default", str(e))
        elif codes is None and ftype == "bool" and default not in ("Y", "N"):
            errors.add(spec.mark_of("default"), f"{key}.default", "expected Y or N")
    required = _requirement(spec.get("required"), errors, spec.mark_of("required"), f"{key}.required",
                            groups, lists)
    when = _when(spec["when"], errors, spec.mark_of("when"), f"{key}.when", lists) if "when" in spec else ()
    only_with = spec.get("only_with")
    if only_with is not None and not isinstance(only_with, str):
        errors.add(spec.mark_of("only_with"), f"{key}.only_with", "expected a fact name")
        only_with = None
    if only_with == name:
        errors.add(spec.mark_of("only_with"), f"{key}.only_with", "a fact cannot depend on itself")
        only_with = None
    dig = _flag(spec, "delete_ignores_when", key, errors)
    items = None
    if "items" in spec:
        items = _items(spec, key, errors, ftype, name)
    elif name == "professionals":
        errors.add(spec.mark, f"{key}.items", "required: {id: '1', authority: '9-1', type: '13'}")
    if len(errors.items) > n_before:
        return None
    return FactRule(name, paths, ftype, codes, default, required, when, only_with, items, dig)


def _codes(spec, key, errors, ftype, states, policy) -> dict | None:
    table = spec["codes"]
    mark = spec.mark_of("codes")
    if ftype in ("ts", "list"):
        errors.add(mark, f"{key}.codes", f"a {ftype} fact has no code table")
        return None
    if not isinstance(table, MarkedDict) or not table:
        errors.add(mark, f"{key}.codes", "expected {CODE: state, ...}; ~ as a state means no fact")
        return None
    out = {}
    for code, target in table.items():
        m = table.mark_of(code)
        ck = f"{key}.codes.{code}"
        if not code or any(c in code for c in "|^~&\\"):
            errors.add(m, ck, "a code is the bare value of the field, without separators")
            continue
        if isinstance(target, str) and target.startswith("$"):
            pk = target[1:]
            if pk not in policy:
                errors.add(m, ck, f"unknown policy key {pk!r}" + (f"; known: {', '.join(policy)}" if policy else
                                                                  "; declare it under `policy:`"))
                continue
            target = policy[pk]
            where = f"policy {pk} = {target!r}"
        else:
            where = f"state {target!r}"
        if target is None:
            out[code] = None
        elif ftype == "bool":
            if not isinstance(target, bool):
                errors.add(m, ck, f"unknown {where}: this fact is Y/N, map codes to true, false or ~")
                continue
            out[code] = target
        elif not isinstance(target, str) or (states is not None and target not in states):
            allowed = ", ".join(sorted(states)) if states else "a text"
            errors.add(m, ck, f"unknown {where}; expected one of: {allowed}, or ~ (no fact)")
            continue
        else:
            out[code] = target
    return out


def _items(spec, key, errors, ftype, name) -> tuple | None:
    d = spec["items"]
    mark = spec.mark_of("items")
    if ftype != "list":
        errors.add(mark, f"{key}.items", "items are for list facts")
        return None
    if not isinstance(d, MarkedDict) or "id" not in d:
        errors.add(mark, f"{key}.items", "expected {id: COMPONENT, other: COMPONENT-SUB, ...}; `id` is required")
        return None
    if name == "professionals":
        missing = [k for k in vocabulary.PROFESSIONAL_KEYS if k not in d]
        extra = [k for k in d if k not in vocabulary.PROFESSIONAL_KEYS]
        if missing or extra:
            errors.add(mark, f"{key}.items", f"professionals have exactly {', '.join(vocabulary.PROFESSIONAL_KEYS)}")
            return None
    out = []
    for k in ["id", *[k for k in d if k != "id"]]:     # id first: an item without id is skipped
        m = _ITEM.match(str(d[k]))
        if not m or int(m[1]) < 1:
            errors.add(d.mark_of(k), f"{key}.items.{k}", "expected COMPONENT or COMPONENT-SUBCOMPONENT, e.g. '9-1'")
            return None
        out.append((k, int(m[1]), int(m[2]) if m[2] else None))
    return tuple(out)


def _match(doc, errors, abstract) -> list:
    """Validate `match:`; returns [(rule dict, mark)]."""
    spec = doc.get("match")
    if spec is None:
        return []
    if abstract:
        errors.add(doc.mark_of("match"), "match", "an abstract mapping is never chosen: it has no match rules")
        return []
    if not isinstance(spec, MarkedList):
        errors.add(doc.mark_of("match"), "match", "expected a list of rules, e.g. - {version: '2.11'}")
        return []
    out = []
    for i, rule in enumerate(spec):
        key = f"match[{i}]"
        mark = spec.mark_of(i)
        if not isinstance(rule, MarkedDict) or not rule:
            errors.add(mark, key, "expected {version: ..., profile: ..., codes: {PATH: [CODES]}} or {default: true}")
            continue
        _unknown(errors, rule, RULE_KEYS, key)
        conds = [k for k in rule if k not in ("description", "default")]
        if "default" in rule:
            if rule["default"] is not True or conds:
                errors.add(rule.mark_of("default"), f"{key}.default", "`default: true` stands alone in its rule")
                continue
        elif not conds:
            errors.add(mark, key, "a rule needs at least one condition")
            continue
        for k in ("version", "profile", "application", "facility"):
            if k in rule:
                _strs(rule[k], errors, rule.mark_of(k), f"{key}.{k}")
        if "codes" in rule:
            _when(rule["codes"], errors, rule.mark_of("codes"), f"{key}.codes", {})
        out.append((rule, mark))
    return out


# --- the set: all mappings, sender rules ---------------------------------------------------------------

def _rule(mapping, rule: MarkedDict, mark: Mark, site: bool, order: int) -> Rule:
    def pats(k):
        v = rule.get(k)
        return Patterns([v] if isinstance(v, str) else v) if v is not None else None
    codes = tuple((w.path, w.values) for w in _when(rule["codes"], Errors(), mark, "codes", {})) \
        if "codes" in rule else ()
    return Rule(mapping, str(mark), site, order, pats("application"), pats("facility"), pats("version"),
                pats("profile"), codes, bool(rule.get("default")))


def normalise_senders(senders, errors: Errors) -> list[tuple[str, MarkedDict]]:
    """A senders file path, a document, a list of rules (as in the engine's config) → [(file, document)]."""
    if senders is None:
        return []
    if isinstance(senders, (str, FsPath)):
        try:
            return [(str(senders), load_yaml(senders))]
        except MappingFileError as e:
            errors.items.append(e)
            return []
    if isinstance(senders, MarkedList):
        # rules read from the configuration file: they keep its file and lines
        doc = MarkedDict({"senders": senders}, mark=senders.mark)
        doc.marks["senders"] = senders.mark
        return [(senders.mark.file, doc)]
    if isinstance(senders, (list, tuple)):
        senders = {"senders": list(senders)}
    if isinstance(senders, dict):
        return [(CONFIG, _marked(senders))]
    errors.add(Mark(CONFIG, 0), "senders", "expected a file path, a list of rules or {senders: [...]}")
    return []


CONFIG = "<config:mappings.senders>"


def _marked(obj):
    """Plain values from the configuration (or pydantic models) → marked ones; the line is unknown (0)."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(exclude_none=True)
    if isinstance(obj, dict):
        out = MarkedDict(mark=Mark(CONFIG, 0))
        for k, v in obj.items():
            out[str(k)] = _marked(v)
        return out
    if isinstance(obj, (list, tuple)):
        return MarkedList([_marked(v) for v in obj], mark=Mark(CONFIG, 0))
    return obj


def build_set(sources: dict, senders_docs: list, errors: Errors) -> MappingSet | None:
    cache: dict = {}
    compiled: dict[str, Mapping] = {}
    merged: dict[str, MarkedDict] = {}
    rules: list[Rule] = []
    order = 0
    for name in sources:
        r = resolve(name, sources, errors, cache)
        if r is None:
            continue
        doc, chain = r
        doc = _drop_nulls(doc)
        merged[name] = doc
        m = compile_mapping(doc, chain, errors)
        if m is None:
            continue
        compiled[name] = m
        if not doc.get("abstract"):
            for rule, mark in _match(doc, Errors(), False):
                rules.append(_rule(m, rule, mark, False, order))
                order += 1
    defaults = [r for r in rules if r.default]
    if len(defaults) > 1:
        for r in defaults[1:]:
            f, _, line = r.origin.rpartition(":")
            errors.add(Mark(f, int(line)), "match.default",
                       f"a second default mapping ({r.mapping.name}); {defaults[0].mapping.name} "
                       f"is already the default ({defaults[0].origin})")
    for file, doc in senders_docs:
        rules.extend(_sender_rules(file, doc, compiled, merged, sources, errors, rules, order))
        order += 1000
    if errors:
        return None
    code_paths = []
    for r in rules:
        for p, _ in r.codes:
            if p.text not in {c.text for c in code_paths}:
                code_paths.append(p)
    return MappingSet(compiled, rules, tuple(code_paths))


def _sender_rules(file, doc, compiled, merged, sources, errors, rules, order) -> list[Rule]:
    if not isinstance(doc, MarkedDict):
        errors.add(Mark(file, 1), "senders", "expected {senders: [...]}")
        return []
    _unknown(errors, doc, SENDERS_TOP_KEYS, "")
    out = []
    if "default" in doc:
        target = doc["default"]
        mark = doc.mark_of("default")
        # the site's default replaces the shipped one; ~ means: refuse what no rule matches
        rules[:] = [r for r in rules if not r.default]
        if target is not None:
            m = _mapping_ref(target, compiled, sources, errors, mark, "default")
            if m is not None:
                rules.append(Rule(m, str(mark), False, order, default=True))
    entries = doc.get("senders") or []
    if not isinstance(entries, MarkedList):
        errors.add(doc.mark_of("senders"), "senders", "expected a list of rules")
        return out
    for i, entry in enumerate(entries):
        key = f"senders[{i}]"
        mark = entries.mark_of(i)
        if not isinstance(entry, MarkedDict):
            errors.add(mark, key, "expected {application: ..., facility: ..., mapping: ...}")
            continue
        _unknown(errors, entry, SENDER_KEYS, key)
        if not any(k in entry for k in ("application", "facility", "version", "profile")):
            errors.add(mark, key, "a sender rule needs application, facility, version or profile")
            continue
        for k in ("application", "facility", "version", "profile"):
            if k in entry:
                _strs(entry[k], errors, entry.mark_of(k), f"{key}.{k}")
        if "mapping" not in entry:
            errors.add(mark, f"{key}.mapping", "required: the mapping this sender uses")
            continue
        m = _mapping_ref(entry["mapping"], compiled, sources, errors, entry.mark_of("mapping"), f"{key}.mapping")
        if m is None:
            continue
        if "policy" in entry:
            m = _variant(entry, key, m, merged, errors, str(mark))
            if m is None:
                continue
        out.append(_rule(m, entry, mark, True, order + i))
    return out


def _mapping_ref(name, compiled, sources, errors, mark, key) -> Mapping | None:
    if not isinstance(name, str) or name not in sources:
        hint = difflib.get_close_matches(str(name), list(sources), n=1)
        errors.add(mark, key, f"unknown mapping {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else
                                                             f"; known: {', '.join(sorted(sources))}"))
        return None
    m = compiled.get(name)
    if m is None:
        return None                          # its own errors are already reported
    if name in sources and sources[name].doc.get("abstract"):
        errors.add(mark, key, f"mapping {name!r} is abstract (a base to extend), it cannot be chosen")
        return None
    return m


def _variant(entry, key, m: Mapping, merged, errors, origin) -> Mapping | None:
    pol = entry["policy"]
    pmark = entry.mark_of("policy")
    if not isinstance(pol, MarkedDict):
        errors.add(pmark, f"{key}.policy", "expected {KEY: value}")
        return None
    n_before = len(errors.items)
    for k in pol:
        if k not in m.policy:
            errors.add(pol.mark_of(k), f"{key}.policy.{k}",
                       f"unknown policy key for mapping {m.name}" + (f"; known: {', '.join(m.policy)}" if m.policy
                                                                     else " (it declares none)"))
    if len(errors.items) > n_before:
        return None
    sub = Errors()
    v = compile_mapping(merged[m.name], m.chain, sub, policy_override=dict(pol), variant=origin)
    for e in sub.items:      # a bad value shows up in the code table; name the sender line instead
        errors.add(pmark, f"{key}.policy", e.problem)
    return v


def load(paths=None, senders=None, *, shipped: bool = True) -> MappingSet:
    """Load mappings (files or folders; the shipped ones first unless `shipped=False`) and sender rules.

    `senders` is a senders file path, or what the configuration holds: a list of
    `{application, facility, version, profile, mapping, policy}` or `{"senders": [...], "default": ...}`.
    Raises MappingFileError (`file:line: key: problem`; `.errors` holds them all) on any problem.
    """
    if paths is None:
        paths = []
    elif isinstance(paths, (str, FsPath)):
        paths = [paths]
    folders = [SHIPPED_DIR] if shipped else []
    files = yaml_files([*folders, *paths])
    errors = Errors()
    sources, sender_files, habilitation_files = read_sources(files, errors)
    # senders and habilitation files found in folders are not mappings: only those named explicitly count
    explicit = {FsPath(p).resolve() for p in paths if not FsPath(p).is_dir()}
    senders_docs = [(f, d) for f, d in sender_files if FsPath(f).resolve() in explicit]
    for f in habilitation_files:
        if FsPath(f).resolve() in explicit:
            errors.add(Mark(f, 1), "habilitation", "the habilitation matrix is not a mapping; configure it "
                                                  "under `habilitation:`")
    senders_docs += normalise_senders(senders, errors)
    if errors:
        raise MappingFileError.first_of(errors.items)
    result = build_set(sources, senders_docs, errors)
    if errors or result is None:
        raise MappingFileError.first_of(errors.items)
    return result
