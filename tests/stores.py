"""Real stores for the tests: a SQLite file in a temporary folder, and a database of its own on the
machine's PostgreSQL (127.0.0.1:5432, trust auth), or a clear skip where there is none."""
from __future__ import annotations

import os
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
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
