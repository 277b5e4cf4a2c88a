"""The seam between the pipeline and the store: what the pipeline asks of one unit of work, typed.

`consent_store.store.UnitOfWork` is the implementation (SQLite, PostgreSQL); tests/engine/test_seam.py checks
that it has every method here with the same parameters. Plain values only cross: dicts, strings, datetimes;
the domain types stay on this side (engine.domain's row codecs).
"""
from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Journal(Protocol):
    """Messages received, duplicates, the sequence numbers, the audit chain, the outbox."""

    def already_applied(self, app: str, facility: str, control_id: str) -> bool: ...

    def applied_hash(self, app: str, facility: str, control_id: str) -> str | None: ...

    def journal(self, *, received_at, app, facility, control_id, event, ack_code, error, raw: bytes,
                patient_id=None, applied: bool = False, content_hash: str | None = None, ack: str | None = None,
                ipp: str | None = None, visit: str | None = None) -> int: ...

    def last_sequence(self, app: str, facility: str) -> int | None: ...

    def set_sequence(self, app: str, facility: str, last_accepted: int | None, now: datetime) -> None: ...

    def audit(self, *, at: datetime, patient_id, kind: str, payload: dict, user: str | None = None) -> str: ...

    def enqueue(self, envelopes: list[dict], routes: dict, now: datetime) -> None: ...


@runtime_checkable
class Patients(Protocol):
    """Patient records: the identifiers that lead to them, their headers (domain.header), merges, and the
    professionals' reminders."""

    def find_patient(self, kind: str, authority: str | None, value: str) -> int | None: ...

    def create_patient(self, header: dict, now: datetime) -> int: ...

    def patient_header(self, patient_id: int) -> dict: ...

    def save_header(self, patient_id: int, header: dict, now: datetime) -> None: ...

    def set_identifiers(self, patient_id: int, ids) -> None: ...

    def patient_identifiers(self, patient_id: int) -> list[dict]: ...

    def merge_patient(self, absorbed_id: int, survivor_id: int, seq_offset: int, now: datetime) -> None: ...

    def last_reminded(self, user_id: str): ...

    def set_reminded(self, user_id: str, at: datetime) -> None: ...


@runtime_checkable
class History(Protocol):
    """A patient's history rows: bounded, indexed reads (engine/patient_view.py) and writes by key."""

    def facts_collected_at(self, patient_id: int, item: str, at: datetime) -> list[dict]: ...

    def latest_facts(self, patient_id: int, picks: tuple, at: datetime | None, visit: str | None) -> list[dict]: ...

    def visits_at(self, patient_id: int, at: datetime) -> list[str]: ...

    def visits(self, patient_id: int, numbers) -> list[tuple[dict, list[dict]]]: ...

    def last_dmp_results(self, patient_id: int, user: str, at: datetime) -> list[dict]: ...

    def patient_history(self, patient_id: int) -> dict: ...

    def add_facts(self, patient_id: int, rows: list[dict]) -> None: ...

    def put_visit(self, patient_id: int, row: dict, movements: list[dict]) -> None: ...

    def cancel_consents_of_visit(self, patient_id: int, visit: str) -> None: ...

    def add_dmp_result(self, patient_id: int, row: dict) -> None: ...

    def add_break_glass(self, patient_id: int, row: dict) -> None: ...


@runtime_checkable
class UnitOfWork(Journal, Patients, History, Protocol):
    """One transaction of the store, as the pipeline uses it."""


SEAMS = (Journal, Patients, History)
