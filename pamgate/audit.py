"""`pamgate audit verify`: the audit trail's hash chain, read from its start on one snapshot (the writers go
on), and the verification recorded in the trail, where the console's feed board shows the last one."""
from __future__ import annotations

import getpass
import sys
from datetime import datetime, timezone

from pamgate.db import reading


def verify(args) -> int:
    with reading(args, "the audit trail") as store:
        result = store.verify_audit()
        recorded = None if args.no_record else _record(store, result)
    n, broken, why = result["entries"], result["broken_at"], result["why"]
    if recorded:
        print(f"pamgate: verification not recorded: {recorded}", file=sys.stderr)
    if why:
        where = f"entry {broken}" if broken is not None else "the chain's end"
        print(f"pamgate: audit chain broken at {where}: {why} ({n} entries read)", file=sys.stderr)
        return 1
    print(f"pamgate: audit chain intact: {n} entries")
    return 0


def _record(store, result: dict) -> str | None:
    """Writes the verification's entry; a store that refuses it (read-only, locked) is one line, and the
    verification's own answer stands."""
    try:
        with store.transaction() as uow:
            uow.record_audit_verification(result, datetime.now(timezone.utc), by=_user(), via="cli")
    except Exception as e:  # noqa: BLE001 — the chain was read; not recording it is said, not raised
        return (str(e).splitlines() or [type(e).__name__])[0][:200]
    return None


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 — no login name (a container without one): the entry says none
        return None
