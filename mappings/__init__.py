"""pamgate mappings: YAML files that say which HL7 field means what, per PAM FR layout and per sender.

    ms = mappings.load(paths=None, senders=None)          # -> MappingSet (raises MappingFileError)
    sel = ms.select(message)                              # -> Selection(mapping, why, rule)
    ex = sel.mapping.extract(message)                     # -> Extraction(facts, trace, problems, rejection)

This package imports nothing else of pamgate. The language is documented in mappings/README.md, the facts
in docs/internals.md.
"""

from .loader import SHIPPED_DIR, load
from .mapping import Mapping
from .message import Message, PathError, compile_path
from .model import DELETE, Extraction, Fact, Problem, Selection
from .select import MappingSet
from .yamlio import MappingFileError

__all__ = ["load", "MappingSet", "Mapping", "Selection", "Extraction", "Fact", "Problem", "DELETE",
           "Message", "MappingFileError", "PathError", "compile_path", "SHIPPED_DIR"]
