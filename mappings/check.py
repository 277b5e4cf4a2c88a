"""`pamgate mappings check [FILE...]`, library side: every problem of the files, one line each.

    check_files(paths) -> list[str]      # "file:line: key: problem", sorted by file and line; [] when all is well

Mapping files are checked with everything they extend (the shipped mappings are found by name), senders
files against the mappings they name, and the habilitation matrix against its own rules.
"""

from __future__ import annotations

from pathlib import Path

from . import habilitation
from .loader import SHIPPED_DIR, Errors, build_set, read_sources, yaml_files

__all__ = ["check_files"]


def check_files(paths=None) -> list[str]:
    paths = [SHIPPED_DIR] if not paths else [paths] if isinstance(paths, (str, Path)) else list(paths)
    errors = Errors()
    for p in paths:
        if not Path(p).exists():
            errors.items.append(_missing(p))
    files = [f for f in yaml_files(p for p in paths if Path(p).exists())]
    # a CSV named here is a habilitation table (rows profession, [role,] type_code, access)
    tables = [str(f) for f in files if f.suffix.lower() == ".csv"]
    files = [f for f in files if f.suffix.lower() != ".csv"]
    sources, senders_docs, habilitation_files = read_sources(files, errors)
    # the shipped mappings resolve `extends` and `mapping:` names that the files checked do not define
    named = {f.resolve() for f in files}
    shipped_errors = Errors()
    shipped, _, _ = read_sources([f for f in yaml_files([SHIPPED_DIR]) if f.resolve() not in named], shipped_errors)
    for name, src in shipped.items():
        sources.setdefault(name, src)
    build_set(sources, senders_docs, errors)
    for f in habilitation_files + tables:
        errors.items.extend(habilitation.validate(f))
    lines = {str(e): (e.file, e.line, str(e)) for e in errors.items}
    return [line for _, _, line in sorted(lines.values())]


def _missing(p):
    from .yamlio import MappingFileError
    return MappingFileError(str(p), 0, "(file)", "no such file or folder")
