"""Token buckets: how the egress keeps a byte rate the volunteer set.

`TokenBucket` is the rule, a plain object driven by the caller's clock value: it never sleeps
and never reads a clock. It may go into debt, so a chunk larger than the burst is still
allowed: `take` answers how long the caller must wait before the bytes count as sent, and
that wait is exactly what pays the debt back. Over any stretch from the first take to time t,
the bytes whose waits have ended never exceed burst + rate·(t − t0).

`RateLimiter` is the asyncio shell the egress awaits, one per direction. Callers are served
in the order they call: each take is made at once and adds its debt to the bucket, so a
later caller's wait already includes every earlier caller's bytes.
"""

from __future__ import annotations

import asyncio
import math

# A full bucket lets this many seconds of the rate through at once: enough to absorb the
# unevenness of socket reads without letting a short burst visibly break the budget.
BURST_SECONDS = 0.2
MIN_BURST = 8 * 1024  # bytes; a slow rate still lets one ordinary read through unscheduled


class TokenBucket:
    """`rate` bytes per second with up to `burst` bytes at once, starting full."""

    def __init__(self, rate: float, burst: float) -> None:
        _check_positive("rate", rate)
        _check_positive("burst", burst)
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = self._burst
        self._last: float | None = None

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def take(self, n: int, now: float) -> float:
        """Count `n` bytes at time `now`; returns the seconds to wait before they count as sent."""
        if n < 0:
            raise ValueError(f"cannot take a negative number of bytes ({n})")
        self._refill(now)
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def refund(self, n: int, now: float) -> None:
        """Give back `n` bytes taken but not used (a reservation larger than what came)."""
        if n < 0:
            raise ValueError(f"cannot refund a negative number of bytes ({n})")
        self._refill(now)
        self._tokens = min(self._burst, self._tokens + n)

    def set_rate(self, rate: float, now: float, burst: float | None = None) -> None:
        """Change the rate (and burst) from `now` on; time before `now` earns at the old rate,
        and a debt already owed is kept, so a lower rate cannot be dodged by changing it."""
        _check_positive("rate", rate)
        if burst is not None:
            _check_positive("burst", burst)
        self._refill(now)
        self._rate = float(rate)
        if burst is not None:
            self._burst = float(burst)
            self._tokens = min(self._tokens, self._burst)

    def _refill(self, now: float) -> None:
        # A clock value older than the last one earns nothing rather than taking tokens back.
        if self._last is not None and now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        if self._last is None or now > self._last:
            self._last = now


def default_burst(rate: float) -> float:
    """The burst a RateLimiter uses for `rate` when none is given."""
    return max(rate * BURST_SECONDS, float(MIN_BURST))


class RateLimiter:
    """Bytes per second for one direction of traffic; `rate=None` is unlimited. `used` counts
    every byte acquired, limited or not."""

    def __init__(self, rate: float | None, *, burst: float | None = None) -> None:
        self._fixed_burst = burst
        self._bucket = self._new_bucket(rate)
        self.used = 0

    @property
    def rate(self) -> float | None:
        return None if self._bucket is None else self._bucket.rate

    def set_rate(self, rate: float | None) -> None:
        """Apply a budget changed at runtime; waits already running keep their length."""
        if rate is None or self._bucket is None:
            self._bucket = self._new_bucket(rate)
            return
        burst = self._fixed_burst if self._fixed_burst is not None else default_burst(rate)
        self._bucket.set_rate(rate, _now(), burst)

    async def acquire(self, n: int) -> float:
        """Wait until `n` bytes may count as sent or received; returns the wait the bucket
        asked for. The bytes count from the call: a cancelled wait does not give them back,
        because the egress acquires for bytes it has already moved or is committed to."""
        if n < 0:
            raise ValueError(f"cannot acquire a negative number of bytes ({n})")
        self.used += n
        if self._bucket is None:
            return 0.0
        wait = self._bucket.take(n, _now())
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    def charge(self, n: int) -> None:
        """Count `n` bytes that already moved without asking (another limiter let them
        through): no wait now, but the debt makes the next `acquire` wait for them."""
        if n < 0:
            raise ValueError(f"cannot charge a negative number of bytes ({n})")
        self.used += n
        if self._bucket is not None:
            self._bucket.take(n, _now())

    def refund(self, n: int) -> None:
        """Give back `n` bytes acquired but not used; they no longer count in `used`."""
        if n < 0:
            raise ValueError(f"cannot refund a negative number of bytes ({n})")
        self.used -= n
        if self._bucket is not None:
            self._bucket.refund(n, _now())

    def _new_bucket(self, rate: float | None) -> TokenBucket | None:
        if rate is None:
            return None
        return TokenBucket(rate, self._fixed_burst if self._fixed_burst is not None else default_burst(rate))


def _check_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, not {value!r}")


def _now() -> float:
    return asyncio.get_running_loop().time()
