"""The store on PostgreSQL: the same SQL as on SQLite, through a connection that speaks it.

The concept modules (peers, jobs, leasing, reports, ...) are written once, in the SQL that
SQLite and PostgreSQL share, against a connection with `execute`, `executemany` and
`in_transaction`, as sqlite3 has them. `PgConnection` gives psycopg those: it turns `?`
marks into psycopg's `%s`, a write transaction (`BEGIN IMMEDIATE`) into one at REPEATABLE
READ, and hands back integers where PostgreSQL's sums are numeric, and 0/1 for Python's
booleans, so a row reads the same from either engine. Text keeps no NUL in PostgreSQL: one
becomes U+FFFD.

REPEATABLE READ is what lets several coordinators share one database: a transaction that
changes a row another committed since it began fails with a serialization error instead of
overwriting it (two coordinators granting one unit, pacing one host), and the store's
thread runs the call again (`thread.run_group`). One coordinator alone never meets one.

The schema is in `postgres_schema`; `connect` opens a database and creates or lifts it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg.adapt import Dumper, Loader
from psycopg.types.string import StrDumperUnknown

from coordinator.sql import postgres_schema
from coordinator.store import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

SCHEMES = ("postgresql://", "postgres://")

# A write call's transaction; SQLite's BEGIN IMMEDIATE takes its one write lock up front.
_WRITE = "BEGIN ISOLATION LEVEL REPEATABLE READ"
_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# Errors after which the same call, run again in a new transaction, may well succeed.
RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)


def is_postgres(location: str) -> bool:
    """Does the store's location name a PostgreSQL database (a libpq connection URI)?"""
    return location.startswith(SCHEMES)


def shown(location: str) -> str:
    """The location without its password, for logs and errors."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", location)


class _NumericLoader(Loader):
    """numeric as int when whole (PostgreSQL sums integers as numeric), else float."""

    def load(self, data: Any) -> Any:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


class _BoolAsInt(Dumper):
    """Python's booleans as the 0/1 integers the schema keeps (SQLite has no booleans)."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class _TextWithoutNul(StrDumperUnknown):
    """Text as PostgreSQL can keep it: a NUL (which SQLite keeps, and a hostile peer may send
    in an error or a log) becomes U+FFFD."""

    def dump(self, obj: Any) -> Any:
        return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)


_NUMBERED = re.compile(r"\?(\d+)")


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """A statement in the shared SQL, as psycopg takes it: `?` as `%s`, a numbered `?N` (which
    SQLite lets a statement use more than once) as `%(pN)s` (see `_parameters`)."""
    if sql == "BEGIN IMMEDIATE":
        return _WRITE
    if sql == "BEGIN":
        return _READ
    escaped = sql.replace("%", "%%")
    if _numbered(sql):
        return _NUMBERED.sub(r"%(p\1)s", escaped)
    return escaped.replace("?", "%s")


@functools.lru_cache(maxsize=4096)
def _numbered(sql: str) -> bool:
    return _NUMBERED.search(sql) is not None


def _parameters(sql: str, params: Sequence[Any]) -> Sequence[Any] | dict[str, Any] | None:
    if not params:
        return None
    if _numbered(sql):
        return {f"p{number}": value for number, value in enumerate(params, 1)}
    return params


class PgConnection:
    """A psycopg connection in autocommit mode (the store says BEGIN and COMMIT itself)
    behind sqlite3's calls."""

    def __init__(self, raw: psycopg.Connection[Any], location: str) -> None:
        self.raw = raw
        self._location = location

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        if not sql.startswith("BEGIN"):
            with self._lost():
                return self.raw.execute(translate(sql), _parameters(sql, params))
        # A transaction begins: the place to find out that the server went away meanwhile (a
        # restart, a failover) and connect again, nothing of the call done yet.
        try:
            return self.raw.execute(translate(sql))
        except psycopg.OperationalError:
            if not (self.raw.broken or self.raw.closed):
                raise
        self._reconnect()
        with self._lost():
            return self.raw.execute(translate(sql))

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        with self._lost():
            cursor.executemany(translate(sql), [_parameters(sql, one) or () for one in params])
        return cursor

    @property
    def in_transaction(self) -> bool:
        # UNKNOWN: the connection is gone, and its transaction with it.
        return self.raw.info.transaction_status not in (pq.TransactionStatus.IDLE, pq.TransactionStatus.UNKNOWN)

    @contextlib.contextmanager
    def _lost(self) -> Iterator[None]:
        """A statement that lost the connection fails its call as unavailable (503: ask again),
        not as a bug; the next transaction connects again."""
        try:
            yield
        except psycopg.OperationalError as exc:
            if self.raw.broken or self.raw.closed:
                raise StoreUnavailable(f"lost the connection to {shown(self._location)}: {_first_line(exc)}") from exc
            raise

    def close(self) -> None:
        self.raw.close()

    def _reconnect(self) -> None:
        log.warning("the connection to %s was lost; connecting again", shown(self._location))
        self.raw.close()
        self.raw = _open(self._location)


def connect(location: str) -> PgConnection:
    """Open the database at `location`, its schema created or lifted to the current one."""
    conn = PgConnection(_open(location), location)
    try:
        postgres_schema.install(conn, shown(location))
    except BaseException:
        conn.close()
        raise
    return conn


def _open(location: str) -> psycopg.Connection[Any]:
    try:
        raw = psycopg.connect(location, autocommit=True, application_name="osaas-coordinator", connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot connect to {shown(location)}: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {shown(location)}: {_first_line(exc)}") from exc
    raw.adapters.register_loader("numeric", _NumericLoader)
    raw.adapters.register_dumper(bool, _BoolAsInt)
    raw.adapters.register_dumper(str, _TextWithoutNul)
    return raw


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
