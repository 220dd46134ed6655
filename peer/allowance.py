"""The volunteer's budget at run time, enforced where the bytes flow.

One `Allowance` per peer holds a token bucket for each direction (peer.rate_limit), a limit on
concurrent fetches, and the period ledger (peer.usage). Everything is counted as the interface
counts it, headers and acknowledgements included (peer.wire_cost). The egress takes a fetch
slot for each request, pays for the request and a deposit before sending it (the most the
kernel and the HTTP client can receive for it before it reads: its window), and pays for every
byte it reads, and for the acknowledgements those bytes cost upstream, before it reads more.
The deposit is given back once the response was read to its end; a response abandoned midway
keeps what may have arrived unread. And the windows of all fetches under way together hold at
most a quarter second of the rate (`WindowPool`). So the bytes at the interface never run
ahead of what was paid, and over any stretch exceed the rate by at most the bucket's burst and
the windows that fill in that stretch.
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
from peer.wire_cost import WORST, FetchWindow, Framing, acks_on_wire, connection_frames, on_wire, windows_capacity

USAGE_FILE = "usage.msgpack"


@dataclass(frozen=True, slots=True)
class AllowanceStatus:
    """What the peer tells its coordinator and its volunteer about its budget."""

    capacity: float  # bytes/s it can sustain: the coordinator's weight for it
    used: int  # bytes down + up in the current period
    cap: int | None  # bytes per period, None without a cap
    period_ends: datetime
    paused: str | None  # why no work is taken now, None while working


class Receipt:
    """What one response has cost so far at the interface, and its deposit.

    `framing` is the connection's (peer.wire_cost.IPV4 or IPV6) once known; until then bytes
    are counted as the costlier IPv6 ones. `started` once any of the response arrived,
    `complete` once it was read to its end (nothing more of it can arrive)."""

    def __init__(self, allowance: Allowance, window: FetchWindow) -> None:
        self._allowance = allowance
        self.window = window
        self.deposit = window.unread
        self.framing: Framing = WORST
        self.payload = 0  # bytes of the response read
        self.down = 0  # bytes paid for downstream, frames and all
        self.up = 0  # bytes of acknowledgements paid for upstream
        self.started = False
        self.complete = False
        self.left_unread: int | None = None  # bytes in the client's buffer when it was abandoned

    async def received(self, n: int) -> None:
        """Pay for `n` more bytes of the response, read from the connection: the frames that
        carried them, and the acknowledgements they cost the other way."""
        if n < 0:
            raise ValueError(f"cannot receive a negative number of bytes ({n})")
        self.started = True
        before, self.payload = self.payload, self.payload + n
        down = on_wire(self.payload, self.framing) - on_wire(before, self.framing)
        up = acks_on_wire(self.payload, self.framing) - acks_on_wire(before, self.framing)
        self.down += down
        self.up += up
        if up:
            await self._allowance.up.acquire(up)
        await self._allowance.down.acquire(down)

    def abandon(self, buffered: int) -> None:
        """The response is given up midway with `buffered` bytes received and not read."""
        self.left_unread = buffered

    def kept_deposit(self) -> int:
        """The part of the deposit that stays paid: none for a response read to its end or
        never begun; for one abandoned midway, what may have arrived unread: the client's
        buffer as it was, and the kernel's (what it held, and what was under way to it when the
        connection closed, at most the whole of it); all of it when that is not known."""
        if self.complete or not self.started:
            return 0
        if self.left_unread is None or self.window.receive_buffer is None:
            return self.deposit
        return min(self.deposit, self.left_unread + 2 * self.window.receive_buffer)


class WindowPool:
    """What the windows of the fetches under way may hold together (`capacity` bytes; None: no
    limit). A fetch waits until its window fits beside the others'; into an empty pool one
    always fits, however large."""

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self.held = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._fits(n))
            self.held += n
        try:
            yield
        finally:
            self.held -= n
            async with self._changed:
                self._changed.notify_all()

    def _fits(self, n: int) -> bool:
        return self.capacity is None or self.held == 0 or self.held + n <= self.capacity


class Allowance:
    """The budget of one running peer; `clock` gives the volunteer's local time."""

    def __init__(self, budget: Budget, data_dir: Path, *, clock: Callable[[], datetime] = datetime.now) -> None:
        self.budget = budget
        self._clock = clock
        self.down = RateLimiter(budget.max_down)
        self.up = RateLimiter(budget.max_up)
        self._fetches = asyncio.Semaphore(budget.max_fetches) if budget.max_fetches else None
        self._windows = WindowPool(windows_capacity(budget.max_down, budget.max_fetches))
        self._ledger = UsageLedger(data_dir / USAGE_FILE, budget.cap_bytes, budget.cap_period)

    def reconfigure(self, budget: Budget) -> None:
        """Apply a budget the volunteer changed while the peer runs: new rates at once, the
        period's usage kept (a new cap counts what was already used). Fetches under way keep
        the slot they hold; new ones wait for the new number of slots."""
        self.budget = budget
        self.down.set_rate(budget.max_down)
        self.up.set_rate(budget.max_up)
        self._fetches = asyncio.Semaphore(budget.max_fetches) if budget.max_fetches else None
        self._windows.capacity = windows_capacity(
            budget.max_down, budget.max_fetches
        )  # waiting fetches see it at the next release
        self._ledger.reconfigure(budget.cap_bytes, budget.cap_period)

    def fetch_slot(self) -> asyncio.Semaphore | nullcontext[None]:
        """Hold one of the volunteer's concurrent fetches (`async with`)."""
        return self._fetches if self._fetches is not None else nullcontext()

    async def request(self, n: int) -> None:
        """Count a request of `n` bytes about to be sent, with its frames and its connection's
        header-only ones, and wait until the upload rate allows them."""
        wire = on_wire(n) + connection_frames()
        self._ledger.add(wire, self._clock())
        await self.up.acquire(wire)

    @contextlib.asynccontextmanager
    async def response(self, window: FetchWindow) -> AsyncIterator[Receipt]:
        """Pay for a response before asking for it: a deposit of what can arrive for it before
        it is read (`window.unread`) and the header-only frames of its connection are paid
        first, so that fetches started together wait their turn before their requests go out,
        instead of all being answered at once and paying afterwards (the kernel has received
        those bytes by then).
        The receipt pays for every byte read; the deposit is given back at the end unless the
        response was abandoned midway. First it waits until its window fits beside those of the
        fetches under way (`WindowPool`), so that however many fetch at once, what can be on its
        way unread stays about WINDOW_SECONDS of the rate (peer.wire_cost)."""
        frames = connection_frames()
        async with self._windows.hold(window.unread):
            await self.down.acquire(window.unread + frames)
            receipt = Receipt(self, window)
            try:
                yield receipt
            finally:
                kept = receipt.kept_deposit()
                self.down.refund(window.unread - kept)
                self._ledger.add(frames + kept + receipt.down + receipt.up, self._clock())

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
