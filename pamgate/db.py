"""`pamgate db upgrade` and `pamgate db backup`, and the store as the other commands open it."""
from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

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


@contextmanager
def reading(args, what: str):
    """The store of a read-only command, disposed of after; a store that cannot answer is one line saying
    what could not be read, never a traceback."""
    store = configured_store(args, upgrade=False)
    try:
        yield store
    except CommandError:
        raise
    except Exception as e:  # noqa: BLE001 — a store that cannot answer: one line, never a traceback
        raise unreadable(what, e) from None
    finally:
        store.dispose()


def upgrade(args) -> int:
    store = configured_store(args, upgrade=True)
    print(f"pamgate: store {store.engine.url.render_as_string(hide_password=True)} is at the latest schema")
    return 0


def backup(args) -> int:
    """A consistent copy of a live SQLite store, by SQLite's online backup (one read transaction: the copy is
    the store as one commit left it, WAL included; writers go on meanwhile). Never a file copy, which can
    tear a WAL store. PostgreSQL has its own tool."""
    cfg = configuration.load(getattr(args, "config", None))
    db = configuration.sqlite_path(cfg.store.url)
    if db is None:
        if cfg.store.url.startswith("postgresql"):
            raise CommandError("the store is PostgreSQL: back it up with pg_dump -Fc (README, "
                               "\"Backup and restore\")")
        raise CommandError(f"store.url: {cfg.store.url}: an in-memory store has nothing to back up")
    if not db.exists():
        raise CommandError(f"store.url: {db}: no such file")
    target = Path(args.file)
    if target.exists():
        raise CommandError(f"{target}: already exists; give a new file name")
    partial = target.with_name(target.name + ".partial")
    try:
        source = sqlite3.connect(db, timeout=30)     # read only: it runs no write
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)
            problem = copy.execute("PRAGMA quick_check").fetchone()[0]
            pages = copy.execute("PRAGMA page_count").fetchone()[0]
        finally:
            copy.close()
            source.close()
    except (sqlite3.Error, OSError) as e:
        partial.unlink(missing_ok=True)
        raise CommandError(f"cannot back up {db} to {target}: {e}") from None
    if problem != "ok":
        partial.unlink(missing_ok=True)
        raise CommandError(f"the copy of {db} fails SQLite's check: {problem}")
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    partial.rename(target)
    print(f"pamgate: store {db} backed up to {target} ({pages} pages)")
    return 0
