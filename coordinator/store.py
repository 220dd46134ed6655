"""The coordinator's store: one interface, every state change one transaction.

The SQLite store (`coordinator.sql`) is the default; a PostgreSQL store must fit the
same `Store` protocol. Errors are drawn here so the API maps them to HTTP once:

    StoreError
    ├── InvalidInput   the request is well-formed msgpack but its content is unusable  -> 400
    ├── NotFound       no such job or unit                                             -> 404
    ├── UnknownPeer    the signer never registered                                     -> 403
    ├── UnknownOwner   a bundle signed by a key the operator has not registered        -> 403
    ├── NotOwner       a bundle name, or its rollout, belongs to another owner key     -> 403
    ├── StaleLease     the lease named is not (or no longer) the caller's              -> 409
    ├── LimitReached   an owner's limit (jobs at once, URLs per job or day, bundle size) -> 429
    └── Conflict       a bundle version already published with other content, or a
                       job that already finished                                       -> 409
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from coordinator import unit_sizing
from coordinator.owner_limits import Limits
from overlay import wire
from overlay.errors import OsaasError
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

# The most URLs in one work unit. Units are sized per peer (`unit_sizing`: about 30 s of its
# work, 20 URLs until it has reported); an operator may cap them lower (`--unit-size`).
DEFAULT_UNIT_SIZE = unit_sizing.MAX_UNIT

# ---- the scheduler's numbers (see docs/operators.md, "How work is scheduled") ---------------
# A peer's weight when it did not say what it sustains: what a peer without a configured
# budget would have said.
DEFAULT_PEER_CAPACITY = float(wire.DEFAULT_CAPACITY)  # bytes/s
# Demand is counted in URLs (items), weights in bytes/s; this converts one to the other for the
# assignment's demand floor: about what checking one URL moves, a crawled page's HTML (tens of
# kB) averaged with the HEAD requests of links that are only checked (under 1 kB).
BYTES_PER_ITEM = 25_000
REBALANCE_INTERVAL = 2.0  # seconds between assignments of hosts to peers: the planning interval
# A peer is active while it holds a lease it keeps alive, or was heard from this recently: a
# peer with free slots asks for work every second or so (RETRY_AFTER), so ten seconds of
# silence means it stopped, paused on its budget, or went to another coordinator.
PEER_QUIET_SECONDS = 10.0
# Who changed something, in the audit log, when it was the command line on the coordinator's
# host (which reaches the database directly) rather than a signed request.
OPERATOR = "operator"
RENEWS_PER_LEASE = 3  # peers renew a lease every third of its length (peer.unit_work)


class StoreError(OsaasError):
    """Base of the errors a store raises on purpose."""


class InvalidInput(StoreError):
    """A job or report whose content cannot be used; the message says what is wrong."""

    http_status = 400
    code = "invalid_input"


class NotFound(StoreError):
    """An unknown job or unit id."""

    http_status = 404
    code = "not_found"


class UnknownPeer(StoreError):
    """A signed request from a peer that has not registered."""

    http_status = 403
    code = "unknown_peer"


class StaleLease(StoreError):
    """A renew, release or report naming a lease that is not the unit's current one."""

    http_status = 409
    code = "stale_lease"


class UnknownOwner(StoreError):
    """A bundle signed by a key that the operator never registered as an owner."""

    http_status = 403
    code = "unknown_owner"


class NotOwner(StoreError):
    """A bundle name is bound to another owner key: only that key may publish or roll it out."""

    http_status = 403
    code = "not_owner"


class LimitReached(StoreError):
    """An owner asked for more than its limits allow (`owner_limits`); the message says which
    limit and when it resets."""

    http_status = 429
    code = "limit_reached"


class Conflict(StoreError):
    """What is asked clashes with what is stored: a bundle version already published with
    different content (versions are immutable), a job already finished, a version the
    coordinator rolled back rolled out again without force."""

    http_status = 409
    code = "conflict"


class StoreUnavailable(StoreError):
    """The store's database does not answer (a PostgreSQL server restarting, a network down):
    nothing of the call was done; ask again later."""

    http_status = 503
    code = "store_unavailable"
    retry_after = 5.0


def unknown_owner(public_key: str) -> UnknownOwner:
    """The refusal of a bundle signed by an unregistered key, the same wherever it is noticed."""
    return UnknownOwner(
        f"owner key {public_key[:16]}… is not registered here; "
        "the operator adds it with `osaas coordinator owner add NAME PUBKEY`"
    )


@dataclass(frozen=True, slots=True)
class Owner:
    """An owner key the operator admitted (`osaas coordinator owner add NAME PUBKEY`)."""

    name: str
    public_key: str  # hex
    added_at: float


@dataclass(frozen=True, slots=True)
class Grant:
    """A key's role on this coordinator (`coordinator.roles`), granted by the operator."""

    name: str
    public_key: str  # hex
    role: str  # operator | owner | viewer
    added_at: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change: who (a key, or "operator" for the command line on the coordinator's host),
    what, when."""

    at: float
    actor: str
    action: str  # grant, revoke, limits, submit, cancel, publish, rollout
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class PublishedBundle:
    """One published bundle version, as stored: what peers fetch and the seeder seeds."""

    name: str
    version: str
    owner_key: str  # hex
    info_hash: bytes  # v1, 20 bytes
    archive_sha256: bytes
    manifest: bytes  # the owner-signed manifest, `workloads.bundle.encode` bytes
    published_at: float


@dataclass(frozen=True, slots=True)
class PeerOverview:
    """A registered peer as the operator's dashboard shows it."""

    peer_id: str
    name: str
    capacity: float  # bytes/s it says it can sustain (its weight in host assignment at most)
    used: int | None  # bytes moved in its budget period, as it last said
    cap: int | None  # its transfer cap for the period; None: none
    down_rate: float | None  # bytes/s, as it last said
    up_rate: float | None
    last_seen: float
    hosts: int  # websites assigned to it now
    throughput: float | None  # items/s the coordinator measured
    quarantined: str | None = None  # why its key gets no more work (`coordinator.reputation`)


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """The work of running jobs, for metrics."""

    items_pending: int  # items of running jobs not done yet
    units_queued: int  # units made and not leased
    units_leased: int  # units a peer holds now


@dataclass(frozen=True, slots=True)
class HostOverview:
    """A website's pace, for the dashboard's politeness table."""

    key: str  # scheme://host:port
    peer_id: str | None  # the one peer assigned to it
    next_allowed_at: float
    crawl_delay: float
    backoff: float
    leased: bool  # a live lease on it now


class Store(Protocol):
    """What the coordinator's API needs from persistent state. All times are epoch seconds."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def register_peer(self, peer_id: str, request: RegisterRequest, now: float) -> None:
        """Create or refresh the peer `peer_id` (its hex public key); its hosts are assigned at
        the next `rebalance`."""

    async def rebalance(self, now: float, *, only_if_needed: bool = False, paced: bool = False) -> None:
        """Assign every host with work to an active peer (capacity-weighted, sticky, bounded
        loads: `coordinator.assignment`). `only_if_needed`: skip it unless peers registered or
        hosts without a peer got work since the last one. `paced`: skip it while the last plan
        is recent for what it cost (a large store plans less often than a small one)."""

    async def create_job(
        self,
        workload: str,
        input: dict[str, Any],
        now: float,
        version: str | None = None,
        owner_key: str | None = None,
    ) -> int:
        """Validate the input, store the job, its items and units; return the job id. `workload`
        names a published bundle; `version` pins one of its versions (None follows its rollout).
        The input is of the kind its job model takes: seed URLs (`url_jobs.parse_job_input`),
        items or records (`item_jobs.parse_input`).
        The job belongs to `owner_key` (None: the operator's), within that key's limits
        (`LimitReached`)."""

    async def delete_job(self, job_id: int, actor: str, now: float) -> JobStatus:
        """Cancel it if it runs, and delete its results and logs (its status stays, "deleted";
        `purge` removes the rows)."""

    async def purge(self, now: float, keep_seconds: float | None) -> int:
        """Delete finished jobs' results older than `keep_seconds` (None: never) and the rows
        of deleted jobs, a batch at a time: rows deleted, 0 when nothing is left to do."""

    async def cancel_job(self, job_id: int, actor: str, now: float) -> JobStatus:
        """Stop a running job: nothing more is leased, its holders' reports are taken as
        duplicates; `Conflict` if it already finished."""

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
        """Grant up to `max_units` units of the given bundle names ("*": any), at most one per
        host, only of hosts assigned to the peer (or of vantage jobs, for a peer of a network
        their websites have not had: `coordinator.vantage`) and only when the host's pace
        allows; each lease names the bundle version the peer must run it with. `usage` is
        recorded; `address` is where the request came from, as the connection showed it."""

    async def renew(self, peer_id: str, unit_id: int, token: int, now: float, lease_seconds: float) -> float:
        """Extend the caller's current lease; return the new expiry."""

    async def release(self, peer_id: str, unit_id: int, token: int, now: float, unable: str | None = None) -> None:
        """Give the caller's current lease back: the unit is queued again, no attempt counted.
        `unable`: why the peer cannot work on it; its host then goes to other peers for a while."""

    async def report(self, peer_id: str, report: Report, now: float) -> ReportResponse:
        """Merge a unit's outcome, or answer a duplicate; raise `StaleLease` otherwise. The
        outcome counts for the bundle version that ran it, and may roll a failing candidate back.
        Records that break the job's schema refuse the report as the workload's failure: not
        accepted, with "report refused: <reason>", an attempt used and the version charged."""

    async def report_batch(self, peer_id: str, reports: list[Report], now: float) -> list[ReportVerdict]:
        """`report` for each of `reports` in one transaction; a report refused at the door
        (stale, unknown unit) changes nothing and does not stop the others; one whose records
        are refused counts as `report` says (code "report_refused")."""

    async def report_items(self, peer_id: str, report: ItemsReport, now: float) -> ItemsAnswer:
        """Finish the items a running unit streamed (process API version 2), under its current
        lease (else `StaleLease`; a unit the same lease finished since: all taken already).
        Items already finished are taken once (the first record counts); the unit stays leased.
        Records that break the job's schema refuse the report as `report` refuses one: not
        accepted, the unit queued again using an attempt, the version charged."""

    async def job_status(self, job_id: int) -> JobStatus:
        """The job's progress. Units are formed when leased, so while a job runs `units_total`
        counts the units formed so far plus an estimate of those its waiting URLs will make."""

    async def job_results(
        self, job_id: int, offset: int, limit: int, *, counted_as: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Items of the job ordered by id, each a row of its model's columns (`job_columns`:
        url, the record's stored fields, for crawls depth and referrers (sorted), failed: why
        the platform gave up on it) and done. Unfinished items have every field None.
        `counted_as`: only finished items job status counts as one of these."""

    async def job_columns(self, job_id: int) -> list[str]:
        """The columns of the job's results rows, in order (from its job model)."""

    async def job_logs(self, job_id: int) -> list[UnitLog]:
        """The stderr tails of the job's failed units, as their peers sent them, oldest first."""

    async def list_jobs(self, owner_key: str | None = None) -> list[JobStatus]:
        """Every job, or only those of `owner_key`."""

    async def peer_count(self, seen_since: float = 0.0) -> int:
        """Registered peers last heard from at or after `seen_since`."""

    async def queue_depth(self) -> QueueDepth:
        """How much work waits and how much is out."""

    def observe_calls(self, observer: Callable[[str, float], None] | None) -> None:
        """From now on, `observer(call, seconds)` after each call: its name and how long it took
        (None: no more)."""

    async def peers_overview(self, seen_since: float, limit: int) -> list[PeerOverview]:
        """Peers last heard from at or after `seen_since`, most capacity first, at most `limit`."""

    async def hosts_overview(self, now: float, limit: int) -> list[HostOverview]:
        """The hosts that are held back or leased now, the longest wait first, at most `limit`."""

    # ---- owners and bundles ------------------------------------------------------------

    async def add_owner(self, name: str, public_key: str, now: float) -> None:
        """Admit owner key `public_key` (hex) as `name` (`grant` with the owner role, by the
        operator); again with the same pair is a no-op."""

    async def owners(self) -> list[Owner]: ...

    async def is_owner_key(self, public_key: str) -> bool:
        """May this key publish bundles (the owner or operator role)?"""

    # ---- who may do what ---------------------------------------------------------------

    async def grant(self, name: str, public_key: str, role: str, actor: str, now: float) -> bool:
        """Give a key a role (`coordinator.roles`) under a name; False if it had just that."""

    async def revoke(self, public_key: str, actor: str, now: float) -> None:
        """Take a key's role away (`NotFound` if it had none)."""

    async def grants(self) -> list[Grant]: ...

    async def role_of(self, public_key: str) -> str | None: ...

    async def set_limits(self, public_key: str, limits: Limits, actor: str, now: float) -> None: ...

    async def limits_of(self, public_key: str) -> Limits:
        """The key's limits: the operator's choice, else the defaults (an operator has none)."""

    async def audit_log(self, limit: int) -> list[AuditEntry]:
        """The newest `limit` changes, oldest first."""

    async def add_bundle(self, bundle: PublishedBundle, *, stable: bool = False) -> bool:
        """Publish a version (its owner key must have the owner or operator role); False when the very same version was already
        published. The first
        version of a name binds the name to its owner key and becomes its stable version;
        `stable=True` makes a later version stable at once (the operator's built-in bundles)."""

    async def keep_archive(self, name: str, version: str, archive: bytes) -> None:
        """Keep a published version's archive (checked against its manifest by the caller), so
        that every coordinator of a shared store can seed it; keeping it again changes nothing.
        A store only one coordinator uses keeps none."""

    async def bundle_archive(self, name: str, version: str) -> bytes | None:
        """A published version's archive; None when none was kept."""

    async def bundle_info(self, name: str, version: str) -> PublishedBundle: ...

    async def bundle_status(self, name: str) -> BundleStatus: ...

    async def list_bundles(self) -> list[BundleStatus]: ...

    async def published_bundles(self) -> list[PublishedBundle]:
        """Every published version of every name, oldest first: what the seeder seeds."""

    async def set_rollout(
        self, name: str, version: str, percent: int, signer_key: str, now: float, force: bool = False
    ) -> BundleStatus:
        """Send `version` to `percent` of peers (100: make it stable); only the name's owner may,
        and a version the coordinator rolled back only with `force` (else Conflict)."""
