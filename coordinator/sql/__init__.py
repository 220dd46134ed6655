"""The coordinator's store on SQLite or PostgreSQL, one module per concept behind the `Store`
protocol; the SQL is written once, in what both engines share.

store       SqlStore: the protocol's methods, each handed to the store's thread or process
thread      the one thread that owns the connection, with group commit
process     that thread's work in a process of its own (no GIL shared with the HTTP side)
database    the connection, settings and caches every call gets; one transaction per call
connection  what the SQL runs on: sqlite3's connection, or postgres.PgConnection
schema      tables, migrations, opening a file (SQLite)
postgres    PostgreSQL behind sqlite3's calls; postgres_schema: its tables; moving: a file
            copied into an empty PostgreSQL database (`osaas coordinator migrate`)
peers       registration, last seen, usage, throughput
jobs        jobs and their items, waiting per host and job
planning    which peer works on which host (rules: coordinator.host_planning)
leasing     grant, renew, release (rules: coordinator.host_leasing, leases, host_pacing)
reports     judging and merging reports (rules: leases.after_report, host_pacing, rollout)
queries     status, results and the dashboard's overviews
bundles     owners, bundles, rollouts (rules: coordinator.rollout)
"""

from coordinator.sql.schema import SCHEMA_VERSION
from coordinator.sql.store import SqlStore

__all__ = ["SCHEMA_VERSION", "SqlStore"]
