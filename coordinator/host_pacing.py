"""Politeness towards one website across all peers, as pure functions over `HostPace`.

However many volunteers there are, a website sees at most one of them at a time: the coordinator
grants at most one live lease per host, and none before the host's `next_allowed_at`. When a
unit ends, the next one waits for the longest of

- the minimum delay, the pause every host gets between units (`DEFAULT_MIN_DELAY`, or what the
  operator set; `osaas check` sets 0: its peers are one machine, one tool);
- the host's robots.txt Crawl-delay as peers saw it, capped at `MAX_CRAWL_DELAY` so that one
  robots.txt cannot park a host for days. One peer's word moves it up to `UNCONFIRMED_CRAWL_DELAY`
  only: a longer delay holds once a second peer saw at least as much (the lower of the two
  holds), so one lying peer cannot slow a website down for everyone (issue: trust in results);
- the backoff, which starts at `BACKOFF_START` after a unit saw 429 or 503 answers, doubles
  with every further such unit up to `BACKOFF_CAP`, and is forgotten after a unit without them;
- the Retry-After the host asked for, capped at `MAX_RETRY_AFTER`.

Within a unit the peer's egress paces its own requests; this module paces units. Numbers from a
peer's summary are a peer's word: negative or non-finite ones are ignored rather than trusted.
The backoff needs no second peer: it is forgotten after the next unit without throttling, which
on a host that a lying peer left is another peer's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

DEFAULT_MIN_DELAY = 1.0
MAX_MIN_DELAY = 3600.0  # the most an operator may set instead
MAX_CRAWL_DELAY = 30.0
UNCONFIRMED_CRAWL_DELAY = 5.0  # the most one peer's word alone makes a host wait
BACKOFF_START = 5.0
BACKOFF_CAP = 300.0
MAX_RETRY_AFTER = 600.0


@dataclass(frozen=True, slots=True)
class HostPace:
    next_allowed_at: float = 0.0  # epoch seconds; no lease on the host before this
    crawl_delay: float = 0.0  # seconds, from robots.txt as two peers saw it, capped
    backoff: float = 0.0  # seconds; 0 while the host is not pushing back
    delay_claim: float = 0.0  # the Crawl-delay the last peer to see one saw (capped), unconfirmed
    claimed_by: str | None = None  # that peer


@dataclass(frozen=True, slots=True)
class UnitSummary:
    """What a peer saw of a host during one unit."""

    throttled: int = 0  # answers with status 429 or 503
    retry_after: float | None = None  # seconds, the longest Retry-After seen
    crawl_delay: float | None = None  # seconds, robots.txt Crawl-delay; None: not seen this unit


def may_lease(pace: HostPace, now: float, live_leases_on_host: int) -> bool:
    """May a unit of this host be leased to any peer at `now`?"""
    return live_leases_on_host == 0 and now >= pace.next_allowed_at


def after_unit(
    pace: HostPace,
    finished_at: float,
    summary: UnitSummary,
    min_delay: float = DEFAULT_MIN_DELAY,
    peer: str | None = None,
) -> HostPace:
    """The host's pace once a unit of it that `peer` ran has ended at `finished_at` (the
    report's arrival)."""
    crawl_delay, claim, claimed_by = pace.crawl_delay, pace.delay_claim, pace.claimed_by
    seen_delay = _sane(summary.crawl_delay)
    if seen_delay is not None:
        seen_delay = min(seen_delay, MAX_CRAWL_DELAY)
        if claimed_by is not None and claimed_by != peer:
            crawl_delay = min(seen_delay, claim)  # two peers saw at least this much
        claim, claimed_by = seen_delay, peer
    if summary.throttled > 0:
        backoff = min(2 * pace.backoff, BACKOFF_CAP) if pace.backoff else BACKOFF_START
    else:
        backoff = 0.0
    retry_after = min(_sane(summary.retry_after) or 0.0, MAX_RETRY_AFTER)
    after = HostPace(pace.next_allowed_at, crawl_delay, backoff, claim, claimed_by)
    wait = max(min_delay, delay(after), backoff, retry_after)
    # max(): a pace never moves backwards, even if reports arrive out of order.
    return replace(after, next_allowed_at=max(pace.next_allowed_at, finished_at + wait))


def delay(pace: HostPace) -> float:
    """The Crawl-delay a host gets between units: the one two peers saw, or what one peer's
    word alone may ask (`UNCONFIRMED_CRAWL_DELAY`), whichever is longer."""
    return max(pace.crawl_delay, min(pace.delay_claim, UNCONFIRMED_CRAWL_DELAY))


def after_abandoned(pace: HostPace, revoked_at: float, min_delay: float = DEFAULT_MIN_DELAY) -> HostPace:
    """The host's pace once the coordinator took back a lease whose holder went silent. Nothing
    was learned about the host, so its backoff stays; the holder may have fetched until just
    before `revoked_at`, so the usual pause counts from there."""
    wait = max(min_delay, delay(pace), pace.backoff)
    return replace(pace, next_allowed_at=max(pace.next_allowed_at, revoked_at + wait))


def _sane(seconds: float | None) -> float | None:
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None
