"""A bundle name's rollout, as pure functions over `Rollout`: who runs which version, and when a
candidate version is rolled back.

    stable ──set(v, p<100)──▶ rolling_out ──set(v, 100)──▶ stable (v is the stable version now)
      ▲                           │
      └──────── set(v, p) ◀── rolled_back ◀──judge: the candidate fails clearly more often

A version the coordinator rolled back stays marked (`rolled_back`): rolling it out again, or
making it stable, takes the owner's `force`, which clears the mark.

Which peers get the candidate is a stable hash of (name, version, peer id): the same peer keeps
the same version for the whole rollout, raising the percentage only adds peers, and a new
candidate version reshuffles who goes first. A candidate is judged only on the units it finished
since its rollout started, and only once there are `MIN_UNITS` of them, so one unlucky unit
cannot roll a good version back.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, replace
from fractions import Fraction

from coordinator.store import Conflict, InvalidInput

MIN_UNITS = 5  # finished candidate units before a rollout is judged
MARGIN = 0.2  # how much more often than the stable version the candidate may fail
_DOMAIN = b"osaas-rollout-v1"


class RolloutState(enum.StrEnum):
    STABLE = "stable"
    ROLLING_OUT = "rolling_out"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class Tally:
    """Finished units of one version: exit 0/1 counts as ok, exit 2 as failed."""

    ok: int = 0
    failed: int = 0

    @property
    def finished(self) -> int:
        return self.ok + self.failed

    @property
    def failure_rate(self) -> Fraction:
        """Exact, so that a candidate exactly MARGIN worse than stable is never rolled back by
        a rounding error."""
        return Fraction(self.failed, self.finished) if self.finished else Fraction(0)

    def counted(self, ok: bool) -> Tally:
        return Tally(self.ok + ok, self.failed + (not ok))


@dataclass(frozen=True, slots=True)
class Rollout:
    name: str
    owner_key: str  # hex; the only key that may publish versions of `name` or roll them out
    stable: str
    candidate: str | None = None
    percent: int = 0  # share of peers that get the candidate
    state: RolloutState = RolloutState.STABLE
    message: str = ""
    since_started: Tally = Tally()  # the candidate's units since its rollout started
    rolled_back: frozenset[str] = frozenset()  # versions the coordinator rolled back (until forced)


def first(name: str, owner_key: str, version: str) -> Rollout:
    """A name's first published version is its stable version."""
    return Rollout(name, owner_key, version, message=f"{name} {version} published")


def bucket(peer_id: str, name: str, version: str) -> int:
    """Where a peer falls (0..99) in the rollout of `version`."""
    digest = hashlib.sha256(b"\0".join([_DOMAIN, name.encode(), version.encode(), peer_id.encode()])).digest()
    return int.from_bytes(digest[:8], "big") % 100


def picks_candidate(peer_id: str, name: str, version: str, percent: int) -> bool:
    """Does this peer run `version` when it is rolled out to `percent` of peers?"""
    return bucket(peer_id, name, version) < percent


def version_for(rollout: Rollout, peer_id: str) -> str:
    """The version a peer runs units of an unpinned job with."""
    if (
        rollout.state is RolloutState.ROLLING_OUT
        and rollout.candidate is not None
        and picks_candidate(peer_id, rollout.name, rollout.candidate, rollout.percent)
    ):
        return rollout.candidate
    return rollout.stable


def started(rollout: Rollout, version: str, percent: int, force: bool = False) -> Rollout:
    """The owner sends `version` to `percent` of peers; 100 makes it the stable version. A
    version the coordinator rolled back goes out again only with `force` (Conflict without)."""
    if not 1 <= percent <= 100:
        raise ValueError("percent must be 1..100")  # the wire message already checked it
    if version in rollout.rolled_back:
        if not force:
            raise Conflict(
                f"{rollout.name} {version} was rolled back by the coordinator (its units failed more often than"
                f" {rollout.stable}'s); roll it out again only with --force"
            )
        rollout = replace(rollout, rolled_back=rollout.rolled_back - {version})
    if percent == 100:
        return made_stable(rollout, version, f"rolled out {rollout.name} {version} to every peer")
    if version == rollout.stable:
        raise InvalidInput(f"{rollout.name} {version} is already the stable version")
    same = rollout.state is RolloutState.ROLLING_OUT and rollout.candidate == version
    return replace(
        rollout,
        candidate=version,
        percent=percent,
        state=RolloutState.ROLLING_OUT,
        message=f"rolling out {rollout.name} {version} to {percent}% of peers",
        # Changing only the percentage keeps what the candidate has shown so far.
        since_started=rollout.since_started if same else Tally(),
    )


def made_stable(rollout: Rollout, version: str, message: str) -> Rollout:
    """`version` becomes what every peer runs; any rollout in progress ends."""
    return replace(
        rollout,
        stable=version,
        candidate=None,
        percent=0,
        state=RolloutState.STABLE,
        message=message,
        since_started=Tally(),
    )


def counted(rollout: Rollout, version: str, ok: bool) -> Rollout:
    """Count a finished unit of `version` towards the rollout in progress, if it is its candidate."""
    if rollout.state is not RolloutState.ROLLING_OUT or rollout.candidate != version:
        return rollout
    return replace(rollout, since_started=rollout.since_started.counted(ok))


def judge(name: str, candidate: str, since_started: Tally, stable: str, stable_tally: Tally) -> str | None:
    """Why the candidate must be rolled back, in one line; None while it may go on."""
    if since_started.finished < MIN_UNITS:
        return None
    if since_started.failure_rate - stable_tally.failure_rate <= Fraction(str(MARGIN)):
        return None
    return (
        f"rolled back {name} {candidate}: {since_started.failed} of {since_started.finished} units failed "
        f"({_percent(since_started)}) vs {stable_tally.failed} of {stable_tally.finished} "
        f"({_percent(stable_tally)}) for {stable}"
    )


def judged(rollout: Rollout, stable_tally: Tally) -> Rollout:
    """The rollout after judging its candidate against the stable version's record."""
    if rollout.state is not RolloutState.ROLLING_OUT or rollout.candidate is None:
        return rollout
    message = judge(rollout.name, rollout.candidate, rollout.since_started, rollout.stable, stable_tally)
    if message is None:
        return rollout
    return replace(
        rollout,
        candidate=None,
        percent=0,
        state=RolloutState.ROLLED_BACK,
        message=message,
        since_started=Tally(),
        rolled_back=rollout.rolled_back | {rollout.candidate},
    )


def _percent(tally: Tally) -> str:
    return f"{float(tally.failure_rate):.0%}"
