"""Fixtures shared by the test packages: a fresh, migrated store on each backend (a package may override them);
the figures that tests record, printed at the end of the run; a small real filesystem that fills up."""
import os
import subprocess

import pytest

from consent_store.store import Store
from tests.stores import drop_pending, pg_database


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


@pytest.fixture
def small_filesystem(tmp_path):
    """mount(size) -> a folder on a tmpfs of that size (`16m`, `64k`), mounted for the test and unmounted
    after it: a real filesystem that fills up. Root and mount only; else the test is skipped."""
    mounted = []

    def mount(size: str):
        where = tmp_path / f"small-{len(mounted)}"
        where.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                               capture_output=True).returncode != 0:
            pytest.skip("a full filesystem needs root and mount (tmpfs): not available here")
        mounted.append(where)
        return where
    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


#: section → lines, from the tests' "figure" user properties (e.g. the fuzz suite's counts), printed at the end
FIGURES: dict[str, list[str]] = {}


def pytest_runtest_logreport(report):
    # the teardown report: it carries what the test's fixtures added last (and crosses from an xdist worker)
    if report.when == "teardown":
        for key, value in report.user_properties:
            if key == "figure":
                FIGURES.setdefault(value[0], []).append(value[1])


def pytest_terminal_summary(terminalreporter):
    for section, lines in FIGURES.items():
        terminalreporter.write_sep("-", section)
        for line in lines:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session):
    drop_pending()        # the PostgreSQL test databases still being dropped in the background
