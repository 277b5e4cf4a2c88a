"""The pipeline reaches the store through engine.unit_of_work's Protocols: the store's UnitOfWork must have
each of their methods, with the same parameters (names, kinds, defaults)."""
import inspect

import pytest

from consent_store.store import UnitOfWork as StoreUnitOfWork
from engine import unit_of_work


def _methods(protocol):
    return [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]


@pytest.mark.parametrize("protocol", unit_of_work.SEAMS, ids=lambda p: p.__name__)
def test_the_store_implements_the_seam(protocol):
    assert _methods(protocol)
    for name in _methods(protocol):
        assert hasattr(StoreUnitOfWork, name), f"consent_store.store.UnitOfWork lacks {name}"
        want = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(protocol, name)).parameters.values()]
        have = [(p.name, p.kind, p.default)
                for p in inspect.signature(getattr(StoreUnitOfWork, name)).parameters.values()]
        assert have == want, name


def test_the_pipeline_uses_nothing_else():
    import re
    from pathlib import Path
    root = Path(unit_of_work.__file__).parent
    used = set()
    for module in ("pipeline.py", "patient_view.py"):
        used |= set(re.findall(r"\buow\.(\w+)", (root / module).read_text()))
    offered = {n for p in unit_of_work.SEAMS for n in _methods(p)}
    assert used <= offered, used - offered
