"""Who may consult what (the habilitation matrix), as a pure function over the loaded matrix.

`judge(matrix, unknown, profession, role, document_type, category)` answers for one document type, for a
category, or, with neither, for the DMP as a whole (may this professional consult anything at all?). A cell
with no row is unknown: `unknown` (the `habilitation.unknown` policy) says what it decides, and an answer
that rests on such a cell carries the informative code `habilitation.unknown_cell`.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.domain import DENY, I_UNKNOWN_CELL, PERMIT, R_PROFESSION


class UnknownDocument(ValueError):
    """A document type or category the reference does not know: the API answers 400 with `code`."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


@dataclass(frozen=True)
class Judgement:
    reasons: tuple            # on a deny: profession.not_authorized, and habilitation.unknown_cell if it rests on a gap
    info: tuple               # on a permit: habilitation.unknown_cell if it rests on a gap
    answer: dict | None       # what the decision says of the matrix (the deciding row, the types allowed)


def document(reference, type_code: str | None, category: str | None) -> tuple[str | None, str | None]:
    """(type, category) of what the DPI asks about: the category of a type comes from the reference."""
    if type_code is not None:
        if type_code in reference.without_category:
            raise UnknownDocument("document.type_without_category",
                                  f"document.type: {type_code!r} is in none of the 11 DMP categories "
                                  f"(its class is {reference.without_category[type_code]})")
        if type_code not in reference.types:
            raise UnknownDocument("document.type_unknown",
                                  f"document.type: {type_code!r} is not a known DMP document type code")
        derived = reference.types[type_code]
        if category is not None and category != derived:
            raise UnknownDocument("document.category_mismatch",
                                  f"document.category: {type_code!r} is in category {derived}, not {category!r}")
        return type_code, derived
    if category is not None and category not in reference.categories:
        raise UnknownDocument("document.category_unknown",
                              f"document.category: {category!r} is not one of the 11 DMP categories "
                              f"({', '.join(reference.categories)})")
    return None, category


# Answers already worked out, per matrix and question: a loaded matrix never changes, the questions asked are
# few (professions × roles × documents), and the question for the DMP as a whole walks every document type.
# Kept with their matrix, so that another matrix at the same address is never answered from here.
_JUDGED: dict = {}
_JUDGED_MAX = 4096


def judge(matrix, unknown: str, profession: str | None, role: str | None, document_type: str | None = None,
          category: str | None = None) -> Judgement:
    """The matrix's answer (see the module's docstring); the same Judgement object for the same question, to
    be read, never changed."""
    key = (id(matrix), unknown, profession, role, document_type, category)
    known = _JUDGED.get(key)
    if known is not None and known[0] is matrix:
        return known[1]
    judgement = _judge(matrix, unknown, profession, role, document_type, category)
    if len(_JUDGED) >= _JUDGED_MAX:
        _JUDGED.clear()
    _JUDGED[key] = (matrix, judgement)
    return judgement


def _judge(matrix, unknown: str, profession: str | None, role: str | None, document_type: str | None,
           category: str | None) -> Judgement:
    if matrix is None:
        return Judgement((), (), None)
    ref = matrix.reference
    asked = {"profession": profession, "role": role, "type": document_type, "category": category,
             "unknown": unknown}
    if not profession or profession not in ref.professions:
        # administrative staff: no G15 health profession, no access whatever the table says
        return Judgement((R_PROFESSION,), (), {**asked, "access": DENY, "row": None,
                                               "why": "no G15 health profession"})
    if document_type is not None:
        cell = matrix.cell(profession, role, document_type)
        access = cell.access if cell else "unknown"
        gap = access == "unknown"
        permitted = (unknown if gap else access) == PERMIT
        answer = {**asked, "access": access, "row": cell.row if cell else None}
        return _judgement(permitted, gap, answer)
    allowed, gap, row = [], False, None
    for t in ref.types_in(category):
        cell = matrix.cell(profession, role, t)
        access = cell.access if cell else "unknown"
        if access == "unknown":
            gap = True
            access = unknown
        elif access == PERMIT and row is None:
            row = cell.row
        if access == PERMIT:
            allowed.append(t)
    answer = {**asked, "access": PERMIT if allowed else DENY, "row": row,
              "categories": sorted({ref.types[t] for t in allowed}), "types": allowed}
    return _judgement(bool(allowed), gap, answer)


def _judgement(permitted: bool, gap: bool, answer: dict) -> Judgement:
    info = (I_UNKNOWN_CELL,) if gap else ()
    if permitted:
        return Judgement((), info, answer)
    return Judgement((R_PROFESSION,) + info, (), answer)


def describe(answer: dict | None) -> str:
    """One line for `pamgate mappings explain`: what the matrix said, and which row decided."""
    if answer is None:
        return "no habilitation matrix"
    who = f"profession {answer['profession'] or '(none)'}" + (f", role {answer['role']}" if answer.get("role") else "")
    what = (f"type {answer['type']} (category {answer['category']})" if answer.get("type")
            else f"category {answer['category']}" if answer.get("category") else "the DMP as a whole")
    if answer.get("why"):
        return f"{answer['access']}: {who}: {answer['why']}"
    line = f"{answer['access']}: {who}, {what}"
    if answer.get("row"):
        line += f": row {answer['row']}"
    elif answer.get("type"):
        line += f": no row, an unknown cell (habilitation.unknown: {answer['unknown']})"
    if "types" in answer:
        line += f"; {len(answer['types'])} type(s) allowed in categories {', '.join(answer['categories']) or '-'}"
    return line
