"""`pamgate audit verify`: the audit trail's hash chain, read from its start."""
from __future__ import annotations

import sys

from engine.errors import CommandError
from pamgate.db import configured_store


def verify(args) -> int:
    store = configured_store(args, upgrade=False)
    try:
        with store.transaction() as uow:
            n, broken, why = uow.verify_audit()
    except Exception as e:  # noqa: BLE001
        raise CommandError(f"cannot read the audit trail: {str(e).splitlines()[0]}") from None
    if why:
        where = f"entry {broken}" if broken is not None else "the chain's end"
        print(f"pamgate: audit chain broken at {where}: {why} ({n} entries read)", file=sys.stderr)
        return 1
    print(f"pamgate: audit chain intact: {n} entries")
    return 0
