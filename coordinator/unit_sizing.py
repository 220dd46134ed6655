"""How much work goes into one unit, and when a unit's lease is a straggler worth duplicating.

A peer's throughput (items per second) is an exponentially weighted moving average of its
reports, so one slow unit (a host that answered slowly) moves it only part of the way. A unit
holds about `TARGET_SECONDS` of the peer's work: long enough that leasing and reporting cost
little, short enough that a lost unit costs little. Until a peer has reported, it gets
`DEFAULT_UNIT` items.

Stragglers. Near the end of a job (nothing queued any more) one slow lease can hold the whole
job back, and the usual cure is a speculative duplicate: lease the same unit to another peer.
Here that collides with politeness: a unit is a batch of one host's URLs, and a host may have at
most one live lease (coordinator.host_pacing). So a lease is a straggler only when both hold:

- it has run well past its expected duration: more than `STRAGGLER_FACTOR` times the expected
  seconds, and more than `MIN_STRAGGLER_SECONDS` (small units finish early or late by seconds);
- its holder has missed renewals: its last renewal is older than `MISSED_RENEWALS` renew
  intervals.

A holder that still renews is alive and presumably still fetching from the host, and a
duplicate would put a second peer on that host: it is left alone, and politeness wins over
speed. A holder that has stopped renewing is taken to be gone, so its lease is no longer live
and giving the unit to another peer (with a new fencing token, so a late report of the silent
holder is stale) breaks no rule. That last step holds only if a peer that cannot renew also
stops fetching: a peer cut off from its coordinator but not from the website must give up its
unit before `MISSED_RENEWALS` renew intervals have passed without a successful renewal.
"""

from __future__ import annotations

import math

TARGET_SECONDS = 30.0
MIN_UNIT = 5
MAX_UNIT = 500
DEFAULT_UNIT = 20
SMOOTHING = 0.3  # weight of the newest report in the average
STRAGGLER_FACTOR = 2.0
MIN_STRAGGLER_SECONDS = 60.0
MISSED_RENEWALS = 2


def observe(previous: float | None, items: int, seconds: float) -> float | None:
    """The throughput estimate after a report of `items` done in `seconds`. Nonsense (no time
    taken, negative or non-finite numbers) leaves the estimate as it was."""
    if items < 0 or not math.isfinite(seconds) or seconds <= 0:
        return previous
    rate = items / seconds
    if previous is None:
        return rate
    return SMOOTHING * rate + (1 - SMOOTHING) * previous


def unit_size(throughput: float | None) -> int:
    """Items in the next unit for a peer with this throughput estimate (None: no reports yet)."""
    if throughput is None or not math.isfinite(throughput) or throughput < 0:
        return DEFAULT_UNIT
    return max(MIN_UNIT, min(MAX_UNIT, round(throughput * TARGET_SECONDS)))


def expected_seconds(items: int, throughput: float | None) -> float:
    """How long a unit of `items` should take a peer with this throughput estimate."""
    if throughput is None or not math.isfinite(throughput) or throughput <= 0:
        # The default unit is sized for TARGET_SECONDS, so that is the default pace.
        throughput = DEFAULT_UNIT / TARGET_SECONDS
    return items / throughput


def is_straggler(
    leased_at: float,
    expected_seconds: float,
    now: float,
    job_has_queued_units: bool,
    last_renewed_at: float,
    renew_interval: float,
) -> bool:
    """Should this lease's unit be given to another peer now? See the module docstring."""
    if job_has_queued_units:
        return False  # peers still have other work: the lease's own expiry is soon enough
    running = now - leased_at
    overdue = running > STRAGGLER_FACTOR * expected_seconds and running > MIN_STRAGGLER_SECONDS
    silent = now - last_renewed_at > MISSED_RENEWALS * renew_interval
    return overdue and silent
