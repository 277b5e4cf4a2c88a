"""`pamgate audit verify`: the audit trail's hash chain, read from its start."""
from __future__ import annotations

import sys

from pamgate.db import reading


def verify(args) -> int:
    with reading(args, "the audit trail") as store, store.transaction() as uow:
        n, broken, why = uow.verify_audit()
    if why:
        where = f"entry {broken}" if broken is not None else "the chain's end"
        print(f"pamgate: audit chain broken at {where}: {why} ({n} entries read)", file=sys.stderr)
        return 1
    print(f"pamgate: audit chain intact: {n} entries")
    return 0
