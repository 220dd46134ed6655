"""Token buckets: the pure rule with exact waits, and the asyncio shell on the real loop clock."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.rate_limit import MIN_BURST, RateLimiter, TokenBucket, default_burst

# --- the bucket ------------------------------------------------------------------------


def test_a_full_bucket_lets_the_burst_through_then_charges_for_the_rest():
    bucket = TokenBucket(rate=100, burst=50)
    assert bucket.take(50, now=0.0) == 0.0
    assert bucket.take(50, now=0.0) == 0.5
    assert bucket.take(0, now=0.5) == 0.0  # the debt is paid off exactly at 0.5
    assert bucket.take(100, now=0.5) == 1.0


def test_a_chunk_larger_than_the_burst_goes_into_debt():
    bucket = TokenBucket(rate=1000, burst=100)
    assert bucket.take(10_000, now=0.0) == pytest.approx(9.9)
    assert bucket.take(1, now=9.9) == pytest.approx(0.001)


def test_idle_time_refills_at_most_to_the_burst():
    bucket = TokenBucket(rate=1000, burst=100)
    assert bucket.take(100, now=0.0) == 0.0
    assert bucket.take(150, now=10.0) == pytest.approx(0.05)


def test_a_clock_going_backwards_earns_nothing():
    bucket = TokenBucket(rate=1000, burst=100)
    assert bucket.take(100, now=5.0) == 0.0
    assert bucket.take(10, now=4.0) == pytest.approx(0.01)
    assert bucket.take(10, now=5.0) == pytest.approx(0.02)  # 5.0 is no later than the last time seen


def test_set_rate_earns_at_the_old_rate_until_now_and_keeps_debt():
    bucket = TokenBucket(rate=100, burst=100)
    assert bucket.take(100, now=0.0) == 0.0
    bucket.set_rate(10, now=1.0)  # the second before earned 100 at the old rate
    assert bucket.rate == 10
    assert bucket.take(200, now=1.0) == pytest.approx(10.0)
    indebted = TokenBucket(rate=100, burst=100)
    assert indebted.take(300, now=0.0) == pytest.approx(2.0)
    indebted.set_rate(1000, now=0.0)
    assert indebted.take(0, now=0.0) == pytest.approx(0.2)


def test_set_rate_with_a_smaller_burst_drops_the_extra_tokens():
    bucket = TokenBucket(rate=100, burst=1000)
    bucket.set_rate(100, now=0.0, burst=10)
    assert bucket.burst == 10
    assert bucket.take(20, now=0.0) == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, True, "100"])
def test_bucket_refuses_rates_and_bursts_that_are_not_positive_numbers(bad):
    with pytest.raises(ValueError, match="rate must be a positive finite number"):
        TokenBucket(rate=bad, burst=10)
    with pytest.raises(ValueError, match="burst must be a positive finite number"):
        TokenBucket(rate=10, burst=bad)
    bucket = TokenBucket(rate=10, burst=10)
    with pytest.raises(ValueError, match="rate must be a positive finite number"):
        bucket.set_rate(bad, now=0.0)
    with pytest.raises(ValueError, match="burst must be a positive finite number"):
        bucket.set_rate(10, now=0.0, burst=bad)


def test_bucket_refuses_negative_takes():
    with pytest.raises(ValueError, match=r"^cannot take a negative number of bytes \(-1\)$"):
        TokenBucket(rate=10, burst=10).take(-1, now=0.0)


@given(
    rate=st.floats(min_value=1.0, max_value=1e9),
    burst=st.floats(min_value=1.0, max_value=1e9),
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=10.0), st.integers(min_value=0, max_value=10**9)),
        min_size=1,
        max_size=40,
    ),
    t0=st.floats(min_value=0.0, max_value=1e6),
)
def test_bytes_released_never_exceed_burst_plus_rate_times_elapsed(rate, burst, steps, t0):
    bucket = TokenBucket(rate, burst)
    now = t0
    released: list[tuple[float, int]] = []  # (time the wait ends, bytes)
    for gap, n in steps:
        now += gap
        released.append((now + bucket.take(n, now), n))
    for t, _ in released:
        sent_by_t = sum(n for end, n in released if end <= t)
        # A few units in the last place of t: the float clock cannot tell apart closer times.
        allowed = burst + rate * (t - t0 + 4 * math.ulp(t))
        assert sent_by_t <= allowed * (1 + 1e-9)


@given(
    rate=st.floats(min_value=1.0, max_value=1e6),
    chunks=st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=30),
)
def test_a_caller_honouring_its_waits_gets_exactly_the_rate_after_the_burst(rate, chunks):
    # One caller sending back to back: it finishes when the bytes beyond the burst are paid.
    burst = 1000.0
    bucket = TokenBucket(rate, burst)
    now = 0.0
    for n in chunks:
        now += bucket.take(n, now)
    assert now == pytest.approx(max(0.0, (sum(chunks) - burst) / rate), rel=1e-6, abs=1e-9)


# --- the asyncio shell -----------------------------------------------------------------


def test_default_burst_is_a_fifth_of_a_second_but_at_least_one_small_read():
    assert default_burst(1_000_000) == 200_000
    assert default_burst(1000) == MIN_BURST == 8 * 1024


async def test_unlimited_limiter_never_waits_but_counts():
    limiter = RateLimiter(None)
    assert limiter.rate is None
    assert await limiter.acquire(10**12) == 0.0
    assert await limiter.acquire(5) == 0.0
    assert limiter.used == 10**12 + 5


async def test_limiter_waits_what_the_bucket_says():
    # 100 kB/s with a 1000-byte burst: each further 1000 bytes costs 10 ms. Time passing on the
    # loop clock between calls can only shorten a wait, so the upper bounds are exact.
    limiter = RateLimiter(100_000, burst=1000)
    assert limiter.rate == 100_000
    assert await limiter.acquire(1000) == 0.0
    wait = await limiter.acquire(1000)
    assert 0.005 < wait <= 0.01
    assert limiter.used == 2000


async def test_concurrent_callers_are_served_first_come_first_served():
    limiter = RateLimiter(100_000, burst=1000)
    finished: list[int] = []
    waits: dict[int, float] = {}

    async def send(index: int) -> None:
        waits[index] = await limiter.acquire(1000)
        finished.append(index)

    await asyncio.gather(*(send(i) for i in range(5)))
    assert finished == [0, 1, 2, 3, 4]
    assert waits[0] == 0.0
    for i in range(1, 5):
        assert 0.01 * i - 0.005 < waits[i] <= 0.01 * i
    assert limiter.used == 5000


async def test_limiter_rate_changes_at_runtime():
    limiter = RateLimiter(None, burst=1000)
    limiter.set_rate(100_000)
    assert limiter.rate == 100_000
    assert await limiter.acquire(1000) == 0.0
    assert 0.0 < await limiter.acquire(100) <= 0.001
    limiter.set_rate(1_000_000)
    assert limiter.rate == 1_000_000
    limiter.set_rate(None)
    assert limiter.rate is None
    assert await limiter.acquire(10**9) == 0.0
    assert limiter.used == 1100 + 10**9


async def test_limiter_rate_change_keeps_what_was_already_spent():
    limiter = RateLimiter(1000)
    assert await limiter.acquire(MIN_BURST) == 0.0
    limiter.set_rate(1_000_000)  # a bigger burst, but the bucket was just emptied
    assert 0.0 < await limiter.acquire(1000) <= 0.001


async def test_limiter_refuses_negative_sizes_without_counting_them():
    limiter = RateLimiter(1000)
    with pytest.raises(ValueError, match=r"^cannot acquire a negative number of bytes \(-3\)$"):
        await limiter.acquire(-3)
    assert limiter.used == 0


def test_a_refund_returns_unused_tokens_but_never_beyond_the_burst():
    bucket = TokenBucket(rate=1000, burst=2000)
    assert bucket.take(3000, now=0.0) == 1.0  # 1000 in debt
    bucket.refund(2500, now=0.0)  # 1500 left: at most the burst
    assert bucket.take(1500, now=0.0) == 0.0
    assert bucket.take(1, now=0.0) > 0
    bucket.refund(10**9, now=0.0)
    assert bucket.take(2000, now=0.0) == 0.0


async def test_a_limiter_refund_no_longer_counts_as_used():
    limiter = RateLimiter(1_000_000)
    await limiter.acquire(5000)
    limiter.refund(2000)
    assert limiter.used == 3000
