"""Unit sizing, pure: the throughput average, the unit size, and the straggler rule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.unit_sizing import (
    DEFAULT_UNIT,
    MAX_UNIT,
    MIN_STRAGGLER_SECONDS,
    MIN_UNIT,
    SMOOTHING,
    TARGET_SECONDS,
    expected_seconds,
    is_straggler,
    observe,
    unit_size,
)

T0 = 1_700_000_000.0

rates = st.floats(0, 1e4)
reports = st.tuples(st.integers(0, 10_000), st.floats(0.01, 3600))


def test_the_first_report_sets_the_estimate_and_later_ones_move_it_part_of_the_way() -> None:
    assert observe(None, 30, 10.0) == 3.0
    assert observe(3.0, 10, 10.0) == pytest.approx(SMOOTHING * 1.0 + (1 - SMOOTHING) * 3.0)
    assert observe(3.0, 0, 10.0) == pytest.approx((1 - SMOOTHING) * 3.0)


@pytest.mark.parametrize(("items", "seconds"), [(10, 0.0), (10, -1.0), (10, math.nan), (10, math.inf), (-1, 5.0)])
def test_nonsense_reports_leave_the_estimate_alone(items: int, seconds: float) -> None:
    assert observe(None, items, seconds) is None
    assert observe(2.5, items, seconds) == 2.5


@given(st.lists(reports, min_size=1, max_size=30))
def test_the_estimate_stays_within_the_observed_rates(observed: list[tuple[int, float]]) -> None:
    estimate = None
    for items, seconds in observed:
        estimate = observe(estimate, items, seconds)
    seen = [items / seconds for items, seconds in observed]
    assert estimate is not None
    assert min(seen) * (1 - 1e-9) <= estimate <= max(seen) * (1 + 1e-9)


def test_unit_size_is_about_thirty_seconds_of_work_within_bounds() -> None:
    assert unit_size(None) == DEFAULT_UNIT
    assert unit_size(1.0) == 30
    assert unit_size(2.5) == 75
    assert unit_size(0.0) == MIN_UNIT
    assert unit_size(1e6) == MAX_UNIT
    assert unit_size(math.nan) == DEFAULT_UNIT and unit_size(-1.0) == DEFAULT_UNIT


@given(rates, rates)
def test_unit_size_grows_with_throughput_and_stays_in_bounds(a: float, b: float) -> None:
    slow, fast = sorted((a, b))
    assert MIN_UNIT <= unit_size(slow) <= unit_size(fast) <= MAX_UNIT
    if MIN_UNIT < unit_size(slow) < MAX_UNIT:
        assert abs(unit_size(slow) / slow - TARGET_SECONDS) <= 0.5 / slow + 1e-9


def test_expected_seconds() -> None:
    assert expected_seconds(60, 2.0) == 30.0
    assert expected_seconds(DEFAULT_UNIT, None) == TARGET_SECONDS
    assert expected_seconds(DEFAULT_UNIT, 0.0) == TARGET_SECONDS


def test_a_silent_overdue_lease_at_the_end_of_a_job_is_a_straggler() -> None:
    # Leased at T0 for 30 s of work, renewals every 20 s, last renewal at T0 + 20.
    assert is_straggler(T0, 30.0, T0 + 61, False, T0 + 20, 20.0)
    assert not is_straggler(T0, 30.0, T0 + 61, True, T0 + 20, 20.0)  # other work is queued
    assert not is_straggler(T0, 30.0, T0 + 61, False, T0 + 60, 20.0)  # its holder still renews
    assert not is_straggler(T0, 30.0, T0 + 59, False, T0 + 10, 20.0)  # not past the minimum yet
    assert not is_straggler(T0, 100.0, T0 + 199, False, T0 + 20, 20.0)  # not twice the expected
    assert is_straggler(T0, 100.0, T0 + 201, False, T0 + 20, 20.0)


@given(st.floats(0, 1000), st.floats(0, 5000), st.booleans(), st.floats(-100, 5000), st.floats(1, 300))
def test_a_holder_that_still_renews_is_never_duplicated(
    expected: float, running: float, queued: bool, renewed: float, renew_interval: float
) -> None:
    """A renewing holder is alive and may be fetching: a duplicate would be a second live lease
    on its host. Only the end of a job, an overdue lease and a silent holder together allow one."""
    now, last_renewed_at = T0 + running, T0 + renewed
    straggling = is_straggler(T0, expected, now, queued, last_renewed_at, renew_interval)
    overdue = now - T0 > 2 * expected and now - T0 > MIN_STRAGGLER_SECONDS
    silent = now - last_renewed_at > 2 * renew_interval
    assert straggling == (not queued and overdue and silent)
    if now - last_renewed_at <= 2 * renew_interval:
        assert not straggling
