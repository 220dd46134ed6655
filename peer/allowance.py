"""The volunteer's budget at run time, enforced where the bytes flow.

One `Allowance` per peer holds a token bucket for each direction (peer.rate_limit), a limit on
concurrent fetches, and the period ledger (peer.usage). The egress takes a fetch slot for each
request, pays for the request and for a typical response before sending it, and pays for every
byte beyond that as it reads, so a workload can never outrun the budget by more than the bucket's
burst and the misjudged part of a response.
Bundle traffic is limited by libtorrent itself at the same rates; the agent then `charge`s what
libtorrent moved to the same buckets and ledger, so the two together stay within one budget.

`pause_reason` says why the peer must not work now (the period's cap is used up, or it is
outside the volunteer's active hours) and `resume_at` when that ends; the agent stops leasing
and gives back what it holds while there is a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from overlay.units import format_size
from peer.budget import Budget
from peer.rate_limit import RateLimiter
from peer.usage import UsageLedger, period_end

USAGE_FILE = "usage.msgpack"
TYPICAL_RESPONSE = 16 * 1024  # bytes reserved for a response before any has been seen
TYPICAL_SMOOTHING = 0.2  # weight of the newest response size in the running estimate


@dataclass(frozen=True, slots=True)
class AllowanceStatus:
    """What the peer tells its coordinator and its volunteer about its budget."""

    capacity: float  # bytes/s it can sustain: the coordinator's weight for it
    used: int  # bytes down + up in the current period
    cap: int | None  # bytes per period, None without a cap
    period_ends: datetime
    paused: str | None  # why no work is taken now, None while working


class Receipt:
    """What one response has brought so far, against what was reserved for it."""

    def __init__(self, allowance: Allowance, reserved: int) -> None:
        self._allowance = allowance
        self.unused = reserved
        self.total = 0

    async def received(self, n: int) -> None:
        """Count `n` bytes of the response; wait for those the reservation does not cover."""
        covered = min(n, self.unused)
        self.unused -= covered
        self.total += n
        if n > covered:
            await self._allowance.down.acquire(n - covered)


class Allowance:
    """The budget of one running peer; `clock` gives the volunteer's local time."""

    def __init__(self, budget: Budget, data_dir: Path, *, clock: Callable[[], datetime] = datetime.now) -> None:
        self.budget = budget
        self._clock = clock
        self.down = RateLimiter(budget.max_down)
        self.up = RateLimiter(budget.max_up)
        self._fetches = asyncio.Semaphore(budget.max_fetches) if budget.max_fetches else None
        self._ledger = UsageLedger(data_dir / USAGE_FILE, budget.cap_bytes, budget.cap_period)
        self._typical_response = float(TYPICAL_RESPONSE)

    def reconfigure(self, budget: Budget) -> None:
        """Apply a budget the volunteer changed while the peer runs: new rates at once, the
        period's usage kept (a new cap counts what was already used). Fetches under way keep
        the slot they hold; new ones wait for the new number of slots."""
        self.budget = budget
        self.down.set_rate(budget.max_down)
        self.up.set_rate(budget.max_up)
        self._fetches = asyncio.Semaphore(budget.max_fetches) if budget.max_fetches else None
        self._ledger.reconfigure(budget.cap_bytes, budget.cap_period)

    def fetch_slot(self) -> asyncio.Semaphore | nullcontext[None]:
        """Hold one of the volunteer's concurrent fetches (`async with`)."""
        return self._fetches if self._fetches is not None else nullcontext()

    async def sent(self, n: int) -> None:
        """Count `n` bytes about to be sent and wait until the upload rate allows them."""
        self._ledger.add(n, self._clock())
        await self.up.acquire(n)

    @contextlib.asynccontextmanager
    async def response(self) -> AsyncIterator[Receipt]:
        """Pay for a response before asking for it: the bytes a typical response has are
        reserved first, so that fetches started together wait their turn before their
        requests go out, instead of all being answered at once and paying afterwards (the
        server has sent those bytes by then). The receipt pays for what comes beyond the
        reservation; what was reserved and did not come is given back at the end."""
        reserved = round(self._typical_response)
        await self.down.acquire(reserved)
        receipt = Receipt(self, reserved)
        try:
            yield receipt
        finally:
            self.down.refund(receipt.unused)
            self._ledger.add(receipt.total, self._clock())
            self._typical_response += TYPICAL_SMOOTHING * (receipt.total - self._typical_response)

    def charge(self, *, down: int, up: int) -> None:
        """Count bytes that already moved elsewhere (bundle traffic): later callers wait for them."""
        self._ledger.add(down + up, self._clock())
        self.down.charge(down)
        self.up.charge(up)

    def pause_reason(self) -> str | None:
        """Why the peer must not work now, in one line; None when it may."""
        now = self._clock()
        if self._ledger.exhausted(now):
            assert self.budget.cap_bytes is not None
            cap = f"{format_size(self.budget.cap_bytes)}/{self.budget.cap_period}"
            return f"transfer cap of {cap} used up until {period_end(now, self.budget.cap_period):%Y-%m-%d %H:%M}"
        hours = self.budget.active_hours
        if not hours.contains(now):
            change = hours.next_change(now)
            until = f" until {change:%H:%M}" if change is not None else ""
            return f"outside active hours ({', '.join(hours.to_strings())}){until}"
        return None

    def resume_at(self) -> datetime | None:
        """When the current pause ends at the latest (None: not paused or no end known)."""
        now = self._clock()
        if self._ledger.exhausted(now):
            return period_end(now, self.budget.cap_period)
        if not self.budget.active_hours.contains(now):
            return self.budget.active_hours.next_change(now)
        return None

    def status(self) -> AllowanceStatus:
        now = self._clock()
        return AllowanceStatus(
            capacity=self.budget.sustainable_rate,
            used=self._ledger.used(now),
            cap=self.budget.cap_bytes,
            period_ends=period_end(now, self.budget.cap_period),
            paused=self.pause_reason(),
        )

    def flush(self) -> None:
        """Save the period's usage (also done by the ledger itself every few seconds)."""
        self._ledger.flush()
