"""The SQLite store: WAL, foreign keys, one transaction per state change.

sqlite3 is blocking, so the connection lives on one dedicated thread and every call is handed
to it (`store_thread`); the event loop never waits on the disk. One thread also means one
writer, which is what SQLite wants anyway. Calls that queue up while the thread is busy commit
together (group commit), each call's transaction a savepoint inside the group's. A coordinator
(`api.serve`) runs that thread's work in a process of its own (`store_process`), so the store
and the HTTP side do not share one GIL; the calls and their answers are the same. The rules
themselves live in `leases`, `linkcheck_jobs`, `rollout`, `assignment`, `host_pacing` and
`unit_sizing`; this module applies them.

How work is scheduled (docs/operators.md says it for operators):

- A job's items wait per host (their unit key: the origin) in id order, in a queue per host and
  job whose cursor says up to which item they were taken into units.
- `rebalance` assigns every host with work to one active peer (`assignment.rebalance`, weights
  the peers' capacities) and keeps the result in `hosts`, so it survives restarts. It runs
  every few seconds (the API's background task), when peers registered, and inside `lease`
  when hosts without a peer got work or the asking peer holds no host.
- `lease` walks the asking peer's hosts, longest-rested first. A host gives at most one unit
  and only when `host_pacing.may_lease` allows (no live lease on it, its pause over): a unit
  released or failed earlier, as it is, else a new one of up to `unit_sizing.unit_size` (the
  peer's throughput) waiting items of the host's oldest job: the next range of its queue.
- A report paces the host (`after_unit`, throttling counted from the items' statuses), feeds
  the peer's throughput, and makes what it left undone a unit of its own; an expiry or release
  paces the host as abandoned. A live lease whose holder went silent near the end of its job
  (`unit_sizing.is_straggler`) is taken back and granted again with a new token.

Schema history (PRAGMA user_version); an older file is migrated in one transaction on open:
    1  jobs, units, items, referrers, peers
    2  owners, bundles (per-version unit counters), rollouts (per bundle name),
       jobs.bundle_version (NULL: the job follows its bundle's rollout)
    3  hosts (assigned peer and pace per unit key); peers.capacity, usage (used, cap,
       down_rate, up_rate, usage_at) and throughput; units.leased_at and renewed_at;
       job_progress (open items per job); items wait with unit_id NULL until a lease forms
       their unit;
       indexes for per-host leasing
    4  units built again with its state rule as comparisons (no temporary table per write)
    5  queues (per host and job: up to which item units took); units.first_item and
       last_item (a unit's items are that range) instead of items.unit_id
"""

from __future__ import annotations

import functools
import logging
import math
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

from coordinator import assignment, host_pacing, leases, linkcheck_jobs, rollout, unit_sizing
from coordinator.host_pacing import HostPace, UnitSummary
from coordinator.leases import UnitLease, UnitState, Verdict
from coordinator.linkcheck_jobs import ItemResult, JobInput, NewItem
from coordinator.rollout import Rollout, RolloutState, Tally
from coordinator.store import (
    BYTES_PER_ITEM,
    DEFAULT_PEER_CAPACITY,
    DEFAULT_UNIT_SIZE,
    PEER_QUIET_SECONDS,
    REBALANCE_INTERVAL,
    RENEWS_PER_LEASE,
    Conflict,
    HostOverview,
    InvalidInput,
    NotFound,
    NotOwner,
    Owner,
    PeerOverview,
    PublishedBundle,
    StaleLease,
    StoreError,
    UnknownPeer,
    unknown_owner,
)
from coordinator.store_process import Hosted, StoreProcess
from coordinator.store_thread import StoreThread
from overlay.wire import (
    ANY_WORKLOAD,
    BundleRef,
    BundleStatus,
    JobStatus,
    Lease,
    PeerUsage,
    RegisterRequest,
    Report,
    ReportResponse,
    ReportVerdict,
    VersionStats,
    decode,
    encode,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# sqlite3 looks for an adapter for every parameter that is not an int, float or str, and an
# unregistered type costs it two failed attribute lookups with formatted error messages. NULLs
# and blobs are most of a result row's parameters: register them as they are.
sqlite3.register_adapter(type(None), lambda value: value)
sqlite3.register_adapter(bytes, bytes)

SCHEMA_VERSION = 5
_MAX_ID = 2**63 - 1  # SQLite's INTEGER range; msgpack can carry larger numbers
_OWNER_KEY_RE = re.compile(r"[0-9a-f]{64}")
_MAX_OWNER_NAME = 64
_BUNDLE_COLUMNS = "name, version, owner_key, info_hash, archive_sha256, manifest, published_at"
# A lease replans at most this often (seconds of its `now`); the API's task replans anyway.
_MIN_REPLAN = REBALANCE_INTERVAL / 2
# Planning takes at most this share of the store's time: after a plan that took c seconds the
# next waits c / PLAN_SHARE seconds (real time), unless a peer the last plan did not know asks.
# Plans under CHEAP_PLAN seconds (a few thousand hosts) are never held back.
PLAN_SHARE = 0.1
CHEAP_PLAN = 0.05
_THROTTLED = frozenset({429, 503})  # statuses by which a website asks to be left alone
_SQL_VARIABLES = 500  # keys per IN (...) list, well under SQLite's limit
_JOB_INPUTS_KEPT = 64  # parsed job inputs kept in memory: they never change
_JOBS_KEPT = 4096  # (bundle name, pinned version, unit size) of jobs kept in memory: same
# A unit's open items: the items of its host and job in its range not done yet (parameters:
# unit_key, job_id, first_item, last_item). An item is finished only as part of a unit.
_UNIT_ITEMS = "unit_key = ? AND job_id = ? AND id BETWEEN ? AND ? AND done = 0"
# Does queue `q` hold items not taken into a unit yet? (Done items above a cursor are left by
# files of schema 4 only.)
_WAITING = "EXISTS (SELECT 1 FROM items WHERE unit_key = q.unit_key AND job_id = q.job_id AND id > q.taken_through AND done = 0)"
# The waiting items themselves, each beside its queue `q`.
_QUEUED_ITEMS = (
    "queues q JOIN items ON items.unit_key = q.unit_key AND items.job_id = q.job_id"
    " AND items.id > q.taken_through AND items.done = 0"
)

_SCHEMA = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    workload TEXT NOT NULL,
    input BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done')),
    created_at REAL NOT NULL,
    finished_at REAL,
    unit_size INTEGER NOT NULL
);
CREATE TABLE units (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    unit_key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done')),
    token INTEGER NOT NULL DEFAULT 0,
    peer_id TEXT,
    expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX units_by_state ON units(state, id);
CREATE INDEX units_by_job ON units(job_id, state);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    url TEXT NOT NULL,
    unit_key TEXT NOT NULL,
    depth INTEGER NOT NULL,
    crawl INTEGER NOT NULL,
    unit_id INTEGER REFERENCES units(id),
    result TEXT,
    status INTEGER,
    final_url TEXT,
    redirects BLOB,
    error TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    UNIQUE (job_id, url)
);
CREATE INDEX items_by_unit ON items(unit_id);
CREATE INDEX items_unassigned ON items(job_id, id) WHERE unit_id IS NULL AND done = 0;
CREATE TABLE referrers (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    item_id INTEGER NOT NULL REFERENCES items(id),
    referrer_url TEXT NOT NULL,
    UNIQUE (job_id, item_id, referrer_url)
);
CREATE TABLE peers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    slots INTEGER NOT NULL,
    workloads BLOB NOT NULL,
    version TEXT NOT NULL,
    registered_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
"""

# Schema version -> the statements that lift the previous version to it.
_MIGRATIONS = {
    2: """
CREATE TABLE owners (
    name TEXT PRIMARY KEY,
    public_key TEXT NOT NULL UNIQUE,
    added_at REAL NOT NULL
);
CREATE TABLE bundles (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    owner_key TEXT NOT NULL,
    info_hash BLOB NOT NULL,
    archive_sha256 BLOB NOT NULL,
    manifest BLOB NOT NULL,
    published_at REAL NOT NULL,
    units_ok INTEGER NOT NULL DEFAULT 0,
    units_failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);
CREATE TABLE rollouts (
    name TEXT PRIMARY KEY,
    owner_key TEXT NOT NULL,
    stable TEXT NOT NULL,
    candidate TEXT,
    percent INTEGER NOT NULL CHECK (percent BETWEEN 0 AND 100),
    state TEXT NOT NULL CHECK (state IN ('stable', 'rolling_out', 'rolled_back')),
    message TEXT NOT NULL,
    candidate_ok INTEGER NOT NULL DEFAULT 0,
    candidate_failed INTEGER NOT NULL DEFAULT 0
);
ALTER TABLE jobs ADD COLUMN bundle_version TEXT;
""",
    # Units are formed at lease time now: items wait with unit_id NULL. Units and items a
    # schema 2 file holds stay as they are: its queued units are leased as they are. Every
    # index costs a page write per unit at each commit, so there are few: a job counts its
    # open items instead of indexing them (in a table of its own: a jobs row holds the job's
    # input, which an update would rewrite), and hosts are indexed by peer, not by pace.
    3: """
ALTER TABLE peers ADD COLUMN capacity REAL NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN used INTEGER;
ALTER TABLE peers ADD COLUMN cap INTEGER;
ALTER TABLE peers ADD COLUMN down_rate REAL;
ALTER TABLE peers ADD COLUMN up_rate REAL;
ALTER TABLE peers ADD COLUMN usage_at REAL;
ALTER TABLE peers ADD COLUMN throughput REAL;
CREATE INDEX peers_by_last_seen ON peers(last_seen);
CREATE TABLE hosts (
    key TEXT PRIMARY KEY,
    peer_id TEXT REFERENCES peers(id),
    next_allowed_at REAL NOT NULL DEFAULT 0,
    crawl_delay REAL NOT NULL DEFAULT 0,
    backoff REAL NOT NULL DEFAULT 0
);
CREATE INDEX hosts_by_peer ON hosts(peer_id) WHERE peer_id IS NOT NULL;
ALTER TABLE units ADD COLUMN leased_at REAL;
ALTER TABLE units ADD COLUMN renewed_at REAL;
DROP INDEX units_by_state;
CREATE INDEX units_open ON units(unit_key, id) WHERE state != 'done';
DROP INDEX items_unassigned;
CREATE INDEX items_waiting ON items(unit_key, job_id, id) WHERE unit_id IS NULL AND done = 0;
CREATE TABLE job_progress (
    job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
    open_items INTEGER NOT NULL
);
INSERT INTO job_progress (job_id, open_items)
    SELECT jobs.id, (SELECT COUNT(*) FROM items WHERE items.job_id = jobs.id AND items.done = 0) FROM jobs;
INSERT INTO hosts (key) SELECT DISTINCT unit_key FROM items WHERE done = 0;
""",
    # `state IN (...)` in a CHECK builds a temporary table each time a units row is written
    # (every lease and report); the same rule as comparisons does not. SQLite cannot change a
    # constraint in place: the table is built again and its rows copied, ids and all (foreign
    # keys are off around a migration, so items keep pointing at the same units).
    4: """
CREATE TABLE units_4 (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    unit_key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'queued' OR state = 'leased' OR state = 'done'),
    token INTEGER NOT NULL DEFAULT 0,
    peer_id TEXT,
    expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    leased_at REAL,
    renewed_at REAL
);
INSERT INTO units_4 (id, job_id, unit_key, state, token, peer_id, expires_at, attempts, last_error,
                     leased_at, renewed_at)
    SELECT id, job_id, unit_key, state, token, peer_id, expires_at, attempts, last_error,
           leased_at, renewed_at FROM units;
DROP TABLE units;
ALTER TABLE units_4 RENAME TO units;
CREATE INDEX units_by_job ON units(job_id, state);
CREATE INDEX units_open ON units(unit_key, id) WHERE state != 'done';
""",
    # Marking each item with its unit cost a lease, per item, the row and two index entries
    # (and the report the same again): most of the store's time. Now a host's items of a job
    # are taken in id order: a queue row per (host, job) says up to which item they were
    # taken, and a unit is the range of them it took (the items of its range not done). New
    # items always get higher ids, so a range never gains an item. Items a partial report
    # left out form a unit of their own.
    5: """
ALTER TABLE units ADD COLUMN first_item INTEGER;
ALTER TABLE units ADD COLUMN last_item INTEGER;
UPDATE units SET first_item = (SELECT MIN(id) FROM items WHERE unit_id = units.id AND done = 0),
                 last_item = (SELECT MAX(id) FROM items WHERE unit_id = units.id AND done = 0)
    WHERE state != 'done';
CREATE TABLE queues (
    unit_key TEXT NOT NULL,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    taken_through INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (unit_key, job_id)
) WITHOUT ROWID;
INSERT INTO queues (unit_key, job_id, taken_through)
    SELECT unit_key, job_id, COALESCE(MIN(CASE WHEN unit_id IS NULL AND done = 0 THEN id END) - 1, MAX(id))
    FROM items GROUP BY unit_key, job_id;
DROP INDEX items_by_unit;
DROP INDEX items_waiting;
ALTER TABLE items DROP COLUMN unit_id;
CREATE INDEX items_by_host ON items(unit_key, job_id, id);
""",
}

# After migration 5, the ranges must hold what unit_id said: no open unit reaches above its
# queue's cursor (its items would be taken again) and no two open units of a host's job
# overlap. Coordinators of schema 3 and 4 keep one open unit per host and job, so this holds
# for their files; a file it fails for is left as it was.
_RANGES_OVERLAPPING = """
SELECT COUNT(*) FROM units JOIN queues ON queues.unit_key = units.unit_key AND queues.job_id = units.job_id
    WHERE units.state != 'done' AND units.last_item > queues.taken_through
UNION ALL
SELECT COUNT(*) FROM units a JOIN units b ON b.unit_key = a.unit_key AND b.job_id = a.job_id AND b.id > a.id
    WHERE a.state != 'done' AND b.state != 'done' AND a.first_item <= b.last_item AND b.first_item <= a.last_item
"""


class _Span(NamedTuple):
    """Where a unit's items are: its host's items of its job with ids from first to last
    (those not done are its open items; `_UNIT_ITEMS`). None for an empty range."""

    key: str
    job_id: int
    first: int | None
    last: int | None


@dataclass(frozen=True, slots=True)
class _StoredUnit:
    job_id: int
    unit_key: str
    leased_at: float | None
    lease: UnitLease


@dataclass(frozen=True, slots=True)
class _Job:
    """What never changes about a job and leasing needs."""

    workload: str  # its bundle's name
    pinned: str | None  # its bundle version; None: follows the rollout
    unit_size: int  # the most items in one of its units


@dataclass(slots=True)
class _Asking:
    """One lease call: who asks, for what, and what the call has looked up so far."""

    peer_id: str
    now: float
    lease_seconds: float
    throughput: float | None
    names: tuple[str, ...] | None  # the bundle names the peer runs; None: any
    bundles: dict[tuple[str, str | None], BundleRef | None] = field(default_factory=dict)

    def runs(self, job: _Job) -> bool:
        return self.names is None or job.workload in self.names


class _Incoming(NamedTuple):
    """A report as the store's thread (or process) takes it: its link-check items already
    parsed on the caller's side, so the store's own time goes to its rows. `items` is the
    refusal's message when the payload is malformed (raised only where it was before: after
    the lease is judged); empty when the exit code says there are none."""

    unit_id: int
    token: int
    exit_code: int
    items: list[ItemResult] | str
    error: str | None
    bundle_version: str | None
    crawl_delay: float | None


def _incoming(report: Report) -> _Incoming:
    items: list[ItemResult] | str = []
    if report.exit_code in (0, 1):
        try:
            items = linkcheck_jobs.parse_items(report.payload)
        except InvalidInput as exc:
            items = str(exc)
    return _Incoming(
        report.unit_id, report.token, report.exit_code, items, report.error, report.bundle_version, report.crawl_delay
    )


class _Granted(NamedTuple):
    """A lease as the store's thread (or process) hands it over: plain values, cheap to pass
    on; the caller's side builds the `Lease` and its payload (`lease`)."""

    unit_id: int
    token: int
    job_id: int
    workload: str
    items: list[tuple[str, int]]  # (url, crawl) in the unit's order
    expires_at: float
    bundle: BundleRef | None
    host: str | None

    def lease(self) -> Lease:
        return Lease(
            unit_id=self.unit_id,
            token=self.token,
            job_id=self.job_id,
            workload=self.workload,
            payload=linkcheck_jobs.unit_payload(self.job_id, ((url, bool(crawl)) for url, crawl in self.items)),
            expires_at=self.expires_at,
            bundle=self.bundle,
            host=self.host,
        )


@dataclass(slots=True)
class _ReportedUnit:
    """A unit a call's reports name, as loaded for the call and changed by its reports."""

    job_id: int
    key: str  # its host (unit_key)
    leased_at: float | None
    lease: UnitLease
    items: dict[str, tuple[int, int, bool]] = field(default_factory=dict)  # open: url -> (id, depth, crawl)


@dataclass(slots=True)
class _Reported:
    """The rows one call's reports touch, loaded once, and what the reports change in them,
    written once at the end of the call (`SqliteStore._write_reported`): a batch of a hundred
    reports of one job then updates its progress once, not a hundred times."""

    peer_id: str
    throughput_before: float | None
    throughput: float | None = None  # the peer's items/s estimate after the reports taken so far
    units: dict[int, _ReportedUnit] = field(default_factory=dict)
    paces: dict[str, HostPace] = field(default_factory=dict)  # hosts' paces, as changed so far
    stored_paces: dict[str, HostPace] = field(default_factory=dict)  # as loaded
    leases: dict[int, UnitLease] = field(default_factory=dict)  # units changed: id -> lease after
    finished: list[tuple[Any, ...]] = field(default_factory=list)  # item results, by item id
    failed: list[tuple[str, int]] = field(default_factory=list)  # (error, item id): finished unchecked
    left_out: list[_Span] = field(default_factory=list)  # what partial reports left undone: new units
    outcomes: list[tuple[str, str, bool]] = field(default_factory=list)  # (bundle, version, ok) per unit
    closed: dict[int, int] = field(default_factory=dict)  # items finished per job
    rollouts: dict[str, Rollout | None] = field(default_factory=dict)  # as they were when the call began

    def __post_init__(self) -> None:
        self.throughput = self.throughput_before

    def pace(self, key: str, change: Callable[[HostPace], HostPace]) -> None:
        """Apply a pacing rule to a host. Items that are not http(s) URLs share one key and
        reach no website: nothing to pace."""
        if key != linkcheck_jobs.NOT_HTTP_KEY:
            self.paces[key] = change(self.paces.get(key, HostPace()))


class SqliteStore:
    """`coordinator.store.Store` on one SQLite file."""

    def __init__(
        self,
        path: Path | str,
        *,
        unit_size: int = DEFAULT_UNIT_SIZE,
        max_attempts: int = 5,
        host_min_delay: float = host_pacing.DEFAULT_MIN_DELAY,
        epsilon: float = assignment.DEFAULT_EPSILON,
        own_process: bool = False,
    ) -> None:
        if unit_size < 1 or max_attempts < 1:
            raise ValueError("unit_size and max_attempts must be at least 1")
        if not 0 <= host_min_delay <= host_pacing.MAX_MIN_DELAY:
            raise ValueError(f"host_min_delay must be 0..{host_pacing.MAX_MIN_DELAY:g} seconds")
        if not 0 < epsilon <= assignment.MAX_EPSILON:
            raise ValueError(f"epsilon must be above 0 and at most {assignment.MAX_EPSILON:g}")
        self._path = str(path)
        self._unit_size = unit_size
        self._min_delay = host_min_delay  # the pause every host gets between units
        self._epsilon = epsilon  # a peer's load stays within (1 + epsilon) times its fair share
        self._max_attempts = max_attempts
        # own_process: the calls run in a child process (`store_process`), else on a thread.
        self._own_process = own_process
        self._runner: StoreThread | StoreProcess | None = None
        self._conn: sqlite3.Connection | None = None
        # Touched by the store's thread only. A replan is due after a restart, when peers
        # registered, and when hosts without a peer got work.
        self._replan = True
        self._planned_at = -math.inf
        self._planned_peers: frozenset[str] = frozenset()  # the active peers of the last plan
        self._plan_seconds = 0.0  # what the last plan took, and when it ended (time.monotonic)
        self._planned_mono = -math.inf
        self._job_inputs: dict[int, JobInput] = {}
        self._jobs: dict[int, _Job] = {}

    # ---- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._runner is not None:
            raise RuntimeError("store is already open")
        if self._own_process:
            options = {
                "unit_size": self._unit_size,
                "max_attempts": self._max_attempts,
                "host_min_delay": self._min_delay,
                "epsilon": self._epsilon,
            }
            self._runner = StoreProcess(functools.partial(_hosted, self._path, options))
        else:
            self._runner = StoreThread(lambda: self._conn, on_rollback=self._forget_cached)
        try:
            await self._runner.call(self._open, alone=True)
        except BaseException:
            self._runner.stop()
            self._runner = None
            raise
        log.info("store opened at %s", self._path)

    async def close(self) -> None:
        if self._runner is None:
            return
        try:
            await self._runner.call(self._close, alone=True)
        finally:
            self._runner.stop()
            self._runner = None

    async def failure(self) -> str:
        """Wait until the store can no longer work, and say why: its process died (with
        own_process). A store on a thread never fails this way: this waits for ever."""
        if self._runner is None:
            raise RuntimeError("store is not open")
        return await self._runner.failure()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._runner is None:
            raise RuntimeError("store is not open")
        return await self._runner.call(fn, *args)

    def _open(self) -> None:
        try:
            self._conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self._path}: {exc}") from exc
        self._replan = True
        self._planned_at = -math.inf

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged report must survive a power cut, since the peer then drops it.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            # Leasing and reporting touch items, units and hosts all over the file: keep its hot
            # pages in memory (the default cache is 2 MB), up to 64 MB, and map up to 256 MB.
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA mmap_size=268435456")
            conn.execute("PRAGMA wal_autocheckpoint=10000")
            # Each call inside a group commit is a savepoint, whose undo journal would spill
            # to a temporary file past 64 KiB (a lease touches hundreds of pages): keep it,
            # and SQLite's other temporary data, in memory.
            conn.execute("PRAGMA temp_store=MEMORY")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self._path} was written by a newer osaas (schema {version}); upgrade osaas")
            if version < SCHEMA_VERSION:
                self._migrate(conn, version)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        """Create the schema, or lift an older file to the current one, in one transaction."""
        steps = [_SCHEMA] if version == 0 else []
        steps += [_MIGRATIONS[v] for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1)]
        # Foreign keys off while tables are built again (a drop would check them); the copy
        # keeps every id, and the check before commit makes sure of it.
        conn.execute("PRAGMA foreign_keys=OFF")
        try:
            conn.executescript(f"BEGIN IMMEDIATE; {' '.join(steps)} PRAGMA user_version={SCHEMA_VERSION};")
            broken = conn.execute("PRAGMA foreign_key_check").fetchone()
            if broken is not None:
                conn.execute("ROLLBACK")
                raise StoreError(f"{self._path}: migration to schema {SCHEMA_VERSION} broke a reference in {broken[0]}")
            overlapping = sum(count for (count,) in conn.execute(_RANGES_OVERLAPPING))
            if overlapping:
                conn.execute("ROLLBACK")
                raise StoreError(
                    f"{self._path}: cannot migrate to schema {SCHEMA_VERSION}: {overlapping} open units share items;"
                    " finish its jobs with the osaas that wrote it"
                )
            conn.execute("COMMIT")
        finally:
            conn.execute("PRAGMA foreign_keys=ON")
        if version:
            log.info("migrated %s from schema %d to %d", self._path, version, SCHEMA_VERSION)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        assert conn is not None, "store used before open()"
        if conn.in_transaction:
            # Inside a group commit (coordinator.store_thread): this call's changes are a
            # savepoint, taken back alone if it fails; the group commits them with the others.
            conn.execute("SAVEPOINT call")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK TO call")
                conn.execute("RELEASE call")
                self._forget_cached()
                raise
            conn.execute("RELEASE call")
            return
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._forget_cached()
            raise

    def _forget_cached(self) -> None:
        """After a rollback: what the caches learned inside it may never have been (a job id
        taken back is given to the next job), and a plan taken back must be made again."""
        self._jobs.clear()
        self._job_inputs.clear()
        self._replan = True

    # ---- peers -------------------------------------------------------------------------

    async def register_peer(self, peer_id: str, request: RegisterRequest, now: float) -> None:
        await self._run(self._register_peer, peer_id, request, now)

    def _register_peer(self, peer_id: str, request: RegisterRequest, now: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO peers (id, name, slots, workloads, version, registered_at, last_seen, capacity)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET name = excluded.name, slots = excluded.slots,"
                " workloads = excluded.workloads, version = excluded.version, last_seen = excluded.last_seen,"
                " capacity = excluded.capacity",
                (
                    peer_id,
                    request.name,
                    request.slots,
                    encode(request.workloads),
                    request.version,
                    now,
                    now,
                    request.capacity,
                ),
            )
        self._replan = True

    @staticmethod
    def _touch_peer(conn: sqlite3.Connection, peer_id: str, now: float) -> None:
        if conn.execute("UPDATE peers SET last_seen = ? WHERE id = ?", (now, peer_id)).rowcount == 0:
            raise UnknownPeer("register first (POST /v1/peers/register)")

    def _record_usage(self, conn: sqlite3.Connection, peer_id: str, usage: PeerUsage, now: float) -> None:
        """Keep what the peer says of its budget; a new capacity is a new weight: replan."""
        (capacity,) = conn.execute("SELECT capacity FROM peers WHERE id = ?", (peer_id,)).fetchone()
        if usage.capacity > 0 and usage.capacity != capacity:
            capacity = usage.capacity
            self._replan = True
        conn.execute(
            "UPDATE peers SET capacity = ?, used = ?, cap = ?, down_rate = ?, up_rate = ?, usage_at = ? WHERE id = ?",
            (capacity, usage.used, usage.cap, usage.down_rate, usage.up_rate, now, peer_id),
        )

    @staticmethod
    def _throughput(conn: sqlite3.Connection, peer_id: str | None) -> float | None:
        row = conn.execute("SELECT throughput FROM peers WHERE id = ?", (peer_id,)).fetchone()
        return None if row is None else row[0]

    # ---- jobs --------------------------------------------------------------------------

    async def create_job(self, workload: str, input: dict[str, Any], now: float, version: str | None = None) -> int:
        return await self._run(self._create_job, workload, input, now, version)

    def _create_job(self, workload: str, input: dict[str, Any], now: float, version: str | None) -> int:
        """Link checking is the only job splitter there is, so whatever bundle a job names,
        its input is split as a link-check job; a bundle with another kind of job needs its
        own splitter here first."""
        with self._transaction() as conn:
            self._check_job_bundle(conn, workload, version)
            job = linkcheck_jobs.parse_job_input(input)
            job_id = conn.execute(
                "INSERT INTO jobs (workload, input, state, created_at, unit_size, bundle_version)"
                " VALUES (?, ?, 'running', ?, ?, ?)",
                (workload, encode(job.to_obj()), now, self._unit_size, version),
            ).lastrowid
            assert job_id is not None
            self._insert_items(conn, job_id, linkcheck_jobs.seed_items(job))
        log.info(
            "job %d created: %s %s, %d seeds, depth %s",
            job_id,
            workload,
            version or "(rollout)",
            len(job.urls),
            job.depth,
        )
        return job_id

    @staticmethod
    def _check_job_bundle(conn: sqlite3.Connection, name: str, version: str | None) -> None:
        if conn.execute("SELECT 1 FROM rollouts WHERE name = ?", (name,)).fetchone() is None:
            raise InvalidInput(
                f"no bundle named {name!r} is published on this coordinator; publish it with `osaas bundle publish`"
            )
        if (
            version is not None
            and not conn.execute("SELECT 1 FROM bundles WHERE name = ? AND version = ?", (name, version)).fetchone()
        ):
            raise InvalidInput(f"bundle {name!r} has no version {version!r} on this coordinator")

    def _insert_items(self, conn: sqlite3.Connection, job_id: int, items: list[NewItem]) -> None:
        """Add items, waiting for a lease to form their units; a host without a peer that now
        has work calls for a replan."""
        if not items:
            return
        added = conn.executemany(
            "INSERT OR IGNORE INTO items (job_id, url, unit_key, depth, crawl) VALUES (?, ?, ?, ?, ?)",
            [(job_id, i.url, i.unit_key, i.depth, i.crawl) for i in items],
        ).rowcount
        conn.execute(
            "INSERT INTO job_progress (job_id, open_items) VALUES (?, ?)"
            " ON CONFLICT (job_id) DO UPDATE SET open_items = open_items + excluded.open_items",
            (job_id, added),
        )
        keys = sorted({i.unit_key for i in items})
        conn.executemany("INSERT OR IGNORE INTO hosts (key) VALUES (?)", [(key,) for key in keys])
        conn.executemany(
            "INSERT OR IGNORE INTO queues (unit_key, job_id) VALUES (?, ?)", [(key, job_id) for key in keys]
        )
        for chunk in _chunks(keys):
            if self._replan:
                break
            self._replan = (
                conn.execute(
                    f"SELECT 1 FROM hosts WHERE peer_id IS NULL AND key IN ({', '.join('?' * len(chunk))}) LIMIT 1",
                    chunk,
                ).fetchone()
                is not None
            )

    def _job_input(self, conn: sqlite3.Connection, job_id: int) -> JobInput:
        job = self._job_inputs.get(job_id)
        if job is None:
            (raw,) = conn.execute("SELECT input FROM jobs WHERE id = ?", (job_id,)).fetchone()
            job = linkcheck_jobs.parse_job_input(decode(raw))
            if len(self._job_inputs) >= _JOB_INPUTS_KEPT:
                self._job_inputs.pop(next(iter(self._job_inputs)))
            self._job_inputs[job_id] = job
        return job

    def _job(self, conn: sqlite3.Connection, job_id: int) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            row = conn.execute(
                "SELECT workload, bundle_version, unit_size FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            job = _Job(*row)
            if len(self._jobs) >= _JOBS_KEPT:
                self._jobs.pop(next(iter(self._jobs)))
            self._jobs[job_id] = job
        return job

    @staticmethod
    def _items_closed(conn: sqlite3.Connection, job_id: int, count: int, now: float) -> None:
        """`count` items of the job were just finished; the job is done when none is open."""
        if count <= 0:
            return
        (left,) = conn.execute(
            "UPDATE job_progress SET open_items = open_items - ? WHERE job_id = ? RETURNING open_items", (count, job_id)
        ).fetchone()
        if (
            left <= 0
            and conn.execute(
                "UPDATE jobs SET state = 'done', finished_at = ? WHERE id = ? AND state = 'running'", (now, job_id)
            ).rowcount
        ):
            conn.execute("DELETE FROM queues WHERE job_id = ?", (job_id,))  # nothing waits in them
            log.info("job %d done", job_id)

    # ---- which peer works on which host --------------------------------------------------

    async def rebalance(self, now: float, *, only_if_needed: bool = False, paced: bool = False) -> None:
        await self._run(self._rebalance, now, only_if_needed, paced)

    def _rebalance(self, now: float, only_if_needed: bool, paced: bool = False) -> None:
        if only_if_needed and not self._replan:
            return
        if paced and not self._plan_rested():
            return
        with self._transaction() as conn:
            self._plan(conn, now)

    def _plan_rested(self) -> bool:
        """Has the store rested long enough since the last plan (PLAN_SHARE)?"""
        if self._plan_seconds < CHEAP_PLAN:
            return True
        return time.monotonic() - self._planned_mono >= self._plan_seconds / PLAN_SHARE

    def _plan(self, conn: sqlite3.Connection, now: float) -> None:
        """Assign every host with work to an active peer; sticky, so only what must move moves.

        Weights are capacities in bytes/s (DEFAULT_PEER_CAPACITY for a peer that did not say);
        demand is a host's unfinished items (waiting, queued or leased). The demand floor is
        the items the active peers get through in one planning interval, at BYTES_PER_ITEM.
        A peer that does not run every bundle of the running jobs gets no host: it could be
        given one whose work it never leases, and that host would wait as long as it is active.
        """
        started = time.monotonic()
        running = {name for (name,) in conn.execute("SELECT DISTINCT workload FROM jobs WHERE state = 'running'")}
        active: dict[str, float] = {}
        peers: dict[str, float] = {}
        for peer_id, capacity, workloads in conn.execute(
            "SELECT id, capacity, workloads FROM peers WHERE last_seen >= ? OR id IN"
            " (SELECT peer_id FROM units WHERE state != 'done' AND state = 'leased' AND expires_at > ?)",
            (now - PEER_QUIET_SECONDS, now),
        ):
            active[peer_id] = capacity if capacity > 0 else DEFAULT_PEER_CAPACITY
            if _runs_all(decode(workloads), running):
                peers[peer_id] = active[peer_id]
        demand: dict[str, int] = dict(
            conn.execute(f"SELECT q.unit_key, COUNT(*) FROM {_QUEUED_ITEMS} GROUP BY q.unit_key")
        )
        for key, count in conn.execute(
            "SELECT units.unit_key, COUNT(*) FROM units JOIN items ON items.unit_key = units.unit_key"
            " AND items.job_id = units.job_id AND items.id BETWEEN units.first_item AND units.last_item"
            " WHERE units.state != 'done' AND items.done = 0 GROUP BY units.unit_key"
        ):
            demand[key] = demand.get(key, 0) + count
        previous = dict(conn.execute("SELECT key, peer_id FROM hosts WHERE peer_id IS NOT NULL"))
        floor = math.fsum(peers.values()) / BYTES_PER_ITEM * REBALANCE_INTERVAL
        plan = assignment.rebalance(previous, peers, demand, epsilon=self._epsilon, demand_floor=floor)
        overflow = _overflow(plan, demand, previous)
        chosen = {**plan.assignment, **overflow}
        changed = [(host, peer) for host, peer in chosen.items() if previous.get(host) != peer]
        dropped = [(host,) for host in previous if host not in chosen]
        conn.executemany(
            "INSERT INTO hosts (key, peer_id) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET peer_id = excluded.peer_id",
            changed,
        )
        conn.executemany("UPDATE hosts SET peer_id = NULL WHERE key = ?", dropped)
        # Hosts without work and without a pause to remember are forgotten.
        rested = conn.execute(
            "SELECT key FROM hosts WHERE peer_id IS NULL AND backoff = 0 AND next_allowed_at <= ?", (now,)
        ).fetchall()
        conn.executemany("DELETE FROM hosts WHERE key = ?", [row for row in rested if row[0] not in demand])
        self._replan = False
        self._planned_at = now
        self._planned_mono = time.monotonic()
        self._plan_seconds = self._planned_mono - started
        self._planned_peers = frozenset(active)
        if changed or dropped:
            log.log(
                logging.INFO if changed else logging.DEBUG,
                "hosts assigned: %d with work on %d active peers; %d newly placed, %d moved, %d released,"
                " %d beyond every peer's cap",
                len(chosen),
                len(peers),
                len(changed) - len(plan.moved),
                len(plan.moved),
                len(dropped),
                len(overflow),
            )

    def _plan_is_due(self, conn: sqlite3.Connection, peer_id: str, now: float) -> bool:
        """Should this lease replan first? Yes at once when the asking peer was not active at
        the last plan (the set of active peers changed). Else at most every _MIN_REPLAN
        seconds, and not before the store rested from the last plan (PLAN_SHARE): when hosts
        without a peer got work or peers registered, or when the asking peer holds no host
        (another peer may have gone quiet)."""
        if peer_id not in self._planned_peers:
            return True
        if 0 <= now - self._planned_at < _MIN_REPLAN or not self._plan_rested():
            return False
        if self._replan:
            return True
        return conn.execute("SELECT 1 FROM hosts WHERE peer_id = ? LIMIT 1", (peer_id,)).fetchone() is None

    # ---- units and leases --------------------------------------------------------------

    @staticmethod
    def _unit_lease(row: sqlite3.Row | Sequence[Any]) -> UnitLease:
        state, token, peer_id, expires_at, attempts, last_error = row
        return UnitLease(UnitState(state), token, peer_id, expires_at, attempts, last_error)

    @staticmethod
    def _save_unit(conn: sqlite3.Connection, unit_id: int, unit: UnitLease) -> None:
        conn.execute(
            "UPDATE units SET state = ?, token = ?, peer_id = ?, expires_at = ?, attempts = ?, last_error = ?"
            " WHERE id = ?",
            (unit.state.value, unit.token, unit.peer_id, unit.expires_at, unit.attempts, unit.last_error, unit_id),
        )

    def _load_unit(self, conn: sqlite3.Connection, unit_id: int) -> _StoredUnit:
        row = None
        if 0 <= unit_id <= _MAX_ID:
            row = conn.execute(
                "SELECT job_id, unit_key, leased_at, state, token, peer_id, expires_at, attempts, last_error"
                " FROM units WHERE id = ?",
                (unit_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no unit {unit_id}")
        return _StoredUnit(row[0], row[1], row[2], self._unit_lease(row[3:]))

    def _finish_items_with_error(self, conn: sqlite3.Connection, span: _Span, message: str, now: float) -> None:
        finished = conn.execute(
            f"UPDATE items SET result = 'error', error = ?, done = 1 WHERE {_UNIT_ITEMS}",
            (message[: linkcheck_jobs.MAX_TEXT], *span),
        ).rowcount
        self._items_closed(conn, span.job_id, finished, now)

    @staticmethod
    def _load_pace(conn: sqlite3.Connection, key: str) -> HostPace:
        row = conn.execute("SELECT next_allowed_at, crawl_delay, backoff FROM hosts WHERE key = ?", (key,)).fetchone()
        return HostPace() if row is None else HostPace(*row)

    @staticmethod
    def _save_pace(conn: sqlite3.Connection, key: str, pace: HostPace) -> None:
        values = (pace.next_allowed_at, pace.crawl_delay, pace.backoff, key)
        if not conn.execute(
            "UPDATE hosts SET next_allowed_at = ?, crawl_delay = ?, backoff = ? WHERE key = ?", values
        ).rowcount:
            conn.execute("INSERT INTO hosts (next_allowed_at, crawl_delay, backoff, key) VALUES (?, ?, ?, ?)", values)

    def _pace_host(self, conn: sqlite3.Connection, key: str, change: Callable[[HostPace], HostPace]) -> None:
        """Apply a pacing rule to a host. Items that are not http(s) URLs share one key and
        reach no website: nothing to pace."""
        if key == linkcheck_jobs.NOT_HTTP_KEY:
            return
        before = self._load_pace(conn, key)
        after = change(before)
        if after != before:
            self._save_pace(conn, key, after)

    async def lease(
        self,
        peer_id: str,
        max_units: int,
        workloads: list[str],
        now: float,
        lease_seconds: float,
        usage: PeerUsage | None = None,
    ) -> list[Lease]:
        granted = await self._run(self._lease, peer_id, max_units, workloads, now, lease_seconds, usage)
        return [g.lease() for g in granted]

    def _lease(
        self,
        peer_id: str,
        max_units: int,
        workloads: list[str],
        now: float,
        lease_seconds: float,
        usage: PeerUsage | None,
    ) -> list[_Granted]:
        granted: list[_Granted] = []
        with self._transaction() as conn:
            self._touch_peer(conn, peer_id, now)
            if usage is not None:
                self._record_usage(conn, peer_id, usage, now)
            if self._plan_is_due(conn, peer_id, now):
                self._plan(conn, now)
            if not workloads:
                return granted
            ask = _Asking(
                peer_id,
                now,
                lease_seconds,
                self._throughput(conn, peer_id),
                None if ANY_WORKLOAD in workloads else tuple(workloads),
            )
            # Only hosts with something to lease: waiting items or a unit not done. A host keeps
            # its peer until the next plan after its work ran out; asking for its items on
            # every lease until then cost a statement per host.
            hosts = conn.execute(
                "SELECT key, next_allowed_at, crawl_delay, backoff FROM hosts"
                " WHERE peer_id = ? AND next_allowed_at <= ?"
                f" AND (EXISTS (SELECT 1 FROM queues q WHERE q.unit_key = hosts.key AND {_WAITING})"
                " OR EXISTS (SELECT 1 FROM units WHERE unit_key = hosts.key AND state != 'done'))"
                " ORDER BY next_allowed_at, rowid",
                (peer_id, now),
            ).fetchall()
            # The open units of all those hosts in one query, not one per host.
            open_units: dict[str, list[tuple[Any, ...]]] = {}
            for key, *unit_row in conn.execute(
                "SELECT units.unit_key, units.id, units.job_id, units.first_item, units.last_item, units.leased_at,"
                " units.renewed_at, units.state, units.token, units.peer_id, units.expires_at, units.attempts,"
                " units.last_error"
                " FROM hosts JOIN units ON units.unit_key = hosts.key AND units.state != 'done'"
                " WHERE hosts.peer_id = ? AND hosts.next_allowed_at <= ? ORDER BY units.id",
                (peer_id, now),
            ):
                open_units.setdefault(key, []).append(tuple(unit_row))
            for key, *pace in hosts:
                if len(granted) >= max_units:
                    break
                lease = self._lease_host(conn, key, HostPace(*pace), ask, open_units.get(key, []))
                if lease is not None:
                    granted.append(lease)
        return granted

    def _lease_host(
        self, conn: sqlite3.Connection, key: str, pace: HostPace, ask: _Asking, rows: list[tuple[Any, ...]]
    ) -> _Granted | None:
        """At most one unit of host `key` for the asking peer: one released, failed or expired
        before (as it is), a straggler's, or a new one of waiting items; None while another
        lease on the host is live or the host's pause is not over. `rows`: the host's units
        that are not done (id, job_id, first_item, last_item, leased_at, renewed_at, then the
        lease's columns)."""
        paced = pace
        open_units: list[tuple[int, _Span, UnitLease]] = []
        for unit_id, job_id, first, last, leased_at, renewed_at, *lease_row in rows:
            span = _Span(key, job_id, first, last)
            unit = self._unit_lease(lease_row)
            if unit.state is UnitState.LEASED:
                expires_at = unit.expires_at
                assert expires_at is not None
                if expires_at > ask.now:
                    silent_since = self._straggling(conn, unit_id, span, unit, leased_at, renewed_at, ask)
                    if silent_since is None:
                        return None  # a live lease: never two peers on one host
                    # Taken back: granted below like an expired lease, with a new token.
                    unit = unit._replace(expires_at=ask.now)
                    paced = host_pacing.after_abandoned(paced, silent_since, self._min_delay)
                else:
                    paced = host_pacing.after_abandoned(paced, expires_at, self._min_delay)
            open_units.append((unit_id, span, unit))
        if key != linkcheck_jobs.NOT_HTTP_KEY:
            if paced != pace:
                self._save_pace(conn, key, paced)
            if not host_pacing.may_lease(paced, ask.now, 0):
                return None
        for unit_id, span, unit in open_units:
            if not ask.runs(self._job(conn, span.job_id)):
                continue
            unit = leases.grant(unit, ask.peer_id, ask.now, ask.lease_seconds, self._max_attempts)
            self._save_unit(conn, unit_id, unit)
            if unit.state is UnitState.DONE:
                log.warning("unit %d of job %d: %s", unit_id, span.job_id, leases.give_up_message(unit))
                self._finish_items_with_error(conn, span, leases.give_up_message(unit), ask.now)
                continue
            conn.execute("UPDATE units SET leased_at = ?, renewed_at = ? WHERE id = ?", (ask.now, ask.now, unit_id))
            items = conn.execute(f"SELECT url, crawl FROM items WHERE {_UNIT_ITEMS} ORDER BY id", span).fetchall()
            return self._lease_of(conn, ask, key, unit_id, span.job_id, unit, items)
        return self._form_unit(conn, key, ask)

    def _form_unit(self, conn: sqlite3.Connection, key: str, ask: _Asking) -> _Granted | None:
        """A new unit of the host's waiting items, of its oldest job the peer runs, sized for
        the peer: about unit_sizing.TARGET_SECONDS of its work, at most the job's unit size."""
        # The waiting items of the host's queues, oldest job first, in one statement; the job's
        # unit size is known once its first item is.
        only = ""
        if ask.names is not None:
            only = f" AND q.job_id IN (SELECT id FROM jobs WHERE workload IN ({', '.join('?' * len(ask.names))}))"
        rows = conn.execute(
            f"SELECT q.job_id, items.id, items.url, items.crawl FROM {_QUEUED_ITEMS}"
            f" WHERE q.unit_key = ?{only} ORDER BY q.job_id, items.id LIMIT ?",
            (key, *(ask.names or ()), unit_sizing.unit_size(ask.throughput)),
        ).fetchall()
        if not rows:
            return None
        job_id = rows[0][0]
        picked = [row[1:] for row in rows if row[0] == job_id][: self._job(conn, job_id).unit_size]
        first, last = picked[0][0], picked[-1][0]
        unit = leases.grant(UnitLease(UnitState.QUEUED), ask.peer_id, ask.now, ask.lease_seconds, self._max_attempts)
        unit_id = conn.execute(
            "INSERT INTO units (job_id, unit_key, state, token, peer_id, expires_at, leased_at, renewed_at,"
            " first_item, last_item) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, key, unit.state.value, unit.token, unit.peer_id, unit.expires_at, ask.now, ask.now, first, last),
        ).lastrowid
        assert unit_id is not None
        conn.execute("UPDATE queues SET taken_through = ? WHERE unit_key = ? AND job_id = ?", (last, key, job_id))
        return self._lease_of(conn, ask, key, unit_id, job_id, unit, [(url, crawl) for _, url, crawl in picked])

    def _lease_of(
        self,
        conn: sqlite3.Connection,
        ask: _Asking,
        key: str,
        unit_id: int,
        job_id: int,
        unit: UnitLease,
        items: list[tuple[str, int]],
    ) -> _Granted:
        job = self._job(conn, job_id)
        assert unit.expires_at is not None
        workload, pinned = job.workload, job.pinned
        if (workload, pinned) not in ask.bundles:
            ask.bundles[workload, pinned] = self._bundle_ref(conn, workload, pinned, ask.peer_id)
        host = None if key == linkcheck_jobs.NOT_HTTP_KEY else key
        return _Granted(
            unit_id, unit.token, job_id, workload, items, unit.expires_at, ask.bundles[workload, pinned], host
        )

    def _straggling(
        self,
        conn: sqlite3.Connection,
        unit_id: int,
        span: _Span,
        unit: UnitLease,
        leased_at: float | None,
        renewed_at: float | None,
        ask: _Asking,
    ) -> float | None:
        """When the silent holder of this live lease is taken to have stopped, if the lease is
        a straggler to take back (unit_sizing.is_straggler); None to leave it alone."""
        if leased_at is None or renewed_at is None:
            return None  # leased by a coordinator older than schema 3: it just expires
        interval = ask.lease_seconds / RENEWS_PER_LEASE
        if ask.now - renewed_at <= unit_sizing.MISSED_RENEWALS * interval:
            return None  # its holder renews: it is alive and may still be fetching
        (items,) = conn.execute(f"SELECT COUNT(*) FROM items WHERE {_UNIT_ITEMS}", span).fetchone()
        expected = unit_sizing.expected_seconds(items, self._throughput(conn, unit.peer_id))
        queued = conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM queues q WHERE job_id = ? AND {_WAITING})"
            " OR EXISTS (SELECT 1 FROM units WHERE job_id = ? AND state = 'queued')",
            (span.job_id, span.job_id),
        ).fetchone()[0]
        if not unit_sizing.is_straggler(leased_at, expected, ask.now, bool(queued), renewed_at, interval):
            return None
        log.info(
            "unit %d of job %d: holder %s… silent for %.0f s, %.0f s into an expected %.0f s; granting it again",
            unit_id,
            span.job_id,
            (unit.peer_id or "")[:12],
            ask.now - renewed_at,
            ask.now - leased_at,
            expected,
        )
        # The holder stops its unit once it could not renew for a while (peer.agent's
        # STOP_UNRENEWED, under MISSED_RENEWALS intervals): by then it left the host alone.
        return renewed_at + unit_sizing.MISSED_RENEWALS * interval

    def _bundle_ref(self, conn: sqlite3.Connection, name: str, pinned: str | None, peer_id: str) -> BundleRef | None:
        """The version a peer runs a job's unit with: the job's pin, else the rollout's choice.
        None only for a job stored before bundles existed whose bundle was never published."""
        version = pinned
        if version is None:
            the_rollout = self._load_rollout(conn, name)
            if the_rollout is None:
                return None
            version = rollout.version_for(the_rollout, peer_id)
        row = conn.execute("SELECT info_hash FROM bundles WHERE name = ? AND version = ?", (name, version)).fetchone()
        return None if row is None else BundleRef(name, version, row[0])

    async def renew(self, peer_id: str, unit_id: int, token: int, now: float, lease_seconds: float) -> float:
        return await self._run(self._renew, peer_id, unit_id, token, now, lease_seconds)

    def _renew(self, peer_id: str, unit_id: int, token: int, now: float, lease_seconds: float) -> float:
        with self._transaction() as conn:
            self._touch_peer(conn, peer_id, now)
            unit = self._load_unit(conn, unit_id).lease
            if not leases.holds(unit, peer_id, token):
                raise StaleLease(f"unit {unit_id} token {token} is not your current lease")
            unit = leases.renewed(unit, now, lease_seconds)
            conn.execute(
                "UPDATE units SET expires_at = ?, renewed_at = ? WHERE id = ?", (unit.expires_at, now, unit_id)
            )
        assert unit.expires_at is not None
        return unit.expires_at

    async def release(self, peer_id: str, unit_id: int, token: int, now: float) -> None:
        await self._run(self._release, peer_id, unit_id, token, now)

    def _release(self, peer_id: str, unit_id: int, token: int, now: float) -> None:
        with self._transaction() as conn:
            self._touch_peer(conn, peer_id, now)
            stored = self._load_unit(conn, unit_id)
            if not leases.holds(stored.lease, peer_id, token):
                raise StaleLease(f"unit {unit_id} token {token} is not your current lease")
            self._save_unit(conn, unit_id, leases.released(stored.lease))
            self._pace_host(conn, stored.unit_key, lambda pace: host_pacing.after_abandoned(pace, now, self._min_delay))

    # ---- reports -----------------------------------------------------------------------
    #
    # A call's reports are taken in two steps: every report is judged against the rows it
    # touches, loaded for the whole call at once (its unit, the unit's open items, its host's
    # pace), and what it changes is collected in a `_Reported`; the collected changes are then
    # written with one statement per kind of row. A report is refused before it changes
    # anything, so a refused report of a batch takes nothing else with it.

    async def report(self, peer_id: str, report: Report, now: float) -> ReportResponse:
        return await self._run(self._report, peer_id, _incoming(report), now)

    def _report(self, peer_id: str, report: _Incoming, now: float) -> ReportResponse:
        with self._transaction() as conn:
            self._touch_peer(conn, peer_id, now)
            reported = self._reported(conn, peer_id, [report])
            response = self._take_report(conn, report, now, reported)
            self._write_reported(conn, reported, now)
        return response

    async def report_batch(self, peer_id: str, reports: list[Report], now: float) -> list[ReportVerdict]:
        verdicts = await self._run(self._report_batch, peer_id, [_incoming(r) for r in reports], now)
        return [ReportVerdict(*verdict) for verdict in verdicts]

    def _report_batch(self, peer_id: str, reports: list[_Incoming], now: float) -> list[tuple[int, bool, str, str]]:
        """The verdicts as plain tuples (unit_id, accepted, reason, code): cheaper to hand over
        than dataclasses, which pickle field by field."""
        verdicts: list[tuple[int, bool, str, str]] = []
        with self._transaction() as conn:
            self._touch_peer(conn, peer_id, now)
            reported = self._reported(conn, peer_id, reports)
            for report in reports:
                try:
                    response = self._take_report(conn, report, now, reported)
                except (StaleLease, NotFound, InvalidInput) as exc:
                    verdicts.append((report.unit_id, False, str(exc), _refusal_code(exc)))
                else:
                    verdicts.append((report.unit_id, True, response.reason, ""))
            self._write_reported(conn, reported, now)
        return verdicts

    def _reported(self, conn: sqlite3.Connection, peer_id: str, reports: list[_Incoming]) -> _Reported:
        """The rows the reports touch: their units (if any), the units' open items and their
        hosts' paces, in a few queries for the whole call."""
        reported = _Reported(peer_id, self._throughput(conn, peer_id))
        ids = sorted({r.unit_id for r in reports if 0 <= r.unit_id <= _MAX_ID})
        for chunk in _chunks(ids):
            for unit_id, job_id, key, first, last, leased_at, *lease_row in conn.execute(
                "SELECT id, job_id, unit_key, first_item, last_item, leased_at, state, token, peer_id, expires_at,"
                f" attempts, last_error FROM units WHERE id IN ({', '.join('?' * len(chunk))})",
                chunk,
            ):
                reported.units[unit_id] = _ReportedUnit(job_id, key, leased_at, self._unit_lease(lease_row))
                # A unit done has no open items: what its range holds undone is another unit's
                # (a partial report left it out).
                if reported.units[unit_id].lease.state is not UnitState.DONE:
                    reported.units[unit_id].items = {
                        url: (item_id, depth, bool(crawl))
                        for item_id, url, depth, crawl in conn.execute(
                            f"SELECT id, url, depth, crawl FROM items WHERE {_UNIT_ITEMS}", (key, job_id, first, last)
                        )
                    }
        keys = sorted({unit.key for unit in reported.units.values()} - {linkcheck_jobs.NOT_HTTP_KEY})
        for some_keys in _chunks(keys):
            for key, *pace in conn.execute(
                "SELECT key, next_allowed_at, crawl_delay, backoff FROM hosts"
                f" WHERE key IN ({', '.join('?' * len(some_keys))})",
                some_keys,
            ):
                reported.paces[key] = HostPace(*pace)
        reported.stored_paces = dict(reported.paces)
        return reported

    def _take_report(
        self, conn: sqlite3.Connection, report: _Incoming, now: float, reported: _Reported
    ) -> ReportResponse:
        """Judge one report and collect what it changes in `reported`; raise before changing
        anything if it is refused. Only the links it found are written at once (new items)."""
        unit = reported.units.get(report.unit_id)
        if unit is None:
            raise NotFound(f"no unit {report.unit_id}")
        verdict = leases.judge_report(unit.lease, reported.peer_id, report.token)
        if verdict is Verdict.STALE:
            raise StaleLease(f"unit {report.unit_id} token {report.token} is not the current lease")
        if verdict is Verdict.DUPLICATE:
            return ReportResponse(accepted=True, reason="duplicate")
        name = self._job(conn, unit.job_id).workload
        counted = report.bundle_version is not None and report.exit_code != 3
        on_trial = counted and self._on_trial(conn, name, report.bundle_version, reported)
        error = report.error[: linkcheck_jobs.MAX_TEXT] if report.error else None
        results: list[ItemResult] = []
        if report.exit_code in (0, 1):
            if isinstance(report.items, str):
                raise InvalidInput(report.items)
            results = report.items
            linkcheck_jobs.check_unit_items(results, unit.items)  # the last refusal
            if results:
                self._merge_results(conn, unit, results, reported)
                lease = leases.completed(unit.lease)
            else:
                # Nothing done is no progress: count it as a failed attempt so a unit cannot loop forever.
                lease = leases.failed(unit.lease, error or "workload reported no items", self._max_attempts)
        elif report.exit_code == 2 and on_trial:
            # The version on trial failed, not the unit: requeue it without using up one of
            # its attempts, or a broken candidate could exhaust a unit before it rolls back.
            lease = leases.released(unit.lease)._replace(last_error=error or "workload failed (exit 2)")
        elif report.exit_code == 2:
            lease = leases.failed(unit.lease, error or "workload failed (exit 2)", self._max_attempts)
            if lease.state is UnitState.DONE:
                self._finish_with_error(unit, leases.give_up_message(lease), reported)
        else:
            self._finish_with_error(unit, f"workload refused the input: {error or 'no reason given'}", reported)
            lease = leases.completed(unit.lease)
        unit.lease = reported.leases[report.unit_id] = lease
        if results:
            summary = UnitSummary(
                throttled=sum(1 for r in results if r.status in _THROTTLED), crawl_delay=report.crawl_delay
            )
            reported.pace(unit.key, lambda pace: host_pacing.after_unit(pace, now, summary, self._min_delay))
            if unit.leased_at is not None:
                reported.throughput = unit_sizing.observe(reported.throughput, len(results), now - unit.leased_at)
        else:
            # No item came back, so nothing was learned about the host.
            reported.pace(unit.key, lambda pace: host_pacing.after_abandoned(pace, now, self._min_delay))
        if counted:
            assert report.bundle_version is not None
            reported.outcomes.append((name, report.bundle_version, report.exit_code in (0, 1)))
        return ReportResponse(accepted=True)

    def _merge_results(
        self, conn: sqlite3.Connection, unit: _ReportedUnit, results: list[ItemResult], reported: _Reported
    ) -> None:
        """Collect a (partial) result: the items it reports are finished, the rest go back to
        waiting; add the links it found."""
        for r in results:
            item_id, depth, crawl = unit.items.pop(r.url)
            reported.finished.append(
                (r.result, r.status, r.final_url, encode(list(r.redirects)) if r.redirects else None, r.error, item_id)
            )
            if crawl and r.crawled:
                self._add_links(conn, unit.job_id, r, depth, self._job_input(conn, unit.job_id))
        if unit.items:
            left = [item_id for item_id, _, _ in unit.items.values()]
            reported.left_out.append(_Span(unit.key, unit.job_id, min(left), max(left)))
        unit.items.clear()
        reported.closed[unit.job_id] = reported.closed.get(unit.job_id, 0) + len(results)

    @staticmethod
    def _finish_with_error(unit: _ReportedUnit, message: str, reported: _Reported) -> None:
        """The unit's open items are finished with an error (its work cannot be done)."""
        message = message[: linkcheck_jobs.MAX_TEXT]
        reported.failed.extend((message, item_id) for item_id, _, _ in unit.items.values())
        reported.closed[unit.job_id] = reported.closed.get(unit.job_id, 0) + len(unit.items)
        unit.items.clear()

    def _on_trial(self, conn: sqlite3.Connection, name: str, version: str | None, reported: _Reported) -> bool:
        """Was `version` the candidate of a rollout in progress (its unit on trial)?"""
        if name not in reported.rollouts:
            reported.rollouts[name] = self._load_rollout(conn, name)
        the_rollout = reported.rollouts[name]
        return (
            the_rollout is not None
            and the_rollout.state is RolloutState.ROLLING_OUT
            and the_rollout.candidate == version
        )

    def _write_reported(self, conn: sqlite3.Connection, reported: _Reported, now: float) -> None:
        """Write what the call's reports changed: items, units and host paces; then count the
        finished units for the versions that ran them, judge each rollout they touched (rolling
        a failing candidate back) once, close the finished items of each job and keep the
        peer's new throughput estimate."""
        conn.executemany(
            "UPDATE items SET result = ?, status = ?, final_url = ?, redirects = ?, error = ?, done = 1 WHERE id = ?",
            reported.finished,
        )
        conn.executemany(
            "UPDATE items SET result = 'error', error = ?, done = 1 WHERE id = ? AND done = 0", reported.failed
        )
        conn.executemany(
            "INSERT INTO units (unit_key, job_id, first_item, last_item, state) VALUES (?, ?, ?, ?, 'queued')",
            reported.left_out,
        )
        conn.executemany(
            "UPDATE units SET state = ?, token = ?, peer_id = ?, expires_at = ?, attempts = ?, last_error = ?"
            " WHERE id = ?",
            [
                (u.state.value, u.token, u.peer_id, u.expires_at, u.attempts, u.last_error, unit_id)
                for unit_id, u in reported.leases.items()
            ],
        )
        conn.executemany(
            "INSERT INTO hosts (key, next_allowed_at, crawl_delay, backoff) VALUES (?, ?, ?, ?) ON CONFLICT (key)"
            " DO UPDATE SET next_allowed_at = excluded.next_allowed_at, crawl_delay = excluded.crawl_delay,"
            " backoff = excluded.backoff",
            [
                (key, pace.next_allowed_at, pace.crawl_delay, pace.backoff)
                for key, pace in reported.paces.items()
                if reported.stored_paces.get(key) != pace
            ],
        )
        counts: dict[tuple[str, str, bool], int] = {}
        for outcome in reported.outcomes:
            counts[outcome] = counts.get(outcome, 0) + 1
        published: set[tuple[str, str]] = set()
        for (name, version, ok), count in counts.items():
            column = "units_ok" if ok else "units_failed"
            if conn.execute(
                f"UPDATE bundles SET {column} = {column} + ? WHERE name = ? AND version = ?", (count, name, version)
            ).rowcount:
                published.add((name, version))  # else never published here: nothing to learn from it
        for name in {name for name, _ in published}:
            before = self._load_rollout(conn, name)
            if before is None:
                continue
            after = before
            for of, version, ok in reported.outcomes:
                if of == name and (name, version) in published:
                    after = rollout.counted(after, version, ok)
            if after == before:
                continue
            after = rollout.judged(after, self._tally(conn, name, after.stable))
            self._save_rollout(conn, after)
            if after.state is RolloutState.ROLLED_BACK:
                log.warning("%s", after.message)
        for job_id, count in reported.closed.items():
            self._items_closed(conn, job_id, count, now)
        if reported.throughput != reported.throughput_before:
            conn.execute("UPDATE peers SET throughput = ? WHERE id = ?", (reported.throughput, reported.peer_id))

    def _add_links(self, conn: sqlite3.Connection, job_id: int, page: ItemResult, depth: int, job: JobInput) -> None:
        found = linkcheck_jobs.linked_items(page, depth, job)
        self._insert_items(conn, job_id, found)
        # The links are on the page that was finally served, not on a redirect leading to it.
        containing_page = page.final_url or page.url
        conn.executemany(
            "INSERT OR IGNORE INTO referrers (job_id, item_id, referrer_url)"
            " SELECT ?, id, ? FROM items WHERE job_id = ? AND url = ?",
            [(job_id, containing_page, job_id, item.url) for item in found],
        )

    # ---- reading -----------------------------------------------------------------------

    async def job_status(self, job_id: int) -> JobStatus:
        return await self._run(self._job_status, job_id)

    def _job_status(self, job_id: int) -> JobStatus:
        with self._transaction(write=False) as conn:
            return self._status(conn, job_id)

    async def list_jobs(self) -> list[JobStatus]:
        return await self._run(self._list_jobs)

    async def peer_count(self, seen_since: float = 0.0) -> int:
        return await self._run(self._peer_count, seen_since)

    def _peer_count(self, seen_since: float) -> int:
        with self._transaction(write=False) as conn:
            return conn.execute("SELECT COUNT(*) FROM peers WHERE last_seen >= ?", (seen_since,)).fetchone()[0]

    async def peers_overview(self, seen_since: float, limit: int) -> list[PeerOverview]:
        return await self._run(self._peers_overview, seen_since, limit)

    def _peers_overview(self, seen_since: float, limit: int) -> list[PeerOverview]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT peers.id, name, capacity, used, cap, down_rate, up_rate, last_seen,"
                " (SELECT COUNT(*) FROM hosts WHERE hosts.peer_id = peers.id), throughput"
                " FROM peers WHERE last_seen >= ? ORDER BY capacity DESC, peers.id LIMIT ?",
                (seen_since, limit),
            ).fetchall()
        return [PeerOverview(*row) for row in rows]

    async def hosts_overview(self, now: float, limit: int) -> list[HostOverview]:
        return await self._run(self._hosts_overview, now, limit)

    def _hosts_overview(self, now: float, limit: int) -> list[HostOverview]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT key, peer_id, next_allowed_at, crawl_delay, backoff,"
                " EXISTS (SELECT 1 FROM units WHERE units.unit_key = hosts.key AND units.state = 'leased'"
                "         AND units.expires_at > ?) AS leased"
                " FROM hosts WHERE next_allowed_at > ? OR backoff > 0 OR leased"
                " ORDER BY next_allowed_at DESC, key LIMIT ?",
                (now, now, limit),
            ).fetchall()
        return [
            HostOverview(key, peer, at, delay, backoff, bool(leased)) for key, peer, at, delay, backoff, leased in rows
        ]

    def _list_jobs(self) -> list[JobStatus]:
        with self._transaction(write=False) as conn:
            ids = [job_id for (job_id,) in conn.execute("SELECT id FROM jobs ORDER BY id")]
            return [self._status(conn, job_id) for job_id in ids]

    @staticmethod
    def _check_job(conn: sqlite3.Connection, job_id: int) -> tuple[Any, ...]:
        row = None
        if 0 <= job_id <= _MAX_ID:
            row = conn.execute(
                "SELECT workload, state, created_at, finished_at, unit_size FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row

    def _status(self, conn: sqlite3.Connection, job_id: int) -> JobStatus:
        workload, state, created_at, finished_at, unit_size = self._check_job(conn, job_id)
        units_total, units_done = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(state = 'done'), 0) FROM units WHERE job_id = ?", (job_id,)
        ).fetchone()
        if state == "running":
            # Units of the waiting items are formed when leased; count them at a new peer's size.
            size = min(unit_sizing.DEFAULT_UNIT, unit_size)
            (to_form,) = conn.execute(
                "SELECT COALESCE(SUM((n + ? - 1) / ?), 0)"
                f" FROM (SELECT COUNT(*) AS n FROM {_QUEUED_ITEMS} WHERE q.job_id = ? GROUP BY q.unit_key)",
                (size, size, job_id),
            ).fetchone()
            units_total += to_form
        (items_total,) = conn.execute("SELECT COUNT(*) FROM items WHERE job_id = ?", (job_id,)).fetchone()
        counts = dict(
            conn.execute(
                "SELECT result, COUNT(*) FROM items WHERE job_id = ? AND done = 1 GROUP BY result ORDER BY result",
                (job_id,),
            ).fetchall()
        )
        return JobStatus(
            job_id=job_id,
            workload=workload,
            state=state,
            units_total=units_total,
            units_done=units_done,
            items_total=items_total,
            items_done=sum(counts.values()),
            counts=counts,
            created_at=created_at,
            finished_at=finished_at,
        )

    async def job_results(
        self, job_id: int, offset: int, limit: int, *, problems_only: bool = False
    ) -> list[dict[str, Any]]:
        return await self._run(self._job_results, job_id, offset, limit, problems_only)

    def _job_results(self, job_id: int, offset: int, limit: int, problems_only: bool = False) -> list[dict[str, Any]]:
        with self._transaction(write=False) as conn:
            self._check_job(conn, job_id)
            rows = conn.execute(
                "SELECT id, url, result, status, final_url, redirects, error, depth FROM items WHERE job_id = ?"
                + (" AND result IN ('broken', 'timeout', 'error')" if problems_only else "")
                + " ORDER BY id LIMIT ? OFFSET ?",
                (job_id, limit, offset),
            ).fetchall()
            if not rows:
                return []
            referrers: dict[int, list[str]] = {}
            if problems_only:  # few items far apart: look them up by id
                found: list[tuple[int, str]] = []
                for chunk in _chunks([row[0] for row in rows]):
                    found += conn.execute(
                        f"SELECT item_id, referrer_url FROM referrers WHERE item_id IN ({', '.join('?' * len(chunk))})"
                        " ORDER BY referrer_url",
                        chunk,
                    ).fetchall()
                found.sort(key=lambda pair: pair[1])
            else:
                found = conn.execute(
                    "SELECT item_id, referrer_url FROM referrers WHERE job_id = ? AND item_id BETWEEN ? AND ?"
                    " ORDER BY referrer_url",
                    (job_id, rows[0][0], rows[-1][0]),
                ).fetchall()
            for item_id, url in found:
                referrers.setdefault(item_id, []).append(url)
        return [
            {
                "url": url,
                "result": result,
                "status": status,
                "final_url": final_url,
                "redirects": [] if redirects is None else decode(redirects),
                "error": error,
                "referrers": referrers.get(item_id, []),
                "depth": depth,
            }
            for item_id, url, result, status, final_url, redirects, error, depth in rows
        ]

    # ---- owners and bundles ------------------------------------------------------------

    async def add_owner(self, name: str, public_key: str, now: float) -> None:
        await self._run(self._add_owner, name, public_key, now)

    def _add_owner(self, name: str, public_key: str, now: float) -> None:
        if not 0 < len(name) <= _MAX_OWNER_NAME or not name.isprintable():
            raise InvalidInput(f"owner name must be 1..{_MAX_OWNER_NAME} printable characters")
        if not _OWNER_KEY_RE.fullmatch(public_key):
            raise InvalidInput("owner key must be an Ed25519 public key: 64 lowercase hex digits")
        with self._transaction() as conn:
            bound = conn.execute(
                "SELECT name, public_key FROM owners WHERE name = ? OR public_key = ?", (name, public_key)
            ).fetchall()
            if bound == [(name, public_key)]:
                return  # the same owner again
            if bound:
                other_name, other_key = next(row for row in bound if row != (name, public_key))
                raise InvalidInput(
                    f"owner {other_name!r} is already registered with key {other_key[:16]}…; "
                    f"key {public_key[:16]}… cannot also be registered as {name!r}"
                )
            conn.execute("INSERT INTO owners (name, public_key, added_at) VALUES (?, ?, ?)", (name, public_key, now))
        log.info("owner %r added with key %s", name, public_key)

    async def owners(self) -> list[Owner]:
        return await self._run(self._owners)

    def _owners(self) -> list[Owner]:
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT name, public_key, added_at FROM owners ORDER BY name").fetchall()
        return [Owner(*row) for row in rows]

    async def is_owner_key(self, public_key: str) -> bool:
        return await self._run(self._is_owner_key, public_key)

    def _is_owner_key(self, public_key: str) -> bool:
        with self._transaction(write=False) as conn:
            return conn.execute("SELECT 1 FROM owners WHERE public_key = ?", (public_key,)).fetchone() is not None

    async def add_bundle(self, bundle: PublishedBundle, *, stable: bool = False) -> bool:
        return await self._run(self._add_bundle, bundle, stable)

    def _add_bundle(self, bundle: PublishedBundle, stable: bool) -> bool:
        name, version = bundle.name, bundle.version
        with self._transaction() as conn:
            if not conn.execute("SELECT 1 FROM owners WHERE public_key = ?", (bundle.owner_key,)).fetchone():
                raise unknown_owner(bundle.owner_key)
            current = self._load_rollout(conn, name)
            if current is not None and current.owner_key != bundle.owner_key:
                raise NotOwner(
                    f"bundle name {name!r} belongs to owner key {current.owner_key[:16]}…; "
                    f"key {bundle.owner_key[:16]}… cannot publish it: choose another name"
                )
            row = conn.execute(
                "SELECT manifest FROM bundles WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
            if row is not None and row[0] != bundle.manifest:
                raise Conflict(
                    f"{name} {version} is already published with different content; "
                    "versions never change: publish it as a new version"
                )
            if row is None:
                conn.execute(
                    "INSERT INTO bundles (name, version, owner_key, info_hash, archive_sha256, manifest, published_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        version,
                        bundle.owner_key,
                        bundle.info_hash,
                        bundle.archive_sha256,
                        bundle.manifest,
                        bundle.published_at,
                    ),
                )
            if current is None:
                self._save_rollout(conn, rollout.first(name, bundle.owner_key, version))
            elif stable and current.stable != version:
                self._save_rollout(
                    conn, rollout.made_stable(current, version, f"{name} {version} is the stable version")
                )
        if row is None:
            log.info("bundle %s %s published by %s…", name, version, bundle.owner_key[:16])
        return row is None

    async def bundle_info(self, name: str, version: str) -> PublishedBundle:
        return await self._run(self._bundle_info, name, version)

    def _bundle_info(self, name: str, version: str) -> PublishedBundle:
        with self._transaction(write=False) as conn:
            row = conn.execute(
                f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        if row is None:
            raise NotFound(f"bundle {name!r} has no version {version!r} on this coordinator")
        return PublishedBundle(*row)

    async def published_bundles(self) -> list[PublishedBundle]:
        return await self._run(self._published_bundles)

    def _published_bundles(self) -> list[PublishedBundle]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"SELECT {_BUNDLE_COLUMNS} FROM bundles ORDER BY published_at, rowid").fetchall()
        return [PublishedBundle(*row) for row in rows]

    async def bundle_status(self, name: str) -> BundleStatus:
        return await self._run(self._bundle_status, name)

    def _bundle_status(self, name: str) -> BundleStatus:
        with self._transaction(write=False) as conn:
            return self._status_of_bundle(conn, name)

    async def list_bundles(self) -> list[BundleStatus]:
        return await self._run(self._list_bundles)

    def _list_bundles(self) -> list[BundleStatus]:
        with self._transaction(write=False) as conn:
            names = [name for (name,) in conn.execute("SELECT name FROM rollouts ORDER BY name")]
            return [self._status_of_bundle(conn, name) for name in names]

    async def set_rollout(self, name: str, version: str, percent: int, signer_key: str, now: float) -> BundleStatus:
        return await self._run(self._set_rollout, name, version, percent, signer_key)

    def _set_rollout(self, name: str, version: str, percent: int, signer_key: str) -> BundleStatus:
        with self._transaction() as conn:
            current = self._load_rollout(conn, name)
            if current is None:
                raise NotFound(f"no bundle named {name!r} is published on this coordinator")
            if signer_key != current.owner_key:
                raise NotOwner(
                    f"only the owner key {current.owner_key[:16]}… of {name!r} may roll it out; "
                    f"this request is signed by {signer_key[:16]}…"
                )
            if not conn.execute("SELECT 1 FROM bundles WHERE name = ? AND version = ?", (name, version)).fetchone():
                raise NotFound(f"bundle {name!r} has no version {version!r}; publish it first")
            updated = rollout.started(current, version, percent)
            self._save_rollout(conn, updated)
            status = self._status_of_bundle(conn, name)
        log.info("%s", updated.message)
        return status

    @staticmethod
    def _load_rollout(conn: sqlite3.Connection, name: str) -> Rollout | None:
        row = conn.execute(
            "SELECT owner_key, stable, candidate, percent, state, message, candidate_ok, candidate_failed"
            " FROM rollouts WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            return None
        owner_key, stable, candidate, percent, state, message, ok, failed = row
        return Rollout(name, owner_key, stable, candidate, percent, RolloutState(state), message, Tally(ok, failed))

    @staticmethod
    def _save_rollout(conn: sqlite3.Connection, r: Rollout) -> None:
        conn.execute(
            "INSERT INTO rollouts (name, owner_key, stable, candidate, percent, state, message, candidate_ok,"
            " candidate_failed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET owner_key = excluded.owner_key, stable = excluded.stable,"
            " candidate = excluded.candidate, percent = excluded.percent, state = excluded.state,"
            " message = excluded.message, candidate_ok = excluded.candidate_ok,"
            " candidate_failed = excluded.candidate_failed",
            (
                r.name,
                r.owner_key,
                r.stable,
                r.candidate,
                r.percent,
                r.state.value,
                r.message,
                r.since_started.ok,
                r.since_started.failed,
            ),
        )

    @staticmethod
    def _tally(conn: sqlite3.Connection, name: str, version: str) -> Tally:
        row = conn.execute(
            "SELECT units_ok, units_failed FROM bundles WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        return Tally() if row is None else Tally(*row)

    def _status_of_bundle(self, conn: sqlite3.Connection, name: str) -> BundleStatus:
        r = self._load_rollout(conn, name)
        if r is None:
            raise NotFound(f"no bundle named {name!r} is published on this coordinator")
        rows = conn.execute(
            "SELECT version, info_hash, published_at, units_ok, units_failed FROM bundles WHERE name = ?"
            " ORDER BY published_at, rowid",
            (name,),
        ).fetchall()
        return BundleStatus(
            name=name,
            owner_key=r.owner_key,
            stable=r.stable,
            candidate=r.candidate,
            percent=r.percent,
            state=r.state.value,
            message=r.message,
            versions=[VersionStats(*row) for row in rows],
        )


def _hosted(path: str, options: dict[str, Any]) -> Hosted:
    """The store a `StoreProcess` child runs the calls of (see SqliteStore's own_process)."""
    store = SqliteStore(path, **options)
    return Hosted(
        method=lambda name: getattr(store, name),
        connection=lambda: store._conn,
        on_rollback=store._forget_cached,
        close=store._close,
    )


def _runs_all(workloads: object, bundles: set[str]) -> bool:
    """Does a peer that registered `workloads` run every one of `bundles`?"""
    names = set(workloads) if isinstance(workloads, list) else set()
    return ANY_WORKLOAD in names or bundles <= names


def _overflow(plan: assignment.Plan, demand: Mapping[str, float], previous: Mapping[str, str]) -> dict[str, str]:
    """Hosts the bounded loads left without a peer, largest first: each stays with the active
    peer that had it, unless that peer already keeps a larger one of them, else goes to the
    peer with the most room left under its cap. Work is never stranded: a host larger than any
    peer's room (typically the last big host of a job, when the caps have shrunk with the work
    left) would otherwise wait for nobody. Moving it would not bring it under a cap, only cost
    a handover (a pause at the host, a bundle fetch on the new peer). Caps bound shares of the
    backlog, not a volunteer's rate, which its own egress enforces."""
    room = {peer: plan.caps[peer] - plan.loads[peer] for peer in plan.caps}
    placed: dict[str, str] = {}
    keeping: set[str] = set()
    for host in sorted(plan.unassigned, key=lambda h: (-demand[h], h)):
        if not room:
            break
        peer = previous.get(host)
        if peer not in room or peer in keeping:
            peer = max(sorted(room), key=lambda p: room[p])
        keeping.add(peer)
        placed[host] = peer
        room[peer] -= demand[host]
    return placed


def _chunks(values: list[T]) -> Iterator[list[T]]:
    """`values` in lists short enough for one IN (...) of SQL variables."""
    for start in range(0, len(values), _SQL_VARIABLES):
        yield values[start : start + _SQL_VARIABLES]


def _refusal_code(exc: StoreError) -> str:
    """The error code a refused report of a batch gets: the one its own request would get."""
    if isinstance(exc, StaleLease):
        return "stale_lease"
    if isinstance(exc, NotFound):
        return "not_found"
    return "invalid_input"
