"""What the rules read of a patient, and no more: a bounded view, built from the store's indexed reads.

Every answer of engine/rules.py is a latest value: of an item by an instant (over the patient's visits, or
over one visit and the values of no visit), of the visits begun by an instant, of a user's DMP results. So
the view holds, for each item, the fact collected last by the instant asked, live and cancelled; the visits
that instant can fall in; the visits those facts were collected on; the user's last TD0.2 and TD0.3. A view
that holds the row a query's answer is also holds nothing that could beat it, since every row in it is a
row of the history: the rules answer on it as on the whole history. Its size, and the work of reading it,
do not depend on the history's length.
"""
from __future__ import annotations

from datetime import datetime

from consent_store.store import ANY_VISIT, NO_VISIT, THE_VISIT
from engine import rules
from engine.unit_of_work import UnitOfWork
from engine.domain import (BLOCK_BREAK_GLASS, BLOCK_CENTRE_15, CONSULT, DMP_STATUS, FEED, ITEMS, DecisionRequest,
                           PatientState, break_glass_from_row, dmp_result_from_row, fact_from_row, from_header,
                           visit_from_rows)

# (item, cancelled, which visits): only consent to consultation is ever cancelled (with its admission), and
# only consult and feed are judged per visit
def _picks(with_visit: bool) -> tuple:
    visits = (ANY_VISIT, NO_VISIT) + ((THE_VISIT,) if with_visit else ())
    return (tuple((CONSULT, c, v) for c in (False, True) for v in visits)
            + tuple((FEED, False, v) for v in visits)
            + tuple((item, False, ANY_VISIT) for item in (DMP_STATUS, BLOCK_BREAK_GLASS, BLOCK_CENTRE_15)))


PICKS = {True: _picks(True), False: _picks(False)}


def for_message(uow: UnitOfWork, pid: int, header: dict, facts: dict, received_at: datetime, *,
                latest_ever: bool = False) -> PatientState:
    """The view `rules.apply` needs for this message: the facts a resent value would repeat, and the view at
    the message's instant. `latest_ever`: also the latest values whatever their date (the forwarded ZFA)."""
    resent = []
    for item, at in rules.collected_dates(facts, received_at):
        resent += uow.facts_collected_at(pid, item, at)
    at = rules.instant(from_header(header, facts=tuple(fact_from_row(r) for r in resent)), facts, received_at)
    return _view(uow, pid, header, at, facts.get("visit.number") or None, resent, latest_ever=latest_ever)


def for_decision(uow: UnitOfWork, pid: int, request: DecisionRequest, now: datetime) -> PatientState:
    """The view `rules.decide` needs: the view at the instant asked, and the user's last DMP results."""
    at = request.at or now
    view = _view(uow, pid, uow.patient_header(pid), at, request.visit)
    return rules.replace(view, dmp_results=tuple(dmp_result_from_row(r)
                                                 for r in uow.last_dmp_results(pid, request.user, at)))


def _view(uow: UnitOfWork, pid: int, header: dict, at: datetime, visit: str | None, resent=(), *,
          latest_ever: bool = False) -> PatientState:
    visits = {}
    scoped = visit
    if visit is None:
        # the visit current at `at`, among those it can fall in
        visits = {e["visit"]: visit_from_rows(e, moves) for e, moves in uow.visits_around(pid, at) if e["visit"]}
        current = rules.current_visit(PatientState(visits=tuple(visits.values())), at)
        scoped = current.number if current else None
    rows = uow.latest_facts(pid, PICKS[scoped is not None], at, scoped)
    if latest_ever:
        rows += uow.latest_facts(pid, PICKS[scoped is not None], None, scoped)
    facts = {}
    for r in (*resent, *rows):
        facts.setdefault((r["seq"], r["item"]), fact_from_row(r))
    wanted = {visit, scoped} | {f.visit for f in facts.values()}
    visits.update(_visits(uow, pid, wanted - visits.keys()))
    return from_header(header, facts=tuple(facts.values()), visits=tuple(visits.values()))


def _visits(uow: UnitOfWork, pid: int, numbers) -> dict:
    return {e["visit"]: visit_from_rows(e, moves) for e, moves in uow.visits(pid, numbers)}


def whole(uow: UnitOfWork, pid: int) -> PatientState:
    """Every row of the patient's history (GET /v1/patients, where the history is the answer)."""
    h = uow.patient_history(pid)
    moves: dict[str, list] = {}
    for m in h["movements"]:
        moves.setdefault(m["visit"], []).append(m)
    return from_header(
        uow.patient_header(pid),
        # in arrival order: by seq, then in the order a message gives its items
        facts=tuple(sorted((fact_from_row(r) for r in h["facts"]), key=lambda f: (f.seq, ITEMS.index(f.item)))),
        visits=tuple(visit_from_rows(e, moves.get(e["visit"], [])) for e in h["episodes"]),
        dmp_results=tuple(dmp_result_from_row(r) for r in h["dmp_results"]),
        break_glass=tuple(break_glass_from_row(r) for r in h["break_glass"]))
