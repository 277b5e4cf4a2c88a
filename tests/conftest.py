"""Fixtures shared by the test packages: a fresh, migrated store on each backend (a package may override them)."""
import pytest

from consent_store.store import Store
from tests.stores import pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh, migrated store: a SQLite file, or a database of its own on the machine's PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        Store(url).upgrade()
        yield url
    else:
        with pg_database() as url:
            Store(url).upgrade()
            yield url


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.dispose()
