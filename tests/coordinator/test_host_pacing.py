"""Host pacing, pure: one live lease per host, pauses between units, backoff on 429/503."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.host_pacing import (
    BACKOFF_CAP,
    BACKOFF_START,
    DEFAULT_MIN_DELAY,
    MAX_CRAWL_DELAY,
    MAX_RETRY_AFTER,
    UNCONFIRMED_CRAWL_DELAY,
    HostPace,
    UnitSummary,
    after_abandoned,
    after_unit,
    may_lease,
)

T0 = 1_700_000_000.0

seconds = st.floats(0, 2000, allow_nan=False)
peer_numbers = st.floats(-10, 2000) | st.none() | st.sampled_from([math.nan, math.inf, -math.inf])
summaries = st.builds(UnitSummary, throttled=st.integers(-1, 5), retry_after=peer_numbers, crawl_delay=peer_numbers)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("lease"), st.integers(0, 4), seconds),  # a peer asks, after some seconds
        st.tuples(st.just("finish"), summaries, seconds),  # the live lease reports
        st.tuples(st.just("abandon"), st.none(), seconds),  # the coordinator takes it back
    ),
    max_size=60,
)


def test_may_lease_needs_no_live_lease_and_the_pace_reached() -> None:
    pace = HostPace(next_allowed_at=T0)
    assert may_lease(pace, T0, 0)
    assert may_lease(pace, T0 + 5, 0)
    assert not may_lease(pace, T0 - 0.001, 0)
    assert not may_lease(pace, T0 + 5, 1)
    assert not may_lease(HostPace(), T0, 2)


def test_after_unit_waits_the_longest_of_the_delays() -> None:
    assert after_unit(HostPace(), T0, UnitSummary()) == HostPace(T0 + DEFAULT_MIN_DELAY, 0.0, 0.0)
    assert after_unit(HostPace(), T0, UnitSummary(crawl_delay=4.5), peer="a") == HostPace(T0 + 4.5, 0.0, 0.0, 4.5, "a")
    assert after_unit(HostPace(), T0, UnitSummary(throttled=3)) == HostPace(T0 + BACKOFF_START, 0.0, 5.0)
    assert after_unit(HostPace(), T0, UnitSummary(throttled=1, retry_after=86400)) == HostPace(
        T0 + MAX_RETRY_AFTER, 0.0, 5.0
    )
    assert after_unit(HostPace(), T0, UnitSummary(), min_delay=2.0).next_allowed_at == T0 + 2.0
    # A crawl delay seen once stays until robots.txt says otherwise.
    paced = after_unit(HostPace(), T0, UnitSummary(crawl_delay=4.0), peer="a")
    assert after_unit(paced, T0 + 10, UnitSummary(), peer="a") == HostPace(T0 + 14, 0.0, 0.0, 4.0, "a")
    assert after_unit(paced, T0 + 10, UnitSummary(crawl_delay=0.0), peer="a").next_allowed_at == T0 + 11


def test_a_long_crawl_delay_holds_once_a_second_peer_saw_it() -> None:
    # One peer's word makes the host wait UNCONFIRMED_CRAWL_DELAY at most ...
    alone = after_unit(HostPace(), T0, UnitSummary(crawl_delay=20.0), peer="a")
    assert alone.next_allowed_at == T0 + UNCONFIRMED_CRAWL_DELAY and alone.crawl_delay == 0.0
    again = after_unit(alone, T0 + 10, UnitSummary(crawl_delay=20.0), peer="a")
    assert again.next_allowed_at == T0 + 10 + UNCONFIRMED_CRAWL_DELAY  # saying it twice proves nothing
    # ... a second peer that saw as much confirms it (the lower of the two holds) ...
    confirmed = after_unit(again, T0 + 20, UnitSummary(crawl_delay=12.0), peer="b")
    assert (confirmed.crawl_delay, confirmed.next_allowed_at) == (12.0, T0 + 32)
    # ... and then the host keeps it, whoever works on it.
    assert after_unit(confirmed, T0 + 40, UnitSummary(), peer="c").next_allowed_at == T0 + 52


def test_one_lying_peer_cannot_pin_a_website_for_everyone() -> None:
    liar = after_unit(HostPace(), T0, UnitSummary(crawl_delay=1e300), peer="liar")
    assert liar.next_allowed_at == T0 + UNCONFIRMED_CRAWL_DELAY
    # An honest peer sees robots.txt's real delay (none): only that much is confirmed.
    honest = after_unit(liar, T0 + 10, UnitSummary(crawl_delay=0.0), peer="honest")
    assert (honest.crawl_delay, honest.next_allowed_at) == (0.0, T0 + 10 + DEFAULT_MIN_DELAY)
    # Two liars agreeing still meet the cap.
    pair = after_unit(liar, T0 + 10, UnitSummary(crawl_delay=1e300), peer="liar-2")
    assert pair.crawl_delay == MAX_CRAWL_DELAY


@pytest.mark.parametrize("nonsense", [-1.0, math.nan, math.inf, -math.inf])
def test_nonsense_from_a_peer_is_ignored(nonsense: float) -> None:
    paced = HostPace(crawl_delay=4.0)
    assert after_unit(paced, T0, UnitSummary(retry_after=nonsense, crawl_delay=nonsense)) == HostPace(T0 + 4, 4.0, 0)
    assert after_unit(paced, T0, UnitSummary(throttled=-3)) == HostPace(T0 + 4, 4.0, 0.0)


def test_the_pace_never_moves_backwards() -> None:
    late = HostPace(next_allowed_at=T0 + 100)
    assert after_unit(late, T0, UnitSummary()).next_allowed_at == T0 + 100
    assert after_abandoned(late, T0).next_allowed_at == T0 + 100


def test_an_abandoned_lease_keeps_the_backoff_and_pauses_from_the_revocation() -> None:
    pace = HostPace(next_allowed_at=T0, crawl_delay=2.0, backoff=40.0)
    assert after_abandoned(pace, T0 + 60) == HostPace(T0 + 100, 2.0, 40.0)
    assert after_abandoned(HostPace(), T0) == HostPace(T0 + DEFAULT_MIN_DELAY, 0.0, 0.0)


@given(st.integers(1, 20), st.lists(st.integers(1, 50), min_size=20, max_size=20))
def test_backoff_doubles_under_consecutive_throttling_up_to_its_cap_and_success_resets_it(
    units: int, throttled: list[int]
) -> None:
    pace, now, previous = HostPace(), T0, 0.0
    for i in range(units):
        pace = after_unit(pace, now, UnitSummary(throttled=throttled[i]))
        assert pace.backoff == min(BACKOFF_START * 2**i, BACKOFF_CAP)
        assert previous <= pace.backoff <= BACKOFF_CAP
        assert pace.next_allowed_at == now + max(DEFAULT_MIN_DELAY, pace.backoff)
        previous, now = pace.backoff, pace.next_allowed_at
    pace = after_unit(pace, now, UnitSummary())
    assert pace.backoff == 0.0 and pace.next_allowed_at == now + DEFAULT_MIN_DELAY
    assert after_unit(pace, now, UnitSummary(throttled=1)).backoff == BACKOFF_START


@given(operations)
def test_a_schedule_driven_by_these_rules_is_polite(ops: list[tuple[str, object, float]]) -> None:
    """Peers ask for the host whenever they like; the coordinator leases by `may_lease` and
    paces by `after_unit`. Checked against an independent model of the rules: never two live
    leases, never a start before the pause that the last unit's end calls for."""
    pace, now, live = HostPace(), T0, 0
    ended_at, crawl_delay, throttled_in_a_row, retry_after = -math.inf, 0.0, 0, 0.0
    starts = 0
    for op, arg, wait in ops:
        now += wait
        if op == "lease":
            if may_lease(pace, now, live):
                live += 1
                starts += 1
                assert live == 1
                backoff = min(BACKOFF_START * 2 ** (throttled_in_a_row - 1), BACKOFF_CAP) if throttled_in_a_row else 0
                assert now >= ended_at + max(DEFAULT_MIN_DELAY, crawl_delay, backoff, retry_after)
                assert now >= pace.next_allowed_at
        elif live and op == "finish":
            assert isinstance(arg, UnitSummary)
            live -= 1
            pace = after_unit(pace, now, arg)
            ended_at = now
            if arg.crawl_delay is not None and math.isfinite(arg.crawl_delay) and arg.crawl_delay >= 0:
                crawl_delay = min(arg.crawl_delay, MAX_CRAWL_DELAY)
            throttled_in_a_row = throttled_in_a_row + 1 if arg.throttled > 0 else 0
            sane_retry = arg.retry_after is not None and math.isfinite(arg.retry_after) and arg.retry_after >= 0
            retry_after = min(arg.retry_after, MAX_RETRY_AFTER) if sane_retry and arg.retry_after is not None else 0.0
        elif live and op == "abandon":
            live -= 1
            pace = after_abandoned(pace, now)
            ended_at, retry_after = now, 0.0
    assert live <= 1
    assert starts <= sum(op == "lease" for op, _, _ in ops)
