"""`pamgate db upgrade`, and the store as the other commands open it."""
from __future__ import annotations

from engine import config as configuration
from engine.assembly import open_store
from engine.errors import CommandError


def configured_store(args, upgrade: bool):
    """The store of `--config`; created or migrated only when `upgrade` (the command says so): a read-only
    command never creates a store, it says how to make one."""
    cfg = configuration.load(getattr(args, "config", None))
    if not upgrade:
        cfg.store.auto_upgrade = False
        db = configuration.sqlite_path(cfg.store.url)
        if db is not None and not db.exists():
            raise CommandError(f"no store at {db}: run pamgate db upgrade"
                               f"{' --config ' + args.config if getattr(args, 'config', None) else ''}")
    return open_store(cfg)


def unreadable(what: str, e: Exception) -> CommandError:
    """A store that cannot answer a read-only command: one line, and what to do."""
    first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    return CommandError(f"cannot read {what}: {first} (is the store at the latest schema? pamgate db upgrade)")


def upgrade(args) -> int:
    store = configured_store(args, upgrade=True)
    print(f"pamgate: store {store.engine.url.render_as_string(hide_password=True)} is at the latest schema")
    return 0
