"""The habilitation matrix (arrêté of 26 Oct 2023): profession code (table G15) → categories it may consult.

    mappings.habilitation.load(path) -> dict[str, frozenset[str]]

Administrative staff have no code here, hence no right: a profession absent from the matrix may consult
nothing. The shipped matrix is a first approximation; see the comment at the top of habilitation.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path

from .yamlio import Mark, MappingFileError, MarkedDict, MarkedList, load_yaml

__all__ = ["load", "validate", "SHIPPED"]

SHIPPED = Path(__file__).resolve().parent / "habilitation.yaml"

_TOP = ("source", "categories", "professions")
_PROFESSION = ("label", "consult")
_CODE = re.compile(r"^\d{2}$")
_CATEGORY = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _read(path) -> tuple[dict, list[MappingFileError]]:
    errors: list[MappingFileError] = []

    def add(mark: Mark, key: str, problem: str):
        errors.append(MappingFileError(mark.file, mark.line, key, problem))

    try:
        doc = load_yaml(path)
    except MappingFileError as e:
        return {}, [e]
    if not isinstance(doc, MarkedDict) or not isinstance(doc.get("habilitation"), MarkedDict):
        add(getattr(doc, "mark", Mark(str(path), 1)), "habilitation", "expected a top-level `habilitation:` mapping")
        return {}, errors
    for k in doc:
        if k != "habilitation":
            add(doc.mark_of(k), k, "unknown key; expected only `habilitation`")
    h = doc["habilitation"]
    for k in h:
        if k not in _TOP:
            add(h.mark_of(k), f"habilitation.{k}", f"unknown key; expected one of: {', '.join(_TOP)}")
    cats = h.get("categories")
    if not isinstance(cats, MarkedDict) or not cats:
        add(h.mark_of("categories"), "habilitation.categories", "required: {CODE: label, ...}")
        cats = MarkedDict()
    for c, label in cats.items():
        if not _CATEGORY.match(c):
            add(cats.mark_of(c), f"habilitation.categories.{c}", "a category code is capitals, digits and _")
        if not isinstance(label, str) or not label:
            add(cats.mark_of(c), f"habilitation.categories.{c}", "expected the category's label")
    profs = h.get("professions")
    if not isinstance(profs, MarkedDict) or not profs:
        add(h.mark_of("professions"), "habilitation.professions", "required: {G15 code: {label, consult}}")
        return {}, errors
    matrix: dict[str, frozenset[str]] = {}
    for code, spec in profs.items():
        key = f"habilitation.professions.{code}"
        m = profs.mark_of(code)
        if not _CODE.match(code):
            add(m, key, "a profession code is the two digits of table G15, quoted: \"10\"")
        if not isinstance(spec, MarkedDict):
            add(m, key, "expected {label: ..., consult: all | none | [CATEGORY, ...]}")
            continue
        for k in spec:
            if k not in _PROFESSION:
                add(spec.mark_of(k), f"{key}.{k}", f"unknown key; expected one of: {', '.join(_PROFESSION)}")
        if not isinstance(spec.get("label"), str):
            add(spec.mark_of("label"), f"{key}.label", "required: the profession's name")
        consult = spec.get("consult")
        if consult == "all":
            matrix[code] = frozenset(cats)
        elif consult == "none":
            matrix[code] = frozenset()
        elif isinstance(consult, MarkedList) and all(isinstance(c, str) for c in consult):
            unknown = [c for c in consult if c not in cats]
            if unknown:
                add(spec.mark_of("consult"), f"{key}.consult", f"unknown category {', '.join(unknown)}; "
                                                                f"known: {', '.join(cats)}")
            matrix[code] = frozenset(consult)
        else:
            add(spec.mark_of("consult") if "consult" in spec else m, f"{key}.consult",
                "expected all, none, or a list of category codes")
    return matrix, errors


def validate(path) -> list[MappingFileError]:
    return _read(path)[1]


def load(path=SHIPPED) -> dict[str, frozenset[str]]:
    """Profession code → the categories it may consult. Raises MappingFileError on the first problem."""
    matrix, errors = _read(path)
    if errors:
        raise MappingFileError.first_of(errors)
    return matrix
