"""`coordinator.store.Store` on one SQLite file: WAL, foreign keys, one transaction per call.

sqlite3 is blocking, so the connection lives on one dedicated thread and every call is handed
to it (`thread`); the event loop never waits on the disk. One thread also means one writer,
which is what SQLite wants anyway. Calls that queue up while the thread is busy commit
together (group commit), each call's transaction a savepoint inside the group's. A coordinator
(`api.serve`) runs that thread's work in a process of its own (`process`), so the store and
the HTTP side do not share one GIL; the calls and their answers are the same.

Each method here hands one function of a concept module (`peers`, `jobs`, `planning`,
`leasing`, `reports`, `queries`, `bundles`) to that thread or process, which calls it with
its own `Database`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from coordinator import assignment, host_pacing
from coordinator.owner_limits import Limits
from coordinator.roles import Role
from coordinator.sql import (
    access,
    bundles,
    holding,
    jobs,
    leasing,
    peers,
    planning,
    postgres,
    queries,
    reports,
    retention,
    streamed,
)
from coordinator.sql.database import Database, Settings
from coordinator.sql.process import Hosted, StoreProcess
from coordinator.sql.thread import StoreThread
from coordinator.store import (
    DEFAULT_UNIT_SIZE,
    OPERATOR,
    AuditEntry,
    Grant,
    HostOverview,
    Owner,
    PeerOverview,
    PublishedBundle,
    QueueDepth,
)
from coordinator.vantage import VantageRules
from overlay.wire import (
    BundleStatus,
    JobStatus,
    Lease,
    PeerUsage,
    RegisterRequest,
    Report,
    ReportResponse,
    UnitLog,
)
from overlay.wire_reports import ItemsAnswer, ItemsReport, ReportVerdict

log = logging.getLogger(__name__)

T = TypeVar("T")


class SqlStore:
    """`coordinator.store.Store` on one SQLite file."""

    def __init__(
        self,
        path: Path | str,
        *,
        unit_size: int = DEFAULT_UNIT_SIZE,
        max_attempts: int = 5,
        host_min_delay: float = host_pacing.DEFAULT_MIN_DELAY,
        epsilon: float = assignment.DEFAULT_EPSILON,
        settle: float = 0.0,
        vantage: VantageRules | None = None,
        rechecks: bool = False,
        own_process: bool = False,
    ) -> None:
        self._settings = Settings(
            unit_size, max_attempts, host_min_delay, epsilon, settle, vantage or VantageRules(), rechecks
        )
        self._path = str(path)
        # own_process: the calls run in a child process (`process`), else on a thread.
        self._own_process = own_process
        self._runner: StoreThread | StoreProcess | None = None
        self._db: Database | None = None  # the thread's (a child process has its own)
        self._observer: Callable[[str, float], None] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._runner is not None:
            raise RuntimeError("store is already open")
        if self._own_process:
            self._runner = StoreProcess(functools.partial(_hosted, self._path, self._settings))
        else:
            db = self._db = Database(self._path, self._settings)
            self._runner = StoreThread(lambda: db.conn, on_rollback=db.forget_cached)
        try:
            await self._run(Database.open, alone=True)
        except BaseException:
            self._runner.stop()
            self._runner = None
            raise
        log.info("store opened at %s", postgres.shown(self._path))

    async def close(self) -> None:
        if self._runner is None:
            return
        try:
            await self._run(Database.close, alone=True)
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

    async def _run(self, fn: Callable[..., T], *args: Any, alone: bool = False) -> T:
        """`fn(database, *args)` on the store's thread, or in its process with the child's own
        database (`fn` must then be a module-level function: it crosses by name)."""
        if self._runner is None:
            raise RuntimeError("store is not open")
        began = time.perf_counter()
        try:
            if isinstance(self._runner, StoreProcess):
                return await self._runner.call(fn, *args, alone=alone)
            return await self._runner.call(fn, self._db, *args, alone=alone)
        finally:
            if self._observer is not None:
                self._observer(getattr(fn, "__name__", "call"), time.perf_counter() - began)

    def observe_calls(self, observer: Callable[[str, float], None] | None) -> None:
        self._observer = observer

    # ---- peers and hosts ---------------------------------------------------------------------

    async def register_peer(self, peer_id: str, request: RegisterRequest, now: float) -> None:
        await self._run(peers.register_peer, peer_id, request, now)

    async def rebalance(self, now: float, *, only_if_needed: bool = False, paced: bool = False) -> None:
        await self._run(planning.rebalance, now, only_if_needed, paced)

    # ---- jobs, leases and reports ------------------------------------------------------------

    async def create_job(
        self,
        workload: str,
        input: dict[str, Any],
        now: float,
        version: str | None = None,
        owner_key: str | None = None,
    ) -> int:
        return await self._run(jobs.create_job, workload, input, now, version, owner_key)

    async def delete_job(self, job_id: int, actor: str, now: float) -> JobStatus:
        return await self._run(retention.delete_job, job_id, actor, now)

    async def purge(self, now: float, keep_seconds: float | None) -> int:
        return await self._run(retention.purge, now, keep_seconds)

    async def cancel_job(self, job_id: int, actor: str, now: float) -> JobStatus:
        await self._run(jobs.cancel_job, job_id, actor, now)
        return await self.job_status(job_id)

    async def lease(
        self,
        peer_id: str,
        max_units: int,
        workloads: list[str],
        now: float,
        lease_seconds: float,
        usage: PeerUsage | None = None,
        address: str | None = None,
    ) -> list[Lease]:
        granted = await self._run(leasing.lease, peer_id, max_units, workloads, now, lease_seconds, usage, address)
        return [g.lease() for g in granted]

    async def renew(self, peer_id: str, unit_id: int, token: int, now: float, lease_seconds: float) -> float:
        return await self._run(holding.renew, peer_id, unit_id, token, now, lease_seconds)

    async def release(self, peer_id: str, unit_id: int, token: int, now: float, unable: str | None = None) -> None:
        await self._run(holding.release, peer_id, unit_id, token, now, unable)

    async def report(self, peer_id: str, report: Report, now: float) -> ReportResponse:
        return await self._run(reports.report, peer_id, reports.incoming(report), now)

    async def report_batch(self, peer_id: str, batch: list[Report], now: float) -> list[ReportVerdict]:
        verdicts = await self._run(reports.report_batch, peer_id, [reports.incoming(r) for r in batch], now)
        return [ReportVerdict(*verdict) for verdict in verdicts]

    async def report_items(self, peer_id: str, report: ItemsReport, now: float) -> ItemsAnswer:
        accepted, taken, reason = await self._run(
            streamed.report_items, peer_id, report.unit_id, report.token, report.items, report.bundle_version, now
        )
        return ItemsAnswer(accepted, taken, reason)

    # ---- reading -----------------------------------------------------------------------------

    async def job_status(self, job_id: int) -> JobStatus:
        return await self._run(queries.job_status, job_id)

    async def list_jobs(self, owner_key: str | None = None) -> list[JobStatus]:
        return await self._run(queries.list_jobs, owner_key)

    async def job_results(
        self, job_id: int, offset: int, limit: int, *, counted_as: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        return await self._run(queries.job_results, job_id, offset, limit, counted_as)

    async def job_columns(self, job_id: int) -> list[str]:
        return await self._run(queries.job_columns, job_id)

    async def job_logs(self, job_id: int) -> list[UnitLog]:
        return await self._run(queries.job_logs, job_id)

    async def peer_count(self, seen_since: float = 0.0) -> int:
        return await self._run(queries.peer_count, seen_since)

    async def queue_depth(self) -> QueueDepth:
        return await self._run(queries.queue_depth)

    async def peers_overview(self, seen_since: float, limit: int) -> list[PeerOverview]:
        return await self._run(queries.peers_overview, seen_since, limit)

    async def hosts_overview(self, now: float, limit: int) -> list[HostOverview]:
        return await self._run(queries.hosts_overview, now, limit)

    # ---- owners and bundles ------------------------------------------------------------------

    async def add_owner(self, name: str, public_key: str, now: float) -> None:
        await self.grant(name, public_key, Role.OWNER, OPERATOR, now)

    async def owners(self) -> list[Owner]:
        return [Owner(g.name, g.public_key, g.added_at) for g in await self.grants() if g.role == Role.OWNER]

    async def is_owner_key(self, public_key: str) -> bool:
        return await self.role_of(public_key) in (Role.OWNER, Role.OPERATOR)

    # ---- who may do what ---------------------------------------------------------------------

    async def grant(self, name: str, public_key: str, role: str, actor: str, now: float) -> bool:
        return await self._run(access.grant, name, public_key, role, actor, now)

    async def revoke(self, public_key: str, actor: str, now: float) -> None:
        await self._run(access.revoke, public_key, actor, now)

    async def grants(self) -> list[Grant]:
        return await self._run(access.grants)

    async def role_of(self, public_key: str) -> str | None:
        return await self._run(access.role_of, public_key)

    async def set_limits(self, public_key: str, limits: Limits, actor: str, now: float) -> None:
        await self._run(access.set_limits, public_key, limits, actor, now)

    async def limits_of(self, public_key: str) -> Limits:
        return await self._run(access.limits_of, public_key)

    async def audit_log(self, limit: int) -> list[AuditEntry]:
        return await self._run(access.audit_log, limit)

    async def add_bundle(self, bundle: PublishedBundle, *, stable: bool = False) -> bool:
        return await self._run(bundles.add_bundle, bundle, stable)

    async def keep_archive(self, name: str, version: str, archive: bytes) -> None:
        await self._run(bundles.keep_archive, name, version, archive)

    async def bundle_archive(self, name: str, version: str) -> bytes | None:
        return await self._run(bundles.bundle_archive, name, version)

    async def bundle_info(self, name: str, version: str) -> PublishedBundle:
        return await self._run(bundles.bundle_info, name, version)

    async def published_bundles(self) -> list[PublishedBundle]:
        return await self._run(bundles.published_bundles)

    async def bundle_status(self, name: str) -> BundleStatus:
        return await self._run(bundles.bundle_status, name)

    async def list_bundles(self) -> list[BundleStatus]:
        return await self._run(bundles.list_bundles)

    async def set_rollout(
        self, name: str, version: str, percent: int, signer_key: str, now: float, force: bool = False
    ) -> BundleStatus:
        return await self._run(bundles.set_rollout, name, version, percent, signer_key, now, force)


def _hosted(path: str, settings: Settings) -> Hosted:
    """The database a `StoreProcess` child runs the calls on (see SqlStore's own_process)."""
    db = Database(path, settings)
    return Hosted(target=db, connection=lambda: db.conn, on_rollback=db.forget_cached, close=db.close)
