"""The message path's statements, run on the driver's cursor.

SQLAlchemy's execute costs 25–40 µs even for a statement built once; the driver's own execute costs 2–3 µs,
and a new patient takes a dozen statements. So the statements of the message path stay SQLAlchemy Core (the
one source of their SQL), are compiled once per dialect to the driver's SQL (`?` for sqlite3, `%(name)s` for
psycopg), and run on the DBAPI cursor of the unit of work's connection, inside its transaction (and its
savepoints). The bind processors (SQLite's datetime text) and literal values are SQLAlchemy's own, so the
rows are those `conn.execute` would write; driver errors are raised as SQLAlchemy's (IntegrityError,
OperationalError, a lost connection marked so), which the group commit sorts.
"""
from __future__ import annotations

from operator import itemgetter

from sqlalchemy.exc import DBAPIError


class Sql:
    """One Core statement. `columns`: for an INSERT, the columns it is given; `returns`: for an INSERT, the
    generated key it gives back (sqlite3's lastrowid; RETURNING elsewhere)."""

    __slots__ = ("stmt", "columns", "returns", "_compiled")

    def __init__(self, stmt, columns=None, returns=None):
        self.stmt, self.columns, self.returns, self._compiled = stmt, columns, returns, {}

    def compiled(self, dialect) -> "DriverSql":
        c = self._compiled.get(dialect.name)
        if c is None:
            stmt = self.stmt
            if self.returns is not None and dialect.name != "sqlite":
                stmt = stmt.returning(self.returns)
            c = self._compiled[dialect.name] = DriverSql(
                stmt.compile(dialect=dialect, column_keys=self.columns), dialect)
        return c


class DriverSql:
    """A statement as the driver takes it: its text, and how a dict of values becomes its parameters."""

    __slots__ = ("sql", "names", "literals", "processors", "_get", "_convert")

    def __init__(self, compiled, dialect):
        self.sql = compiled.string
        self.names = list(compiled.positiontup) if compiled.positional else None
        used = set(compiled.bind_names.values())
        binds = {n: b for n, b in compiled.binds.items() if n in used}
        # binds with a value of their own (`version + 1`), and the type conversions the driver needs
        self.literals = {n: b.effective_value for n, b in binds.items() if not b.required}
        self.processors = [(n, f) for n, b in binds.items()
                           if (f := b.type.dialect_impl(dialect).bind_processor(dialect)) is not None]
        # positional (sqlite3): the tuple is taken from the dict in one C call (itemgetter), then only the
        # positions that need a conversion are converted; a dozen statements a message run through here
        procs = dict(self.processors)
        if self.names:
            getter = itemgetter(*self.names)
            self._get = getter if len(self.names) > 1 else (lambda values: (getter(values),))
            # a name bound at several positions (a UNION of seeks, each bounded by the same instant) is
            # converted once
            positions: dict = {}
            for i, n in enumerate(self.names):
                if n in procs:
                    positions.setdefault(n, []).append(i)
            self._convert = tuple((tuple(at), procs[n]) for n, at in positions.items())
        else:
            self._get = self._convert = None

    def args(self, values: dict):
        if self.literals:
            values = {**self.literals, **values}
        if self._get is not None:
            row = self._get(values)
            if not self._convert:
                return row
            row = list(row)
            for at, f in self._convert:
                value = f(row[at[0]])
                for i in at:
                    row[i] = value
            return tuple(row)
        if self.processors:
            values = dict(values)
            for n, f in self.processors:
                if n in values:
                    values[n] = f(values[n])
        return values if self.names is None else ()


class DriverCursor:
    """The DBAPI cursor of a SQLAlchemy connection, inside the transaction that connection holds."""

    def __init__(self, conn):
        self.conn = conn
        self.dialect = conn.dialect
        self._error = conn.dialect.loaded_dbapi.Error
        self._cur = None

    def _cursor(self):
        if self._cur is None:
            self._cur = self.conn.connection.dbapi_connection.cursor()
        return self._cur

    def run(self, q: Sql, values: dict | None = None):
        """Execute one statement; the cursor, to fetch from."""
        c, cur = q.compiled(self.dialect), self._cursor()
        try:
            cur.execute(c.sql, c.args(values or {}))
        except self._error as e:
            raise self._wrapped(e, c.sql, cur) from e
        return cur

    def run_many(self, q: Sql, rows: list[dict]) -> None:
        c, cur = q.compiled(self.dialect), self._cursor()
        try:
            cur.executemany(c.sql, [c.args(r) for r in rows])
        except self._error as e:
            raise self._wrapped(e, c.sql, cur) from e

    def insert(self, q: Sql, values: dict) -> int:
        """Insert one row; its generated key."""
        cur = self.run(q, values)
        return cur.lastrowid if q.returns is None or self.dialect.name == "sqlite" else cur.fetchone()[0]

    def _wrapped(self, e, sql: str, cur) -> DBAPIError:
        d = self.dialect
        return DBAPIError.instance(sql, None, e, self._error, hide_parameters=True, dialect=d,
                                   connection_invalidated=d.is_disconnect(e, self.conn.connection, cur))

