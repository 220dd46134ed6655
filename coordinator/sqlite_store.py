"""The SQLite store: WAL, foreign keys, one transaction per state change.

sqlite3 is blocking, so the connection lives on one dedicated worker thread and every call is
handed to it; the event loop never waits on the disk. One thread also means one writer, which
is what SQLite wants anyway. The rules themselves live in `leases`, `linkcheck_jobs` and
`rollout`.

Schema history (PRAGMA user_version); an older file is migrated in one transaction on open:
    1  jobs, units, items, referrers, peers
    2  owners, bundles (per-version unit counters), rollouts (per bundle name),
       jobs.bundle_version (NULL: the job follows its bundle's rollout)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from coordinator import leases, linkcheck_jobs, rollout
from coordinator.leases import UnitLease, UnitState, Verdict
from coordinator.linkcheck_jobs import ItemResult, JobInput, NewItem
from coordinator.rollout import Rollout, RolloutState, Tally
from coordinator.store import (
    DEFAULT_UNIT_SIZE,
    Conflict,
    InvalidInput,
    NotFound,
    NotOwner,
    Owner,
    PublishedBundle,
    StaleLease,
    StoreError,
    UnknownPeer,
    unknown_owner,
)
from overlay.wire import (
    ANY_WORKLOAD,
    BundleRef,
    BundleStatus,
    JobStatus,
    Lease,
    RegisterRequest,
    Report,
    ReportResponse,
    VersionStats,
    decode,
    encode,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
SCHEMA_VERSION = 2
_MAX_ID = 2**63 - 1  # SQLite's INTEGER range; msgpack can carry larger numbers
_OWNER_KEY_RE = re.compile(r"[0-9a-f]{64}")
_MAX_OWNER_NAME = 64
_BUNDLE_COLUMNS = "name, version, owner_key, info_hash, archive_sha256, manifest, published_at"

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
}


class SqliteStore:
    """`coordinator.store.Store` on one SQLite file."""

    def __init__(self, path: Path | str, *, unit_size: int = DEFAULT_UNIT_SIZE, max_attempts: int = 5) -> None:
        if unit_size < 1 or max_attempts < 1:
            raise ValueError("unit_size and max_attempts must be at least 1")
        self._path = str(path)
        self._unit_size = unit_size
        self._max_attempts = max_attempts
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            raise RuntimeError("store is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        log.info("store opened at %s", self._path)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

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
        if self._executor is None:
            raise RuntimeError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    def _open(self) -> None:
        try:
            self._conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self._path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged report must survive a power cut, since the peer then drops it.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
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
        conn.executescript(f"BEGIN IMMEDIATE; {' '.join(steps)} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
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
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ---- peers -------------------------------------------------------------------------

    async def register_peer(self, peer_id: str, request: RegisterRequest, now: float) -> None:
        await self._run(self._register_peer, peer_id, request, now)

    def _register_peer(self, peer_id: str, request: RegisterRequest, now: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO peers (id, name, slots, workloads, version, registered_at, last_seen)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET name = excluded.name, slots = excluded.slots,"
                " workloads = excluded.workloads, version = excluded.version, last_seen = excluded.last_seen",
                (peer_id, request.name, request.slots, encode(request.workloads), request.version, now, now),
            )

    @staticmethod
    def _touch_peer(conn: sqlite3.Connection, peer_id: str, now: float) -> None:
        if conn.execute("UPDATE peers SET last_seen = ? WHERE id = ?", (now, peer_id)).rowcount == 0:
            raise UnknownPeer("register first (POST /v1/peers/register)")

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
            self._pack_units(conn, job_id)
        log.info(
            "job %d created: %s %s, %d seeds, depth %s", job_id, workload, version or "(rollout)", len(job.urls), job.depth
        )
        return job_id

    @staticmethod
    def _check_job_bundle(conn: sqlite3.Connection, name: str, version: str | None) -> None:
        if conn.execute("SELECT 1 FROM rollouts WHERE name = ?", (name,)).fetchone() is None:
            raise InvalidInput(
                f"no bundle named {name!r} is published on this coordinator; publish it with `osaas bundle publish`"
            )
        if version is not None and not conn.execute(
            "SELECT 1 FROM bundles WHERE name = ? AND version = ?", (name, version)
        ).fetchone():
            raise InvalidInput(f"bundle {name!r} has no version {version!r} on this coordinator")

    @staticmethod
    def _insert_items(conn: sqlite3.Connection, job_id: int, items: list[NewItem]) -> None:
        conn.executemany(
            "INSERT OR IGNORE INTO items (job_id, url, unit_key, depth, crawl) VALUES (?, ?, ?, ?, ?)",
            [(job_id, i.url, i.unit_key, i.depth, i.crawl) for i in items],
        )

    @staticmethod
    def _pack_units(conn: sqlite3.Connection, job_id: int) -> None:
        """Put every unassigned, unfinished item of the job into a new queued unit."""
        (unit_size,) = conn.execute("SELECT unit_size FROM jobs WHERE id = ?", (job_id,)).fetchone()
        rows = conn.execute(
            "SELECT id, unit_key FROM items WHERE job_id = ? AND unit_id IS NULL AND done = 0 ORDER BY id",
            (job_id,),
        ).fetchall()
        for key, item_ids in linkcheck_jobs.pack(rows, unit_size):
            unit_id = conn.execute(
                "INSERT INTO units (job_id, unit_key, state) VALUES (?, ?, 'queued')", (job_id, key)
            ).lastrowid
            conn.executemany("UPDATE items SET unit_id = ? WHERE id = ?", [(unit_id, i) for i in item_ids])

    @staticmethod
    def _finish_job_if_done(conn: sqlite3.Connection, job_id: int, now: float) -> None:
        open_unit = conn.execute(
            "SELECT 1 FROM units WHERE job_id = ? AND state != 'done' LIMIT 1", (job_id,)
        ).fetchone()
        if open_unit is None:
            conn.execute(
                "UPDATE jobs SET state = 'done', finished_at = ? WHERE id = ? AND state = 'running'", (now, job_id)
            )
            log.info("job %d done", job_id)

    # ---- units and leases --------------------------------------------------------------

    @staticmethod
    def _unit_lease(row: sqlite3.Row | tuple[Any, ...]) -> UnitLease:
        state, token, peer_id, expires_at, attempts, last_error = row
        return UnitLease(UnitState(state), token, peer_id, expires_at, attempts, last_error)

    @staticmethod
    def _save_unit(conn: sqlite3.Connection, unit_id: int, unit: UnitLease) -> None:
        conn.execute(
            "UPDATE units SET state = ?, token = ?, peer_id = ?, expires_at = ?, attempts = ?, last_error = ?"
            " WHERE id = ?",
            (unit.state.value, unit.token, unit.peer_id, unit.expires_at, unit.attempts, unit.last_error, unit_id),
        )

    def _load_unit(self, conn: sqlite3.Connection, unit_id: int) -> tuple[int, UnitLease]:
        row = None
        if 0 <= unit_id <= _MAX_ID:
            row = conn.execute(
                "SELECT job_id, state, token, peer_id, expires_at, attempts, last_error FROM units WHERE id = ?",
                (unit_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no unit {unit_id}")
        return row[0], self._unit_lease(row[1:])

    @staticmethod
    def _finish_items_with_error(conn: sqlite3.Connection, unit_id: int, message: str) -> None:
        conn.execute(
            "UPDATE items SET result = 'error', error = ?, done = 1 WHERE unit_id = ? AND done = 0",
            (message[: linkcheck_jobs.MAX_TEXT], unit_id),
        )

    async def lease(
        self, peer_id: str, max_units: int, workloads: list[str], now: float, lease_seconds: float
    ) -> list[Lease]:
        return await self._run(self._lease, peer_id, max_units, workloads, now, lease_seconds)

    def _lease(self, peer_id: str, max_units: int, workloads: list[str], now: float, lease_seconds: float) -> list[Lease]:
        granted: list[Lease] = []
        with self._transaction() as conn:
            self._touch_peer(conn, peer_id, now)
            if not workloads:
                return granted
            names: tuple[str, ...] = ()
            which = "1"
            if ANY_WORKLOAD not in workloads:
                names = tuple(workloads)
                which = f"jobs.workload IN ({', '.join('?' * len(names))})"
            query = (
                "SELECT units.id, units.job_id, jobs.workload, jobs.bundle_version, units.state, units.token,"
                " units.peer_id, units.expires_at, units.attempts, units.last_error"
                " FROM units JOIN jobs ON jobs.id = units.job_id"
                f" WHERE {which}"
                " AND (units.state = 'queued' OR (units.state = 'leased' AND units.expires_at <= ?))"
                " ORDER BY units.id LIMIT ?"
            )
            # Units that give up are skipped; keep looking until enough are granted or none are left.
            while len(granted) < max_units:
                rows = conn.execute(query, (*names, now, max_units - len(granted))).fetchall()
                if not rows:
                    break
                for unit_id, job_id, workload, pinned, *lease_row in rows:
                    unit = leases.grant(self._unit_lease(lease_row), peer_id, now, lease_seconds, self._max_attempts)
                    self._save_unit(conn, unit_id, unit)
                    if unit.state is UnitState.DONE:
                        log.warning("unit %d of job %d: %s", unit_id, job_id, leases.give_up_message(unit))
                        self._finish_items_with_error(conn, unit_id, leases.give_up_message(unit))
                        self._finish_job_if_done(conn, job_id, now)
                        continue
                    assert unit.expires_at is not None
                    items = conn.execute(
                        "SELECT url, crawl FROM items WHERE unit_id = ? AND done = 0 ORDER BY id", (unit_id,)
                    ).fetchall()
                    granted.append(
                        Lease(
                            unit_id=unit_id,
                            token=unit.token,
                            job_id=job_id,
                            workload=workload,
                            payload=linkcheck_jobs.unit_payload(job_id, ((u, bool(c)) for u, c in items)),
                            expires_at=unit.expires_at,
                            bundle=self._bundle_ref(conn, workload, pinned, peer_id),
                        )
                    )
        return granted

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
            _, unit = self._load_unit(conn, unit_id)
            if not leases.holds(unit, peer_id, token):
                raise StaleLease(f"unit {unit_id} token {token} is not your current lease")
            unit = leases.renewed(unit, now, lease_seconds)
            self._save_unit(conn, unit_id, unit)
        assert unit.expires_at is not None
        return unit.expires_at

    async def release(self, peer_id: str, unit_id: int, token: int, now: float) -> None:
        await self._run(self._release, peer_id, unit_id, token, now)

    def _release(self, peer_id: str, unit_id: int, token: int, now: float) -> None:
        with self._transaction() as conn:
            self._touch_peer(conn, peer_id, now)
            _, unit = self._load_unit(conn, unit_id)
            if not leases.holds(unit, peer_id, token):
                raise StaleLease(f"unit {unit_id} token {token} is not your current lease")
            self._save_unit(conn, unit_id, leases.released(unit))

    # ---- reports -----------------------------------------------------------------------

    async def report(self, peer_id: str, report: Report, now: float) -> ReportResponse:
        return await self._run(self._report, peer_id, report, now)

    def _report(self, peer_id: str, report: Report, now: float) -> ReportResponse:
        with self._transaction() as conn:
            self._touch_peer(conn, peer_id, now)
            job_id, unit = self._load_unit(conn, report.unit_id)
            verdict = leases.judge_report(unit, peer_id, report.token)
            if verdict is Verdict.STALE:
                raise StaleLease(f"unit {report.unit_id} token {report.token} is not the current lease")
            if verdict is Verdict.DUPLICATE:
                return ReportResponse(accepted=True, reason="duplicate")
            on_trial = False
            if report.bundle_version is not None and report.exit_code != 3:
                on_trial = self._count_outcome(conn, job_id, report.bundle_version, report.exit_code in (0, 1))
            error = report.error[: linkcheck_jobs.MAX_TEXT] if report.error else None
            if report.exit_code in (0, 1):
                unit = self._merge_results(conn, job_id, report, unit, error)
            elif report.exit_code == 2 and on_trial:
                # The version on trial failed, not the unit: requeue it without using up one of
                # its attempts, or a broken candidate could exhaust a unit before it rolls back.
                unit = replace(leases.released(unit), last_error=error or "workload failed (exit 2)")
            elif report.exit_code == 2:
                unit = leases.failed(unit, error or "workload failed (exit 2)", self._max_attempts)
                if unit.state is UnitState.DONE:
                    self._finish_items_with_error(conn, report.unit_id, leases.give_up_message(unit))
            else:
                message = f"workload refused the input: {error or 'no reason given'}"
                self._finish_items_with_error(conn, report.unit_id, message)
                unit = leases.completed(unit)
            self._save_unit(conn, report.unit_id, unit)
            self._finish_job_if_done(conn, job_id, now)
        return ReportResponse(accepted=True)

    def _count_outcome(self, conn: sqlite3.Connection, job_id: int, version: str, ok: bool) -> bool:
        """Count a finished unit for the version that ran it; roll a failing candidate back.
        True when `version` was the candidate of a rollout in progress (a unit on trial)."""
        (name,) = conn.execute("SELECT workload FROM jobs WHERE id = ?", (job_id,)).fetchone()
        column = "units_ok" if ok else "units_failed"
        if not conn.execute(
            f"UPDATE bundles SET {column} = {column} + 1 WHERE name = ? AND version = ?", (name, version)
        ).rowcount:
            return False  # a version this coordinator never published: nothing to learn from it
        before = self._load_rollout(conn, name)
        if before is None:
            return False
        on_trial = before.state is RolloutState.ROLLING_OUT and before.candidate == version
        after = rollout.counted(before, version, ok)
        if after == before:
            return on_trial
        after = rollout.judged(after, self._tally(conn, name, after.stable))
        self._save_rollout(conn, after)
        if after.state is RolloutState.ROLLED_BACK:
            log.warning("%s", after.message)
        return on_trial

    def _merge_results(
        self, conn: sqlite3.Connection, job_id: int, report: Report, unit: UnitLease, error: str | None
    ) -> UnitLease:
        """Store a (partial) result; requeue what it left out; add the links it found."""
        rows = conn.execute(
            "SELECT id, url, depth, crawl FROM items WHERE unit_id = ? AND done = 0", (report.unit_id,)
        ).fetchall()
        by_url = {url: (item_id, depth, bool(crawl)) for item_id, url, depth, crawl in rows}
        results = linkcheck_jobs.parse_report_items(report.payload, by_url)
        if not results:
            # Nothing done is no progress: count it as a failed attempt so a unit cannot loop forever.
            return leases.failed(unit, error or "workload reported no items", self._max_attempts)
        conn.executemany(
            "UPDATE items SET result = ?, status = ?, final_url = ?, redirects = ?, error = ?, done = 1 WHERE id = ?",
            [(r.result, r.status, r.final_url, encode(list(r.redirects)), r.error, by_url[r.url][0]) for r in results],
        )
        job = linkcheck_jobs.parse_job_input(
            decode(conn.execute("SELECT input FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
        )
        for result in results:
            _, depth, crawl = by_url[result.url]
            if crawl and result.crawled:
                self._add_links(conn, job_id, result, depth, job)
        conn.execute("UPDATE items SET unit_id = NULL WHERE unit_id = ? AND done = 0", (report.unit_id,))
        self._pack_units(conn, job_id)
        return leases.completed(unit)

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

    def _list_jobs(self) -> list[JobStatus]:
        with self._transaction(write=False) as conn:
            ids = [job_id for (job_id,) in conn.execute("SELECT id FROM jobs ORDER BY id")]
            return [self._status(conn, job_id) for job_id in ids]

    @staticmethod
    def _check_job(conn: sqlite3.Connection, job_id: int) -> tuple[Any, ...]:
        row = None
        if 0 <= job_id <= _MAX_ID:
            row = conn.execute(
                "SELECT workload, state, created_at, finished_at FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row

    def _status(self, conn: sqlite3.Connection, job_id: int) -> JobStatus:
        workload, state, created_at, finished_at = self._check_job(conn, job_id)
        units_total, units_done = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(state = 'done'), 0) FROM units WHERE job_id = ?", (job_id,)
        ).fetchone()
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

    async def job_results(self, job_id: int, offset: int, limit: int) -> list[dict[str, Any]]:
        return await self._run(self._job_results, job_id, offset, limit)

    def _job_results(self, job_id: int, offset: int, limit: int) -> list[dict[str, Any]]:
        with self._transaction(write=False) as conn:
            self._check_job(conn, job_id)
            rows = conn.execute(
                "SELECT id, url, result, status, final_url, redirects, error, depth FROM items"
                " WHERE job_id = ? ORDER BY id LIMIT ? OFFSET ?",
                (job_id, limit, offset),
            ).fetchall()
            if not rows:
                return []
            referrers: dict[int, list[str]] = {}
            for item_id, url in conn.execute(
                "SELECT item_id, referrer_url FROM referrers WHERE job_id = ? AND item_id BETWEEN ? AND ?"
                " ORDER BY referrer_url",
                (job_id, rows[0][0], rows[-1][0]),
            ):
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
                    (name, version, bundle.owner_key, bundle.info_hash, bundle.archive_sha256, bundle.manifest,
                     bundle.published_at),
                )
            if current is None:
                self._save_rollout(conn, rollout.first(name, bundle.owner_key, version))
            elif stable and current.stable != version:
                self._save_rollout(conn, rollout.made_stable(current, version, f"{name} {version} is the stable version"))
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
            (r.name, r.owner_key, r.stable, r.candidate, r.percent, r.state.value, r.message,
             r.since_started.ok, r.since_started.failed),
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
