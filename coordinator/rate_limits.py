"""Rate limits at the coordinator's door, pure: buckets per route class, per signer key and per
client address. The caller passes the time.

Each bucket is the generic cell rate algorithm's one number, the time at which the bucket is
full again (`full_at`): a request may pass when `full_at - now` is at most the burst's worth of
time, and passing moves `full_at` one request's worth (1 / rate) later. A bucket whose
`full_at` has passed is exactly what a bucket never seen is, a full one, so it is forgotten:
a table holds only the keys and addresses that used some of their burst lately, about
(requests a second) x (seconds to refill one request), far fewer than the clients there are.

Memory is bounded all the same: a table tracks at most `max_tracked` buckets. At that size a
newcomer first makes room by forgetting full buckets (lossless, see above); when every bucket
is still refilling, forgetting one would hand its owner a fresh burst (an attacker with many
keys or addresses could cycle through them for as many bursts as it likes), so the newcomer is
refused instead, until the earliest bucket is full again. Honest clients then keep their
limits and their service; only new ones wait.

Keys are checked in two steps, because a signature can be checked only once the body is read:
`wait` before the body (refuse a key whose bucket is empty at no cost), `take` after the
signature is good, so a stranger who names an honest peer's key in forged headers cannot spend
that peer's requests. Addresses cannot be forged over TCP: they are charged before the body is
read. An IPv6 client counts by its /64 (one subscriber's allocation, of which it may use any
address), IPv4-mapped addresses as the IPv4 address they map.
"""

from __future__ import annotations

import enum
import heapq
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from overlay.errors import OsaasError


class Route(enum.StrEnum):
    """Routes that share one bucket per client."""

    REGISTER = "register"  # POST /v1/peers/register
    LEASE = "lease"  # POST /v1/leases, /v1/leases/renew, /v1/leases/release
    REPORT = "report"  # POST /v1/reports, /v1/reports/batch, /v1/reports/items
    SUBMIT = "submit"  # POST /v1/jobs


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_second` requests a second sustained, after a burst of up to `burst` at once."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_second) and self.per_second > 0 and self.burst >= 1):
            raise ValueError(f"a rate needs per_second > 0 and burst >= 1, not {self.per_second}, {self.burst}")

    @property
    def interval(self) -> float:
        """Seconds one request takes to refill."""
        return 1.0 / self.per_second

    def describe(self) -> str:
        per_minute = self.per_second * 60
        pace = f"{per_minute:g} a minute" if per_minute < 60 else f"{self.per_second:g} a second"
        return f"{pace}, bursts of {self.burst}"


# Honest traffic, by route (see docs/security.md "Rate limits"): a peer registers at start and
# when its coordinator forgets it; asks for leases when a unit ends or about once a second
# when idle, renews each running unit every third of a lease and reports each unit once;
# owners submit jobs now and then. Addresses are shared by the peers behind one NAT (or one
# machine running `osaas check` with up to 64 peers).
DEFAULT_PER_KEY: Mapping[Route, Rate] = {
    Route.REGISTER: Rate(per_second=1 / 10, burst=10),
    Route.LEASE: Rate(per_second=20, burst=100),
    Route.REPORT: Rate(per_second=20, burst=100),
    Route.SUBMIT: Rate(per_second=1, burst=20),
}
DEFAULT_PER_ADDRESS: Mapping[Route, Rate] = {
    Route.REGISTER: Rate(per_second=1, burst=100),
    Route.LEASE: Rate(per_second=200, burst=1000),
    Route.REPORT: Rate(per_second=200, burst=1000),
    Route.SUBMIT: Rate(per_second=2, burst=40),
}
DEFAULT_MAX_TRACKED = 10_000  # buckets per table (route x key or address): ~2 MB each when full


@dataclass(frozen=True, slots=True)
class RateLimits:
    per_key: Mapping[Route, Rate] = field(default_factory=lambda: dict(DEFAULT_PER_KEY))
    per_address: Mapping[Route, Rate] = field(default_factory=lambda: dict(DEFAULT_PER_ADDRESS))
    max_tracked: int = DEFAULT_MAX_TRACKED

    def __post_init__(self) -> None:
        if set(self.per_key) != set(Route) or set(self.per_address) != set(Route) or self.max_tracked < 1:
            raise ValueError("rate limits need a rate for every route, per key and per address, and max_tracked >= 1")


class RateLimited(OsaasError):
    """A client asked faster than its limit: come back after `retry_after` seconds."""

    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Buckets:
    """One table: a bucket per client (a key or an address), all at one rate."""

    def __init__(self, rate: Rate, max_tracked: int) -> None:
        self.rate = rate
        self._max = max_tracked
        self._tolerance = (rate.burst - 1) * rate.interval  # how far ahead full_at may run
        self._full_at: dict[str, float] = {}
        # (full_at, client), a heap; entries whose full_at was moved on since are stale.
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._full_at)

    def __contains__(self, client: object) -> bool:
        return client in self._full_at

    @property
    def heap_size(self) -> int:
        return len(self._heap)

    def wait(self, client: str, now: float) -> float:
        """Seconds until `client` may send one more request; 0.0: now. Changes nothing but
        forgetting full buckets."""
        self._forget_full(now)
        full_at = self._full_at.get(client)
        if full_at is None:
            return 0.0 if len(self._full_at) < self._max else self._room_in(now)
        return max(0.0, full_at - self._tolerance - now)

    def take(self, client: str, now: float) -> float:
        """Count one request of `client` if it may send one now (0.0), else the seconds until
        it may (nothing counted)."""
        waiting = self.wait(client, now)
        if waiting > 0:
            return waiting
        full_at = max(self._full_at.get(client, now), now) + self.rate.interval
        self._full_at[client] = full_at
        heapq.heappush(self._heap, (full_at, client))
        if len(self._heap) > 2 * len(self._full_at) + 64:  # stale entries: rebuild
            self._heap = [(at, who) for who, at in self._full_at.items()]
            heapq.heapify(self._heap)
        return 0.0

    def _forget_full(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, client = heapq.heappop(heap)
            if self._full_at.get(client) == at:
                del self._full_at[client]

    def _room_in(self, now: float) -> float:
        """Seconds until a full table has room: when its earliest bucket is full again."""
        heap = self._heap
        while heap and self._full_at.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return max(heap[0][0] - now, 1e-3) if heap else 1e-3


def address_key(remote: str | None) -> str:
    """Whom an address's bucket belongs to: the IPv4 address, an IPv6 address's /64, or the
    text as it is when it is no IP address (a Unix socket: all one client)."""
    if not remote:
        return "-"
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimiter:
    """Every table of one coordinator: per route, per key and per address."""

    def __init__(self, limits: RateLimits | None = None) -> None:
        self.limits = limits or RateLimits()
        self._by_key = {route: Buckets(rate, self.limits.max_tracked) for route, rate in self.limits.per_key.items()}
        self._by_address = {
            route: Buckets(rate, self.limits.max_tracked) for route, rate in self.limits.per_address.items()
        }

    def tracked(self) -> dict[str, int]:
        """How many buckets each table holds, e.g. {"register/key": 3, "register/address": 1}."""
        return {f"{route}/key": len(b) for route, b in self._by_key.items()} | {
            f"{route}/address": len(b) for route, b in self._by_address.items()
        }

    def admit_address(self, route: Route, remote: str | None, now: float) -> None:
        """Count a request from `remote` on `route`, or raise `RateLimited`."""
        buckets = self._by_address[route]
        waiting = buckets.take(address_key(remote), now)
        if waiting > 0:
            raise _refusal(route, "address", buckets, address_key(remote), waiting)

    def check_key(self, route: Route, key: str, now: float) -> None:
        """Raise `RateLimited` if `key` may send no request on `route` now; counts nothing."""
        buckets = self._by_key[route]
        waiting = buckets.wait(key, now)
        if waiting > 0:
            raise _refusal(route, "key", buckets, key, waiting)

    def admit_key(self, route: Route, key: str, now: float) -> None:
        """Count a request of `key` (its signature checked) on `route`, or raise `RateLimited`."""
        buckets = self._by_key[route]
        waiting = buckets.take(key, now)
        if waiting > 0:
            raise _refusal(route, "key", buckets, key, waiting)


_PLURAL = {"key": "keys", "address": "addresses"}


def _refusal(route: Route, who: str, buckets: Buckets, client: str, waiting: float) -> RateLimited:
    retry_after = max(1, math.ceil(waiting))  # Retry-After is whole seconds
    if client not in buckets:  # a newcomer to a full table
        return RateLimited(
            f"too many {_PLURAL[who]} are sending {route} requests at once; try again in {retry_after} s",
            retry_after,
        )
    return RateLimited(
        f"too many {route} requests from this {who} (limit {buckets.rate.describe()}); try again in {retry_after} s",
        retry_after,
    )
