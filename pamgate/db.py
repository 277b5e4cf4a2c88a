"""`pamgate db upgrade`, and the store as the other commands open it."""
from __future__ import annotations

from engine import config as configuration
from engine.assembly import open_store


def configured_store(args, upgrade: bool):
    """The store of `--config`; migrated to the latest schema only when `upgrade` (the command says so)."""
    cfg = configuration.load(getattr(args, "config", None))
    if not upgrade:
        cfg.store.auto_upgrade = False
    return open_store(cfg)


def upgrade(args) -> int:
    store = configured_store(args, upgrade=True)
    print(f"pamgate: store {store.engine.url.render_as_string(hide_password=True)} is at the latest schema")
    return 0
