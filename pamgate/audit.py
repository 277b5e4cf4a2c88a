"""`pamgate audit verify`: the audit trail's hash chain, read from its start."""
from __future__ import annotations

import sys

from pamgate.db import configured_store, unreadable


def verify(args) -> int:
    store = configured_store(args, upgrade=False)
    try:
        with store.transaction() as uow:
            n, broken, why = uow.verify_audit()
    except Exception as e:  # noqa: BLE001 — a store that cannot answer: one line, never a traceback
        raise unreadable("the audit trail", e) from None
    finally:
        store.dispose()
    if why:
        where = f"entry {broken}" if broken is not None else "the chain's end"
        print(f"pamgate: audit chain broken at {where}: {why} ({n} entries read)", file=sys.stderr)
        return 1
    print(f"pamgate: audit chain intact: {n} entries")
    return 0
