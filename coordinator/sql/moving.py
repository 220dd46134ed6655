"""`osaas coordinator migrate`: an installation moved from its SQLite file into an empty
PostgreSQL database, every row with its id, so that peers' leases, owners' job numbers and
the audit log go on as they were.

The file is opened (and lifted to the current schema) as a coordinator would open it; the
database gets the same schema (`postgres_schema`). Tables are copied in an order their
references allow, each with PostgreSQL's COPY, reading the file a batch at a time, all in
one transaction: a failed move leaves the database empty. Then each identity column goes on
after the largest id copied, and the rows are counted again on both sides.

The file is only read. Stop the coordinator first: what it wrote after the copy began would
not be moved.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from coordinator.sql import postgres, schema
from coordinator.store import StoreError

log = logging.getLogger(__name__)

# Referenced tables before the tables referring to them.
TABLES = (
    "keys",
    "jobs",
    "peers",
    "bundles",
    "archives",
    "rollouts",
    "hosts",
    "job_progress",
    "units",
    "queues",
    "grants",
    "audit",
    "limits",
    "daily_urls",
    "stepped_aside",
    "unit_logs",
    "items",
    "answers",
    "plants",
    "referrers",
)
# Tables whose rows PostgreSQL numbers itself (an identity `id`), and those that keep SQLite's
# rowid as an order (`postgres_schema`).
IDENTITIES = ("keys", "jobs", "units", "audit", "unit_logs", "items", "answers")
ROWID_ORDERED = ("hosts", "bundles")
BATCH = 5000  # rows read from the file at a time


@dataclass(frozen=True, slots=True)
class Moved:
    rows: dict[str, int]  # table -> rows copied

    def summary(self) -> str:
        shown = ", ".join(
            f"{self.rows[t]} {t}" for t in ("jobs", "items", "units", "peers", "grants") if t in self.rows
        )
        return f"{sum(self.rows.values())} rows ({shown}, ...)"


def move(source: str, target: str) -> Moved:
    """Copy the SQLite store at `source` into the empty PostgreSQL database at `target`."""
    try:
        lite = schema.connect(source)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {source}: {exc}") from exc
    try:
        pg = postgres.connect(target)
        try:
            return _copy(lite, pg, postgres.shown(target))
        finally:
            pg.close()
    finally:
        lite.close()


def _copy(lite: sqlite3.Connection, pg: postgres.PgConnection, shown: str) -> Moved:
    pg.execute("BEGIN IMMEDIATE")
    try:
        holding = [t for t in TABLES if pg.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is not None]
        if holding:
            raise StoreError(f"{shown} is not empty (it holds {', '.join(holding)}): migrate into a new database")
        rows = {table: _copy_table(lite, pg, table) for table in TABLES}
        for table in IDENTITIES:
            pg.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
            )
        for table, copied in rows.items():
            counted = pg.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
            if counted is None or counted[0] != copied:
                raise StoreError(f"{table}: {copied} rows copied but {counted} arrived; nothing was moved")
        pg.execute("COMMIT")
    except BaseException:
        if pg.in_transaction:
            pg.execute("ROLLBACK")
        raise
    return Moved(rows)


def _copy_table(lite: sqlite3.Connection, pg: postgres.PgConnection, table: str) -> int:
    columns = [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
    listed = ", ".join(columns)
    order = " ORDER BY rowid" if table in ROWID_ORDERED else ""
    reading = lite.execute(f"SELECT {listed} FROM {table}{order}")
    copied = 0
    with pg.raw.cursor() as cursor, cursor.copy(f"COPY {table} ({listed}) FROM STDIN") as copy:
        while batch := reading.fetchmany(BATCH):
            for row in batch:
                copy.write_row(row)
            copied += len(batch)
    log.info("%s: %d rows", table, copied)
    return copied
