"""The code tables of the current PAM FR layout, read from its mapping file (`pamfr-2.11.1.yaml`).

One table per coded fact, read in both directions: code → meaning where a code comes in (a message, or the
API's `consult: IC`), meaning → code where pamgate writes one (the forwarded ADT's ZFA). The mapping file is
the only place that says `IC` is consent.
"""
from __future__ import annotations

from functools import lru_cache

from .loader import load

CURRENT_LAYOUT = "pamfr-2.11.1"


@lru_cache(maxsize=None)
def meanings(fact: str) -> dict[str, str | None]:
    """Code → meaning of `fact` (`consult`, `feed`) in the current layout; None: the code states nothing (NA)."""
    mapping = load()[CURRENT_LAYOUT]
    (rule,) = [r for r in mapping.facts if r.name == fact]
    return dict(rule.codes)


@lru_cache(maxsize=None)
def codes(fact: str) -> dict[str, str]:
    """Meaning → code of `fact` in the current layout: the same table, read the other way (NA left out)."""
    return {meaning: code for code, meaning in meanings(fact).items() if meaning is not None}
