"""`pamgate mappings explain MESSAGE_FILE`, library side: what the mapping makes of one message.

    describe(selection, extraction) -> str     # for a terminal
    as_dict(selection, extraction) -> dict     # the same, structured (JSON-ready but for datetimes)
"""

from __future__ import annotations

from datetime import datetime

from .model import Extraction, Selection

__all__ = ["describe", "as_dict"]


def show(value) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return repr(value) if isinstance(value, str) else str(value)


def outcome(extraction: Extraction) -> str:
    if extraction.rejection is not None:
        return "AR (rejected whole)"
    if extraction.problems:
        return "AE (refused)"
    return "AA (facts applied)"


def as_dict(selection: Selection, extraction: Extraction) -> dict:
    m = selection.mapping
    return {
        "mapping": m.name,
        "file": m.source,
        "extends": list(m.chain[1:]),
        "policy": dict(m.policy),
        "why": selection.why,
        "outcome": outcome(extraction),
        "facts": [{"name": f.name, "path": f.path, "raw": f.raw, "value": f.value} for f in extraction.trace],
        "ignored": [{"name": f.name, "path": f.path, "raw": f.raw, "reason": f.value} for f in extraction.ignored],
        "problems": [p.__dict__ for p in extraction.problems],
        "rejection": extraction.rejection.__dict__ if extraction.rejection else None,
    }


def describe(selection: Selection, extraction: Extraction) -> str:
    m = selection.mapping
    out = [f"mapping   {m.name}" + (f"  (extends {' -> '.join(m.chain[1:])})" if m.chain[1:] else ""),
           f"file      {m.source}" if m.source else "file      -",
           f"why       {selection.why}"]
    if m.policy:
        out.append("policy    " + ", ".join(f"{k}={'~' if v is None else v}" for k, v in m.policy.items()))
    out.append(f"outcome   {outcome(extraction)}")
    if extraction.rejection is not None:
        out.append(f"rejection {extraction.rejection}")
    if extraction.problems:
        out.append("problems")
        out += [f"  {p}" for p in extraction.problems]
    if extraction.trace:
        w_name = max(len(f.name) for f in extraction.trace)
        w_path = max(len(f.path) for f in extraction.trace)
        out.append("facts")
        for f in extraction.trace:
            raw = f.raw if not isinstance(f.raw, list) else "~".join(f.raw)
            out.append(f"  {f.name:<{w_name}}  {f.path:<{w_path}}  {raw!r} -> {show(f.value)}")
    if extraction.ignored:
        out.append("read, no fact")
        for f in extraction.ignored:
            out.append(f"  {f.name}  {f.path}  {f.raw!r}: {f.value}")
    return "\n".join(out)
