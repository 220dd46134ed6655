"""Which unit a host gives the peer that asks: the rules a store applies to lease one host.

Pure: the store loads a host's pace and its units that are not done, and these rules say
whether the host may give one now, which of its units go first, and when a silent holder's
lease is taken back; for a new unit, which waiting items it holds.

- A host gives at most one unit and only when `host_pacing.may_lease` allows: no live lease
  on it, its pause over. An expired lease, or one taken back, paces the host as abandoned.
- A unit released or failed earlier, or expired, is granted again as it is, before a new one.
- A new unit holds the waiting items of the host's oldest job, in id order, up to that job's
  unit size (the store asks only for as many as the peer's throughput calls for:
  `unit_sizing.unit_size`), all of one vantage point (`coordinator.vantage`); a job whose
  next vantage point the asking peer may not be is passed over for the next job.
- A live lease whose holder went silent near the end of its job (`unit_sizing.is_straggler`)
  is taken back and granted again with a new token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from coordinator import host_pacing, unit_sizing, url_jobs
from coordinator.host_pacing import HostPace
from coordinator.leases import UnitLease, UnitState
from coordinator.store import RENEWS_PER_LEASE


@dataclass(frozen=True, slots=True)
class OpenUnit:
    """One of a host's units that is not done, as leasing needs it."""

    unit_id: int
    job_id: int
    lease: UnitLease
    leased_at: float | None  # None: leased by a coordinator older than schema 3
    renewed_at: float | None


class TakenBack(NamedTuple):
    """A straggler's lease taken back: since when its holder counts as stopped, and how long
    its unit was expected to take."""

    since: float
    expected_seconds: float


@dataclass(frozen=True, slots=True)
class Reclaimed:
    """A host's state once expired and straggling leases are reclaimed."""

    pace: HostPace  # the host's pace after them
    may_lease: bool  # may the host give a unit now?
    units: list[OpenUnit]  # its open units, grantable ones first in order (taken back: expired now)


def renew_interval(lease_seconds: float) -> float:
    """How often a holder renews (peers renew every RENEWS_PER_LEASE-th of a lease)."""
    return lease_seconds / RENEWS_PER_LEASE


def silent(unit: OpenUnit, now: float, lease_seconds: float) -> bool:
    """Has the holder of this live lease missed renewals (MISSED_RENEWALS)? Only then is it
    worth asking whether its unit straggles. A lease without times (schema < 3) just expires."""
    if unit.leased_at is None or unit.renewed_at is None:
        return False
    return now - unit.renewed_at > unit_sizing.MISSED_RENEWALS * renew_interval(lease_seconds)


def taken_back(
    unit: OpenUnit, now: float, lease_seconds: float, open_items: int, throughput: float | None, work_waiting: bool
) -> TakenBack | None:
    """Is this silent holder's lease a straggler to take back (None: leave it alone)?
    `open_items`: the unit's items not done; `throughput`: its holder's estimate;
    `work_waiting`: its job still has waiting items or queued units for other peers."""
    if unit.leased_at is None or unit.renewed_at is None:
        return None
    interval = renew_interval(lease_seconds)
    expected = unit_sizing.expected_seconds(open_items, throughput)
    if not unit_sizing.is_straggler(unit.leased_at, expected, now, work_waiting, unit.renewed_at, interval):
        return None
    # The holder stops its unit once it could not renew for a while (peer's STOP_UNRENEWED,
    # under MISSED_RENEWALS intervals): by then it left the host alone.
    return TakenBack(unit.renewed_at + unit_sizing.MISSED_RENEWALS * interval, expected)


def reclaim(
    key: str,
    pace: HostPace,
    units: Sequence[OpenUnit],
    now: float,
    min_delay: float,
    straggler: Callable[[OpenUnit], TakenBack | None],
) -> Reclaimed | None:
    """The host's units with expired and straggling leases reclaimed; None while a live lease
    holds it (never two peers on one host). `straggler` says whether a live lease is taken
    back (`taken_back`, with what the store looks up for it). A key that is no website (items
    that are not http(s) URLs, a part of an items job) is never paced."""
    paced = pace
    reclaimed: list[OpenUnit] = []
    for unit in units:
        if unit.lease.state is UnitState.LEASED:
            expires_at = unit.lease.expires_at
            assert expires_at is not None
            if expires_at > now:
                back = straggler(unit)
                if back is None:
                    return None
                # Granted like an expired lease, with a new token.
                unit = replace(unit, lease=unit.lease._replace(expires_at=now))
                paced = host_pacing.after_abandoned(paced, back.since, min_delay)
            else:
                paced = host_pacing.after_abandoned(paced, expires_at, min_delay)
        reclaimed.append(unit)
    if not url_jobs.is_website(key):
        return Reclaimed(pace, True, reclaimed)
    return Reclaimed(paced, host_pacing.may_lease(paced, now, 0), reclaimed)


class WaitingItem(NamedTuple):
    """An item not taken into a unit yet, as a store lists a host's: oldest job first."""

    job_id: int
    item_id: int
    url: str
    crawl: bool
    replica: int = 0  # its vantage point (0 for a job without vantage points)


class FormedUnit(NamedTuple):
    job_id: int
    first_item: int
    last_item: int
    items: list[tuple[str, bool]]  # (url, crawl) in id order
    replica: int = 0


def form_unit(
    waiting: Sequence[WaitingItem],
    job_unit_size: Callable[[int], int],
    may_serve: Callable[[int, int], bool] = lambda job_id, replica: True,
    may_take: Callable[[WaitingItem], bool] = lambda item: True,
) -> FormedUnit | None:
    """A new unit of a host's waiting items: those of its oldest job whose next item's vantage
    point the asking peer may be (`may_serve(job_id, replica)`) and that it may take
    (`may_take`: a re-check, say, that it did not answer first), from that item on while they
    are of the same vantage point and it may take them, up to the job's unit size
    (`job_unit_size`); None when nothing waits that it may take. `waiting` is ordered by job,
    then item. A job's items are taken in id order only (its queue's cursor), so a job is
    passed over, never skipped into."""
    for job_id in dict.fromkeys(item.job_id for item in waiting):
        of_job = [item for item in waiting if item.job_id == job_id]
        replica = of_job[0].replica
        if not may_serve(job_id, replica) or not may_take(of_job[0]):
            continue
        size = job_unit_size(job_id)
        picked: list[WaitingItem] = []
        for item in of_job:
            if item.replica != replica or len(picked) == size or not may_take(item):
                break
            picked.append(item)
        return FormedUnit(
            job_id, picked[0].item_id, picked[-1].item_id, [(item.url, item.crawl) for item in picked], replica
        )
    return None
