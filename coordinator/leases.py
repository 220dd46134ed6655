"""A work unit's lease lifecycle and fencing rules, as pure functions over `UnitLease`.

    queued ──grant──▶ leased ──report (exit 0/1/3)──▶ done
      ▲                 │ │
      └──release/fail───┘ └──expires, then grant: re-leased with attempts+1, or done (gave up)

There is no timer: an expired lease stays `leased` until someone asks for work, so its holder's
report is still welcome until the unit is granted to another peer. Every grant increments the
fencing token; only the holder of the current token may renew, release or report, and a report
for a finished unit from the peer and token that finished it is recognised as a duplicate.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

LEASE_EXPIRED = "lease expired"
UNABLE_QUORUM = 3  # different peers unable to run a unit: its own trouble, an attempt used


class UnitState(enum.StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"


class Verdict(enum.StrEnum):
    """What to do with a report."""

    ACCEPT = "accept"
    DUPLICATE = "duplicate"  # already merged: answer as accepted, change nothing
    STALE = "stale"  # not the current lease: reject, change nothing


class UnitLease(NamedTuple):
    """A unit's lease as stored. A named tuple: every lease and report makes and changes some,
    and a tuple is built several times faster than a frozen dataclass sets its fields."""

    state: UnitState
    token: int = 0
    peer_id: str | None = None
    expires_at: float | None = None
    attempts: int = 0  # failed attempts: expired leases and exit-2 reports
    last_error: str | None = None


def is_eligible(unit: UnitLease, now: float) -> bool:
    """May this unit be granted to a peer at `now`?"""
    if unit.state is UnitState.QUEUED:
        return True
    return unit.state is UnitState.LEASED and unit.expires_at is not None and unit.expires_at <= now


def grant(unit: UnitLease, peer_id: str, now: float, lease_seconds: float, max_attempts: int) -> UnitLease:
    """Lease an eligible unit to `peer_id`. The result is `done` when an expired lease was its
    last allowed attempt; the caller then finishes its items with `give_up_message`."""
    if not is_eligible(unit, now):
        raise ValueError(f"unit in state {unit.state} with expiry {unit.expires_at} is not eligible at {now}")
    attempts, last_error = unit.attempts, unit.last_error
    if unit.state is UnitState.LEASED:
        attempts, last_error = attempts + 1, LEASE_EXPIRED
        if attempts >= max_attempts:
            # A new token and no holder: the expired holder's late report must now be stale.
            return UnitLease(UnitState.DONE, unit.token + 1, None, None, attempts, last_error)
    # Built whole, not through _replace: every lease makes one, and _replace is several times slower.
    return UnitLease(UnitState.LEASED, unit.token + 1, peer_id, now + lease_seconds, attempts, last_error)


def holds(unit: UnitLease, peer_id: str, token: int) -> bool:
    """Is (`peer_id`, `token`) the unit's current, unfinished lease? Expired but not re-leased counts."""
    return unit.state is UnitState.LEASED and unit.token == token and unit.peer_id == peer_id


def judge_report(unit: UnitLease, peer_id: str, token: int) -> Verdict:
    if holds(unit, peer_id, token):
        return Verdict.ACCEPT
    if unit.state is UnitState.DONE and unit.token == token and unit.peer_id == peer_id:
        return Verdict.DUPLICATE
    return Verdict.STALE


def renewed(unit: UnitLease, now: float, lease_seconds: float) -> UnitLease:
    return unit._replace(expires_at=now + lease_seconds)


def released(unit: UnitLease) -> UnitLease:
    return unit._replace(state=UnitState.QUEUED, peer_id=None, expires_at=None)


def completed(unit: UnitLease) -> UnitLease:
    """The holder's report finished the unit; peer and token stay to recognise duplicates."""
    return UnitLease(UnitState.DONE, unit.token, unit.peer_id, None, unit.attempts, unit.last_error)


def failed(unit: UnitLease, error: str, max_attempts: int) -> UnitLease:
    """The holder reported a retryable failure: queue again, or give up after `max_attempts`."""
    attempts = unit.attempts + 1
    if attempts >= max_attempts:
        return unit._replace(state=UnitState.DONE, expires_at=None, attempts=attempts, last_error=error)
    return unit._replace(state=UnitState.QUEUED, peer_id=None, expires_at=None, attempts=attempts, last_error=error)


def give_up_message(unit: UnitLease) -> str:
    return f"gave up after {unit.attempts} attempts: {unit.last_error}"


class AfterReport(NamedTuple):
    """What an accepted report does to its unit."""

    lease: UnitLease
    # Set when the unit's open items can no longer be done: finish them with this error.
    give_up: str | None = None


def after_report(
    unit: UnitLease, exit_code: int, results: int, error: str | None, on_trial: bool, max_attempts: int
) -> AfterReport:
    """The unit after its holder's report: `results` items came back (exit 0 or 1); `on_trial`:
    the report's bundle version is a rollout's candidate.

    exit 0/1 with items: done (items it left out become a unit of their own, the store's part);
    exit 0/1 without items: nothing done is no progress, a failed attempt, so a unit cannot loop
    for ever; exit 2: a failed attempt, unless the version on trial failed and not the unit
    (queued again without using up an attempt, or a broken candidate could exhaust a unit
    before it rolls back); exit 3: the workload refused the input, done with that error."""
    if exit_code in (0, 1):
        if results:
            return AfterReport(completed(unit))
        return _failed_attempt(unit, error or "workload reported no items", max_attempts)
    if exit_code == 2 and on_trial:
        return AfterReport(released(unit)._replace(last_error=error or "workload failed (exit 2)"))
    if exit_code == 2:
        return _failed_attempt(unit, error or "workload failed (exit 2)", max_attempts)
    return AfterReport(completed(unit), f"workload refused the input: {error or 'no reason given'}")


def after_refused_report(unit: UnitLease, reason: str, max_attempts: int) -> AfterReport:
    """The unit after its holder's report was refused (its records break the job's schema):
    a failed attempt, as a workload that reported nothing usable, even for a version on trial
    (the version is charged for it, and a version whose reports are refused rolls back)."""
    return _failed_attempt(unit, reason, max_attempts)


def after_unable(unit: UnitLease, reason: str, nobody_can: bool, max_attempts: int) -> AfterReport:
    """The unit after its holder gave it back as unable (`reason`: the peer's trouble, e.g. its
    bundle would not download there): queued again with no attempt used, the reason kept for
    the owner to see; unless `nobody_can` (every peer that could take it stepped aside, or
    enough of them: `UNABLE_QUORUM`), when the trouble is the unit's or its bundle's after all
    and an attempt is used, so that a unit nobody can run ends instead of going round for ever."""
    if nobody_can:
        return _failed_attempt(unit, f"no peer could run it: {reason}", max_attempts)
    return AfterReport(released(unit)._replace(last_error=f"unable: {reason}"))


def nobody_can(stepped_aside: int, able: int) -> bool:
    """Have enough peers stepped aside from a unit's host to blame the unit, not the peers?
    `stepped_aside`: peers that could not run it lately; `able`: active peers that run its
    bundle. A lone peer is never enough (it may be paused, or its link down); UNABLE_QUORUM
    different peers are, and so is every peer of a network of two or more."""
    return stepped_aside >= UNABLE_QUORUM or (able >= 2 and stepped_aside >= able)


def _failed_attempt(unit: UnitLease, error: str, max_attempts: int) -> AfterReport:
    after = failed(unit, error, max_attempts)
    return AfterReport(after, give_up_message(after) if after.state is UnitState.DONE else None)
