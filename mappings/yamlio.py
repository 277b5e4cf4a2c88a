"""Reading YAML so that every key remembers its file and line, and nothing is guessed.

Why a loader of our own:
- `mappings check` and `MappingFileError` must name `file:line: key`; PyYAML's node marks give the line,
  this loader keeps it next to each key.
- YAML 1.1 turns `2.10` into the float 2.1, `2024-03-06` into a date, `NO` into False. Versions,
  codes and dates are strings to us, so only `true`/`false`, `~`/`null` and empty values are resolved;
  every other plain scalar stays a string.
- PyYAML silently keeps the last of two identical keys; here that is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

__all__ = ["Mark", "MarkedDict", "MarkedList", "MappingFileError", "load_yaml", "load_yaml_text"]


@dataclass(frozen=True)
class Mark:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class MappingFileError(ValueError):
    """A mapping, senders or habilitation file that cannot be used. `str()` is `file:line: key: problem`."""

    def __init__(self, file: str, line: int, key: str, problem: str, errors: list["MappingFileError"] | None = None):
        self.file, self.line, self.key, self.problem = file, line, key, problem
        self.errors = errors or [self]
        super().__init__(f"{file}:{line}: {key}: {problem}")

    @classmethod
    def first_of(cls, errors: list["MappingFileError"]) -> "MappingFileError":
        e = errors[0]
        return cls(e.file, e.line, e.key, e.problem, errors)


class MarkedDict(dict):
    """A dict that knows where it, and each of its keys, came from."""

    __slots__ = ("mark", "marks")

    def __init__(self, *args, mark: Mark | None = None, **kw):
        super().__init__(*args, **kw)
        self.mark = mark or Mark("<memory>", 0)
        self.marks: dict = {}

    def mark_of(self, key) -> Mark:
        return self.marks.get(key, self.mark)


class MarkedList(list):
    __slots__ = ("mark", "marks")

    def __init__(self, *args, mark: Mark | None = None):
        super().__init__(*args)
        self.mark = mark or Mark("<memory>", 0)
        self.marks: list[Mark] = []

    def mark_of(self, i: int) -> Mark:
        return self.marks[i] if i < len(self.marks) else self.mark


_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")


def _make_loader(file: str):
    class Loader(yaml.SafeLoader):
        pass

    # Only null, true/false and the merge key `<<` are implicit; the rest stays text.
    Loader.yaml_implicit_resolvers = {}
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
    Loader.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
    Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])

    def mark(node) -> Mark:
        return Mark(file, node.start_mark.line + 1)

    def construct_mapping(loader, node):
        loader.flatten_mapping(node)
        out = MarkedDict(mark=mark(node))
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, bool)) and key is not None:
                raise MappingFileError(file, key_node.start_mark.line + 1, str(key), "a key must be plain text")
            key = "" if key is None else str(key) if not isinstance(key, bool) else str(key).lower()
            if key in out:
                raise MappingFileError(file, key_node.start_mark.line + 1, key,
                                       f"duplicate key (first at line {out.marks[key].line})")
            out[key] = loader.construct_object(value_node, deep=True)
            out.marks[key] = mark(key_node)
        return out

    def construct_sequence(loader, node):
        out = MarkedList(mark=mark(node))
        for child in node.value:
            out.append(loader.construct_object(child, deep=True))
            out.marks.append(mark(child))
        return out

    Loader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    Loader.add_constructor("tag:yaml.org,2002:seq", construct_sequence)
    return Loader


def load_yaml_text(text: str, file: str = "<memory>"):
    try:
        return yaml.load(text, Loader=_make_loader(file))  # noqa: S506 — our SafeLoader subclass
    except MappingFileError:
        raise
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark or e.context_mark
        raise MappingFileError(file, (m.line + 1) if m else 0, "(yaml)", f"{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise MappingFileError(file, 0, "(yaml)", str(e)) from None


def load_yaml(path) -> object:
    file = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise MappingFileError(file, 0, "(file)", e.strerror or str(e)) from None
    except UnicodeDecodeError as e:
        raise MappingFileError(file, 0, "(file)", f"not UTF-8: {e.reason} at byte {e.start}") from None
    return load_yaml_text(text, file)
