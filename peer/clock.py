"""The peer's clock, given to its parts instead of read from `time` and `datetime` directly.

Three readings, because the peer asks three different questions of time:
- `monotonic`: how long since something (lease renewals, a coordinator avoided for a while,
  no work for a while); never jumps when the wall clock is set.
- `time`: Unix seconds, for what the volunteer is shown (a unit's start, when a URL was checked).
- `now`: the volunteer's local time, for the budget (cap periods, active hours: peer.allowance).

`SYSTEM_CLOCK` reads the real ones. A test passes a clock of its own to see what the peer does
at a given hour or after a given time, without waiting. Sleeping and timeouts stay with
asyncio's event loop: the clock is only read.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def now(self) -> datetime: ...


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.now()


SYSTEM_CLOCK: Clock = SystemClock()
