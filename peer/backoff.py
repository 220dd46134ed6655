"""Jittered exponential backoff: how long to wait before the next try. Pure."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before try number `attempt` (0 = the first retry).

    "Full jitter": uniform in [0, min(cap, base * 2**attempt)], so a crowd of peers that lost
    the same coordinator does not come back in lockstep. A server's Retry-After is a floor.
    """
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap * 4))
    return delay
