"""An instant in the past costs what the present costs (issue 13): the visits an instant can fall in are
found by seeks, whatever the instant and however long the patient's history.

A patient with 1,000 visits one after another (a dialysis patient: four hours every other day, each
discharged); a message and a decision dated at the end of that history, before all of it and in its middle
must run the same statements, read the same rows, and make SQLite run the same work within a few percent.
Before the fix, an instant before the history read every visit discharged after it (1,000 rows here). And
the visit each instant falls in, found on the bounded view, is the one `rules.current_visit` finds over the
whole history, with visits that overlap (a long stay, discharged late or never, with short consultations
inside it), visits discharged exactly at the instant, cancelled visits and visits with no start.
"""
from __future__ import annotations

import uuid

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from consent_store.migrate import upgrade
from consent_store.store import Store
from consent_store.tables import episode, patients
from engine import patient_view, rules
from engine.config import Config
from engine.domain import DecisionRequest, Movement, PatientState, Visit, movement_row, visit_from_rows, visit_row
from engine.serve import build_pipeline
from tests.builders import adt, zfa_2111
from tests.stores import pg_database
from tests.store.test_history_cost import _apply, _measured, _no_scans, _shape, _store

T0 = datetime(2020, 1, 6, 9, 0, tzinfo=timezone.utc)
AUTHORITY = "HOSP-V"
HISTORY = 1000
SESSION = timedelta(hours=4)
LAST = T0 + timedelta(days=2 * (HISTORY - 1))
# the instants asked: after the history, before all of it, in its middle (between two sessions)
INSTANTS = {"end": LAST + timedelta(days=1), "before": T0 - timedelta(days=700),
            "middle": T0 + timedelta(days=HISTORY, hours=12)}
# inside the long stays (and the overlapping ones), between two consultations
INSIDE = T0 + timedelta(days=300, hours=12)


def _hl7(d: datetime) -> str:
    return d.strftime("%Y%m%d%H%M%S")


def _patient(store: Store, pipeline, ipp: str) -> int:
    """A patient known by an A28 (no visit): its visits are then written as the store's rows."""
    _apply(store, pipeline, [adt("A28", ipp=ipp, authority=AUTHORITY, when=_hl7(T0 - timedelta(days=3000)))])
    with store.transaction() as uow:
        return uow.find_patient("PI", AUTHORITY, ipp)


def _put(store: Store, pid: int, visits) -> None:
    with store.transaction() as uow:
        for v in visits:
            uow.put_visit(pid, visit_row(v), [movement_row(v.number, i, m) for i, m in enumerate(v.movements)])


def _sessions(n: int, prefix: str, first: datetime, every=timedelta(days=2)) -> list[Visit]:
    return [Visit(f"{prefix}{i:05d}", patient_class="O", admitted_at=first + i * every,
                  discharged_at=first + i * every + SESSION) for i in range(n)]


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(Config.model_validate({}))


@pytest.fixture(scope="module")
def store(tmp_path_factory, pipeline):
    s = _store(tmp_path_factory.mktemp("visits_at"), "visits.db")
    pids = {}
    # one session after another, each discharged
    pids["dialysis"] = _patient(s, pipeline, "880001")
    _put(s, pids["dialysis"], _sessions(HISTORY, "D", T0))
    # a long stay discharged late, with consultations inside it and after it; a cancelled visit spanning
    # everything; a visit with no start; a visit discharged exactly at an instant asked
    long_stay = Visit("L0", patient_class="I", admitted_at=T0 - timedelta(days=1),
                      discharged_at=T0 + timedelta(days=600))
    cancelled = Visit("X0", patient_class="I", admitted_at=T0 - timedelta(days=2),
                      discharged_at=T0 + timedelta(days=5000), cancelled=True)
    unstarted = Visit("U0", patient_class="O", movements=(Movement(id="MU", event="A04", action="INSERT", start=None),))
    exact = Visit("E0", patient_class="O", admitted_at=T0 + timedelta(days=700, hours=1),
                  discharged_at=T0 + timedelta(days=700, hours=6))
    pids["long stay"] = _patient(s, pipeline, "880002")
    _put(s, pids["long stay"], [long_stay, cancelled, unstarted, exact, *_sessions(HISTORY // 2, "C", T0)])
    # a long stay never discharged, with consultations inside it
    pids["open stay"] = _patient(s, pipeline, "880003")
    _put(s, pids["open stay"], [Visit("O0", patient_class="I", admitted_at=T0 - timedelta(hours=1)),
                                *_sessions(HISTORY // 2, "C", T0)])
    # stays that overlap one another (each begins inside the one before), and sessions inside them
    pids["overlapping"] = _patient(s, pipeline, "880004")
    _put(s, pids["overlapping"], [
        *[Visit(f"S{i:03d}", patient_class="I", admitted_at=T0 + timedelta(days=30 * i),
                discharged_at=T0 + timedelta(days=30 * i + 45)) for i in range(20)],
        *_sessions(300, "C", T0 + timedelta(hours=3))])
    # a consent collected before everything: each instant asked has a latest value to read
    for n, ipp in enumerate(("880001", "880002", "880003", "880004")):
        _apply(s, pipeline, [_message(ipp, T0 - timedelta(days=2000), 9000 + n)])
    yield s, pids
    s.dispose()


def _instants() -> list[datetime]:
    """Instants around every kind of edge: before and after all, at a start, at a discharge (inclusive), a
    second either side, inside a session, between sessions, inside and after the long stays."""
    out = [T0 - timedelta(days=3000), T0 - timedelta(days=1, seconds=1), T0 - timedelta(days=1), T0,
           T0 + timedelta(days=700, hours=6), T0 + timedelta(days=700, hours=6, seconds=1),
           T0 + timedelta(days=600), T0 + timedelta(days=600, seconds=1), LAST + timedelta(days=10)]
    for day in (0, 2, 41, 45, 46, 100, 331, 598, 600, 601, 640, 1001, 1500, 1998):
        for delta in (timedelta(0), timedelta(hours=1), SESSION, SESSION + timedelta(seconds=1),
                      timedelta(hours=12), timedelta(hours=3), timedelta(hours=7)):
            out.append(T0 + timedelta(days=day) + delta)
    return out


def test_the_visit_an_instant_falls_in_is_the_one_the_whole_history_gives(store):
    s, pids = store
    for name, pid in pids.items():
        with s.transaction() as uow:
            whole = patient_view.whole(uow, pid)
            for at in _instants():
                seen = patient_view._visits(uow, pid, uow.visits_at(pid, at))
                bounded = rules.current_visit(PatientState(visits=tuple(seen.values())), at)
                expected = rules.current_visit(whole, at)
                assert (bounded and bounded.number) == (expected and expected.number), (name, at)
                assert len(seen) <= 3, (name, at, list(seen))
                # what a decision reads in one statement: the same visits, each once, with the same movements
                assert _around(uow, pid, at) == seen, (name, at)


def _around(uow, pid: int, at: datetime) -> dict:
    """UnitOfWork.visits_around (the visits of visits_at with their movements, one statement) as a view holds
    them."""
    rows = uow.visits_around(pid, at)
    assert len({e["visit"] for e, _ in rows}) == len(rows), rows     # each visit once
    return {e["visit"]: visit_from_rows(e, moves) for e, moves in rows}


def _message(ipp: str, at: datetime, n: int) -> str:
    """An identity update carrying a consent collected at `at` and naming no visit: the rules ask which
    visit `at` falls in."""
    return adt("A31", ipp=ipp, authority=AUTHORITY, when=_hl7(at), control_id=f"VA{ipp}{n:04d}",
               zfa=zfa_2111("NA", "IC", _hl7(at)))


def _costs(s: Store, pipeline, ipp: str, at: datetime, n: int):
    msg = _measured(lambda: _apply(s, pipeline, [_message(ipp, at, n)]))
    # a user never reminded before: the reminder's read and write are the same for every decision counted,
    # whatever the module's earlier tests (the store is shared) decided for other users
    request = DecisionRequest(action="consult", user=f"dr-{uuid.uuid4().hex[:12]}", profession="10", at=at)

    def decide():
        with s.transaction() as uow:
            pipeline.decide(uow, {"id": ipp, "authority": AUTHORITY}, request, LAST + timedelta(days=30))
    dec = _measured(decide)
    _no_scans(s, msg.selects + dec.selects)
    return msg, dec


@pytest.mark.parametrize("which", [0, 1], ids=["message", "decision"])
def test_an_instant_before_or_inside_a_long_history_costs_what_its_end_costs(store, pipeline, which):
    s, _ = store
    works = {name: _costs(s, pipeline, "880001", at, i)[which] for i, (name, at) in enumerate(INSTANTS.items())}
    end, middle, before = works["end"], works["middle"], works["before"]
    # in the middle, as at the end, the instant falls after a session: the same statements and rows
    assert _shape(middle) == _shape(end)
    assert middle.rows_read == end.rows_read, (middle.rows_read, end.rows_read)
    assert middle.steps <= end.steps * 1.05, (end.steps, middle.steps)
    # before the history there is no visit to read, so a statement less; never more work (it read every
    # visit discharged after the instant: 1,000 rows)
    assert len(before.statements) <= len(end.statements)
    assert before.rows_read <= end.rows_read, (before.rows_read, end.rows_read)
    assert before.steps <= end.steps * 1.05, (end.steps, before.steps)


def test_overlapping_visits_cost_no_more_statements_nor_rows(store, pipeline):
    """Where visits overlap, the instant can fall in a visit begun before the latest one: the walk back stops
    at it, or where the patient's longest visit would have begun (docs/store.md). A decision's statements
    are at most those of a patient with visits one after another, whatever the instant, and its rows at most
    the two visits more it can fall in; only SQLite's walk may be longer, bounded by the visits begun within
    one longest visit. (A message's own effects differ from patient to patient: its reads are a decision's.)"""
    s, _ = store
    bound = _costs(s, pipeline, "880001", INSTANTS["end"], 50)[1]
    for n, ipp in enumerate(("880002", "880003", "880004")):
        for i, at in enumerate((*INSTANTS.values(), INSIDE)):
            w = _costs(s, pipeline, ipp, at, 60 + 10 * n + i)[1]
            assert len(w.statements) <= len(bound.statements), (ipp, at)
            assert w.rows_read <= bound.rows_read + 2, (ipp, at, w.rows_read, bound.rows_read)


def test_figures(store, pipeline, capsys):
    """Not a check: the counts, printed for BENCHMARKS.md (pytest -s)."""
    s, _ = store
    with capsys.disabled():
        for p, ipp in enumerate(("880001", "880002", "880003", "880004")):
            for i, (name, at) in enumerate((*INSTANTS.items(), ("inside", INSIDE))):
                for kind, w in zip(("message", "decision"), _costs(s, pipeline, ipp, at, 100 + 10 * p + i)):
                    print(f"\n{ipp} {kind:<8} at the {name:<6}: {len(w.statements)} statements, "
                          f"{w.rows_read} rows read, {w.bytes_read} bytes read, {w.steps} SQLite VM steps")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'visits.db'}"
    else:
        with pg_database() as url:
            yield url


def _stays() -> list[Visit]:
    """A long stay discharged late with consultations inside, a stay inside it, and sessions after."""
    return [Visit("L0", patient_class="I", admitted_at=T0, discharged_at=T0 + timedelta(days=90)),
            Visit("L1", patient_class="I", admitted_at=T0 + timedelta(days=10), discharged_at=T0 + timedelta(days=20)),
            *_sessions(60, "C", T0 + timedelta(hours=1)),
            *_sessions(20, "D", T0 + timedelta(days=100))]


def _agrees(store: Store, pid: int) -> None:
    with store.transaction() as uow:
        whole = patient_view.whole(uow, pid)
        for at in [T0 + timedelta(days=d, hours=h) for d in range(-1, 150, 3) for h in (0, 1, 5, 12)]:
            seen = patient_view._visits(uow, pid, uow.visits_at(pid, at))
            bounded = rules.current_visit(PatientState(visits=tuple(seen.values())), at)
            expected = rules.current_visit(whole, at)
            assert (bounded and bounded.number) == (expected and expected.number), at
            assert _around(uow, pid, at) == seen, at


def test_a_store_upgraded_finds_the_visits_of_its_history(store_url):
    """Migration 0011_visits_at fills each patient's longest visit from its episodes, on both backends."""
    store = Store(store_url)
    try:
        upgrade(store.engine, "0010_audit_verification")
        now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        with store.engine.begin() as conn:
            pid = conn.execute(insert(patients).values(state="{}", version=1, updated_at=now)).inserted_primary_key[0]
            bare = conn.execute(insert(patients).values(state="{}", version=1, updated_at=now)).inserted_primary_key[0]
            for v in _stays():
                row = visit_row(v)
                conn.execute(insert(episode).values(patient_id=pid, **row))
        upgrade(store.engine)
        with store.engine.connect() as conn:
            longest = dict(conn.execute(select(patients.c.id, patients.c.longest_visit)).all())
        assert longest[bare] is None
        assert 90 * 86400 < longest[pid] <= 90 * 86400 + 2
        _agrees(store, pid)
    finally:
        store.dispose()


def test_a_merge_brings_the_absorbed_patients_longest_visit(store_url):
    """A40: the survivor's walk back reaches as far as the longest visit it was brought."""
    store = Store(store_url)
    try:
        store.upgrade()
        pipeline = build_pipeline(Config.model_validate({}))
        absorbed, survivor = _patient(store, pipeline, "880101"), _patient(store, pipeline, "880102")
        _put(store, absorbed, _stays()[:2])
        _put(store, survivor, _stays()[2:])
        with store.transaction() as uow:
            uow.merge_patient(absorbed, survivor, 0, datetime(2026, 1, 1, tzinfo=timezone.utc))
        _agrees(store, survivor)
        with store.transaction() as uow:
            assert uow.visits_at(survivor, T0 + timedelta(days=50, hours=12))[0] == "L0"
    finally:
        store.dispose()
