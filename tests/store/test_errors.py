"""consent_store.errors sorts real failures of a real store: lost, refused, or not the store's."""
import pytest
from sqlalchemy import text
from sqlalchemy.exc import ResourceClosedError

from consent_store import errors
from consent_store.store import Store
from tests.stores import pg_database


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'errors.db'}")     # no schema needed: the tests make their table
    yield s
    s.dispose()


def failure(store, statement: str) -> Exception:
    with pytest.raises(Exception) as e:
        with store.engine.begin() as conn:
            conn.execute(text(statement))
    return e.value


def test_a_refused_statement_is_the_operations_own(store):
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    e = failure(store, "INSERT INTO t VALUES (1)")
    assert not errors.lost(e) and not errors.conflict(e)
    assert "UNIQUE" in errors.refused(e)


def test_an_operational_error_loses_the_transaction(store):
    e = failure(store, "SELECT * FROM no_such_table")
    assert errors.lost(e) and errors.refused(e) is None and not errors.conflict(e)


def test_sqlalchemys_unusable_connection_is_lost_and_other_errors_are_not_the_stores():
    assert errors.lost(ResourceClosedError("closed"))
    assert not errors.lost(ValueError("x")) and errors.refused(ValueError("x")) is None
    assert errors.sqlstate(ValueError("x")) is None


def test_a_value_postgresql_cannot_take_is_refused_not_lost():
    with pg_database() as url:
        s = Store(url)
        try:
            e = failure(s, "SELECT 'x'::integer")
            assert errors.value_refused(e) and errors.sqlstate(e) == "22P02"
            assert not errors.lost(e) and errors.refused(e)
        finally:
            s.dispose()
