"""A failure of the store, sorted, so that the engine (engine/commit.py) need not know SQLAlchemy.

- lost: the connection or the whole transaction is unusable: the connection was invalidated, the driver
  reports an operational error, a lock conflict ended the transaction, or SQLAlchemy says the connection or
  transaction can no longer be used. Nothing of the transaction holds.
- conflict (a lost transaction): PostgreSQL gave up a lock wait (deadlock, 40P01) or a serialisation
  (40001); the same transaction may simply run again.
- refused: the store refused one statement (a constraint, a value too long): the operation's own fault;
  a refused value (PostgreSQL's "data exception" class, SQLSTATE 22…) is the data's fault.
Anything else is not the store's error but the operation's own.
"""
from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InvalidRequestError, OperationalError, ResourceClosedError

# SQLAlchemy's own errors that say the connection or the transaction is unusable (a DBAPIError is sorted by
# what the driver said; any other error, SQLAlchemy's StatementError included, is the operation's own)
_UNUSABLE = (InvalidRequestError, ResourceClosedError)
_CONFLICTS = ("40P01", "40001")


def sqlstate(e: BaseException) -> str | None:
    """The SQLSTATE the driver gave, when it gave one (PostgreSQL)."""
    return getattr(getattr(e, "orig", None), "sqlstate", None) if isinstance(e, DBAPIError) else None


def conflict(e: BaseException) -> bool:
    return isinstance(e, DBAPIError) and sqlstate(e) in _CONFLICTS


def lost(e: BaseException) -> bool:
    if isinstance(e, DBAPIError):
        return e.connection_invalidated or conflict(e) or isinstance(e, OperationalError)
    return isinstance(e, _UNUSABLE)


def refused(e: BaseException) -> str | None:
    """The first line of the store's own words when it refused a statement (not lost); None otherwise."""
    if isinstance(e, DBAPIError) and not lost(e):
        return (str(e.orig).splitlines() or [""])[0][:200]
    return None


def value_refused(e: BaseException) -> bool:
    """PostgreSQL's "data exception" class (SQLSTATE 22…): a value the store cannot take as it is."""
    return isinstance(e, DBAPIError) and str(sqlstate(e) or "").startswith("22")
