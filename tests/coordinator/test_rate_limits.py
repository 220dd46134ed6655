"""Rate limits, pure: buckets per route, key and address; bounded tables; an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.rate_limits import (
    DEFAULT_PER_ADDRESS,
    DEFAULT_PER_KEY,
    Buckets,
    Rate,
    RateLimited,
    RateLimiter,
    RateLimits,
    Route,
    address_key,
)


def limits(per_key: Rate, per_address: Rate, max_tracked: int = 1000) -> RateLimits:
    return RateLimits({r: per_key for r in Route}, {r: per_address for r in Route}, max_tracked)


def test_a_burst_then_the_sustained_rate() -> None:
    buckets = Buckets(Rate(per_second=2, burst=3), max_tracked=10)
    assert [buckets.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 100.0) == pytest.approx(0.5)  # one request refills in 1/2 s
    assert buckets.take("a", 100.5) == 0.0
    assert buckets.take("a", 100.5) > 0
    assert buckets.take("b", 100.5) == 0.0  # another client has its own bucket


def test_wait_counts_nothing() -> None:
    buckets = Buckets(Rate(per_second=1, burst=1), max_tracked=10)
    assert buckets.wait("a", 0.0) == 0.0
    assert buckets.wait("a", 0.0) == 0.0
    assert buckets.take("a", 0.0) == 0.0
    assert buckets.wait("a", 0.0) == pytest.approx(1.0)


def test_full_buckets_are_forgotten() -> None:
    buckets = Buckets(Rate(per_second=10, burst=5), max_tracked=100)
    for client in range(50):
        buckets.take(str(client), 0.0)
    assert len(buckets) == 50
    buckets.take("late", 0.2)  # 0.1 s refills one request: everyone else is full again
    assert len(buckets) == 1


def test_a_full_table_refuses_newcomers_rather_than_forget_refilling_buckets() -> None:
    buckets = Buckets(Rate(per_second=1, burst=2), max_tracked=3)
    for client in "abc":
        assert buckets.take(client, 0.0) == 0.0
    assert buckets.take("d", 0.5) == pytest.approx(0.5)  # until "a" is full again, at 1.0
    assert "d" not in buckets and len(buckets) == 3
    assert buckets.take("a", 0.5) == 0.0  # those tracked keep their limits
    assert buckets.take("d", 1.0) == 0.0  # b and c are full again: room


@settings(max_examples=200, deadline=None)
@given(
    per_second=st.floats(0.1, 50),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200),
)
def test_never_more_than_the_burst_plus_the_rate(per_second: float, burst: int, gaps: list[float]) -> None:
    buckets = Buckets(Rate(per_second, burst), max_tracked=4)
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        admitted += buckets.take("a", now) == 0.0
    assert admitted <= burst + per_second * now + 1e-9
    assert len(buckets) <= 1 and buckets.heap_size <= 2 * len(buckets) + 65


def test_addresses_count_by_ipv4_and_ipv6_slash_64() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key(None) == "-"


def test_the_limiter_refuses_in_one_line_with_retry_after() -> None:
    limiter = RateLimiter(limits(per_key=Rate(1 / 60, 2), per_address=Rate(100, 100)))
    for _ in range(2):
        limiter.check_key(Route.REGISTER, "k", 0.0)
        limiter.admit_key(Route.REGISTER, "k", 0.0)
    with pytest.raises(RateLimited) as refused:
        limiter.check_key(Route.REGISTER, "k", 1.0)
    assert refused.value.retry_after == 59
    assert (refused.value.http_status, refused.value.code) == (429, "rate_limited")
    assert str(refused.value) == (
        "too many register requests from this key (limit 1 a minute, bursts of 2); try again in 59 s"
    )
    limiter.check_key(Route.LEASE, "k", 1.0)  # routes apart
    assert limiter.tracked()["register/key"] == 1


def test_a_crowded_table_says_so() -> None:
    limiter = RateLimiter(limits(per_key=Rate(1, 5), per_address=Rate(1, 5), max_tracked=1))
    limiter.admit_address(Route.REGISTER, "192.0.2.1", 0.0)
    with pytest.raises(RateLimited, match="too many addresses are sending register requests at once"):
        limiter.admit_address(Route.REGISTER, "192.0.2.2", 0.0)


def test_honest_peers_stay_far_below_the_defaults() -> None:
    # A peer with 256 slots on 60 s leases renews ~13 leases a second; when idle it asks once
    # a second; it reports each unit once. Owners submit now and then.
    lease_seconds, slots = 60.0, 256
    assert slots / (lease_seconds / 3) + 1 < DEFAULT_PER_KEY[Route.LEASE].per_second
    assert DEFAULT_PER_KEY[Route.REGISTER].burst >= 5
    # `osaas check` runs up to 64 peers on one machine: they register at once.
    assert DEFAULT_PER_ADDRESS[Route.REGISTER].burst >= 64
    with pytest.raises(ValueError):
        Rate(per_second=0, burst=1)
    with pytest.raises(ValueError):
        RateLimits(per_key={Route.LEASE: Rate(1, 1)})
