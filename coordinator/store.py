"""The coordinator's store: one interface, every state change one transaction.

The SQLite store (`coordinator.sqlite_store`) is the default; a PostgreSQL store must fit the
same `Store` protocol. Errors are drawn here so the API maps them to HTTP once:

    StoreError
    ├── InvalidInput   the request is well-formed msgpack but its content is unusable  -> 400
    ├── NotFound       no such job or unit                                             -> 404
    ├── UnknownPeer    the signer never registered                                     -> 403
    └── StaleLease     the lease named is not (or no longer) the caller's              -> 409
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol, Self

from overlay.wire import JobStatus, Lease, RegisterRequest, Report, ReportResponse

# URLs per work unit. Each unit costs a workload process start (~0.1 s of CPU), so units are
# large enough that starting workloads stays a small share of the work.
DEFAULT_UNIT_SIZE = 100


class StoreError(Exception):
    """Base of the errors a store raises on purpose."""


class InvalidInput(StoreError):
    """A job or report whose content cannot be used; the message says what is wrong."""


class NotFound(StoreError):
    """An unknown job or unit id."""


class UnknownPeer(StoreError):
    """A signed request from a peer that has not registered."""


class StaleLease(StoreError):
    """A renew, release or report naming a lease that is not the unit's current one."""


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
        """Create or refresh the peer `peer_id` (its hex public key)."""

    async def create_job(self, workload: str, input: dict[str, Any], now: float) -> int:
        """Validate the input, store the job, its items and units; return the job id."""

    async def lease(
        self, peer_id: str, max_units: int, workloads: list[str], now: float, lease_seconds: float
    ) -> list[Lease]:
        """Grant up to `max_units` eligible units of the given workloads, oldest first."""

    async def renew(self, peer_id: str, unit_id: int, token: int, now: float, lease_seconds: float) -> float:
        """Extend the caller's current lease; return the new expiry."""

    async def release(self, peer_id: str, unit_id: int, token: int, now: float) -> None:
        """Give the caller's current lease back: the unit is queued again, no attempt counted."""

    async def report(self, peer_id: str, report: Report, now: float) -> ReportResponse:
        """Merge a unit's outcome, or answer a duplicate; raise `StaleLease` otherwise."""

    async def job_status(self, job_id: int) -> JobStatus: ...

    async def job_results(self, job_id: int, offset: int, limit: int) -> list[dict[str, Any]]:
        """Items of the job ordered by id: url, result, status, final_url, redirects, error,
        referrers (sorted), depth. Unfinished items have result None."""

    async def list_jobs(self) -> list[JobStatus]: ...

    async def peer_count(self, seen_since: float = 0.0) -> int:
        """Registered peers last heard from at or after `seen_since`."""
