"""Real stores for the tests: a SQLite file in a temporary folder, and a database of its own on the
machine's PostgreSQL (127.0.0.1:5432, trust auth), or a clear skip where there is none."""
from __future__ import annotations

import os
import queue
import threading
import uuid
from contextlib import contextmanager

import pytest

PG_ADMIN = os.environ.get("PAMGATE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SKIP_PG = "no PostgreSQL at 127.0.0.1:5432 (trust auth, database test): PostgreSQL tests skipped"


def pg_available() -> bool:
    try:
        import psycopg
        with psycopg.connect(PG_ADMIN.replace("+psycopg", ""), connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001
        return False


@contextmanager
def pg_database():
    """A fresh database for one test, dropped afterwards."""
    import psycopg
    if not pg_available():
        pytest.skip(SKIP_PG)
    name = f"pamgate_t_{uuid.uuid4().hex[:12]}"
    admin = PG_ADMIN.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        _drop_later(name)


# Dropping a migrated database takes PostgreSQL about a second of file removal and fsync: a thread does it
# while the next tests run, and drop_pending() (at the end of the session) waits for the last ones.
_to_drop: queue.Queue = queue.Queue()
_dropper: threading.Thread | None = None


def _drop_later(name: str) -> None:
    global _dropper
    _to_drop.put(name)
    if _dropper is None or not _dropper.is_alive():
        _dropper = threading.Thread(target=_drop_queued, name="pg-drop", daemon=True)
        _dropper.start()


def _drop_queued() -> None:
    import psycopg
    while (name := _to_drop.get()) is not None:
        try:
            with psycopg.connect(PG_ADMIN.replace("+psycopg", ""), autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as e:  # noqa: BLE001 — a database left behind harms no test; say so and go on
            print(f"tests: could not drop the test database {name}: {e}")


def drop_pending() -> None:
    """Wait until every test database handed back so far is dropped."""
    if _dropper is not None and _dropper.is_alive():
        _to_drop.put(None)
        _dropper.join(120)
