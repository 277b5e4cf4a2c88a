"""Fixtures for the outbound tests: a real store (SQLite file, or a PostgreSQL database of its own),
real receivers, and the dispatcher in-process on the test's reactor."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from consent_store.store import Store
from tests.outbound.receivers import HttpReceiver, MllpReceiver
from tests.stores import pg_database


def make_store(kind: str, tmp_path):
    if kind == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'store.db'}")
        s.upgrade()
        return s, None
    cm = pg_database()
    url = cm.__enter__()
    s = Store(url)
    s.upgrade()
    return s, cm


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    s, cm = make_store(request.param, tmp_path)
    yield s
    s.dispose()
    if cm is not None:
        cm.__exit__(None, None, None)


@pytest.fixture
def sqlite_store(tmp_path):
    s, _ = make_store("sqlite", tmp_path)
    yield s
    s.dispose()


@pytest.fixture
def http_receiver():
    r = HttpReceiver()
    yield r
    r.down()


@pytest.fixture
def mllp_receiver():
    r = MllpReceiver()
    yield r
    r.down()


def envelope(patient: str, n: int, type_: str = "consent.changed", authority: str = "HOSP-T", **data) -> dict:
    """An envelope as the pipeline writes it; `n` numbers the patient's events in order."""
    return {"id": str(uuid.uuid4()), "type": type_, "time": datetime.now(timezone.utc),
            "patient": {"id": patient, "authority": authority}, "patient_key": f"PI|{authority}|{patient}",
            "episode": {"visit": None}, "data": {"n": n, **data}, "source": {"msh10": None, "sender": "test"}}


def enqueue(store, envelopes, routes) -> None:
    with store.transaction() as uow:
        uow.enqueue(envelopes, routes, datetime.now(timezone.utc))


def statuses(store) -> dict:
    with store.transaction() as uow:
        return uow.count_deliveries()
