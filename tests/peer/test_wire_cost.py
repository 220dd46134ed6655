"""What traffic costs at the interface, and the buffers of a fetch (peer.wire_cost): pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.wire_cost import (
    IPV4,
    IPV6,
    MAX_RECEIVE_BUFFER,
    MIN_RECEIVE_BUFFER,
    WINDOW_SECONDS,
    acks_on_wire,
    fetch_window,
    on_wire,
    windows_capacity,
)


def test_a_full_segment_carries_its_headers() -> None:
    assert on_wire(0) == 0
    assert on_wire(1448, IPV4) == 1448 + 66
    assert on_wire(1449, IPV4) == 1449 + 2 * 66
    assert on_wire(1428, IPV6) == 1428 + 86


def test_headers_cost_about_five_percent_over_ipv4_and_six_over_ipv6() -> None:
    megabyte = 1_000_000
    assert 1.045 < on_wire(megabyte, IPV4) / megabyte < 1.047
    assert 1.059 < on_wire(megabyte, IPV6) / megabyte < 1.061
    assert 0.022 < acks_on_wire(megabyte, IPV4) / megabyte < 0.023  # one per two segments


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_paying_in_pieces_costs_what_paying_at_once_costs(a: int, b: int) -> None:
    # The egress pays each chunk as the difference of the running totals.
    assert on_wire(a) + (on_wire(a + b) - on_wire(a)) == on_wire(a + b)
    assert on_wire(a + b) >= on_wire(a) + b  # never less than the payload
    assert acks_on_wire(a + b) >= acks_on_wire(a)


def test_negative_payloads_are_a_bug() -> None:
    with pytest.raises(ValueError):
        on_wire(-1)


def test_without_a_rate_the_kernel_tunes_its_buffers_and_no_deposit_is_needed() -> None:
    window = fetch_window(None, 8)
    assert window.receive_buffer is None and window.unread == 0


@given(st.integers(1_000, 10**10), st.integers(1, 1000))
def test_every_fetchs_buffers_together_hold_about_a_quarter_second_of_the_rate(rate: int, fetches: int) -> None:
    window = fetch_window(rate, fetches)
    assert window.receive_buffer is not None
    assert MIN_RECEIVE_BUFFER <= window.receive_buffer <= MAX_RECEIVE_BUFFER
    # What may arrive unread covers the kernel's doubled buffer, twice, the client's buffer
    # (it reads the socket until twice read_buffer) and the chunk in hand.
    assert window.unread == 4 * window.receive_buffer + 2 * window.read_buffer + window.read_chunk
    if window.receive_buffer > MIN_RECEIVE_BUFFER and window.read_buffer < 256 * 1024:
        assert fetches * window.unread <= rate * WINDOW_SECONDS * 1.5 + fetches * 16 * 1024


def test_a_generous_rate_gets_buffers_that_do_not_slow_it() -> None:
    # 10 MB/s over 8 fetches: each connection may hold ~300 kB, enough for 1/8 of the rate at
    # a 100 ms round trip.
    window = fetch_window(10_000_000, 8)
    assert window.receive_buffer is not None and 2 * window.receive_buffer * 8 / 0.1 >= 10_000_000


def test_no_fetches_is_a_bug() -> None:
    with pytest.raises(ValueError):
        fetch_window(1000, 0)


@pytest.mark.parametrize(("rate", "fetches"), [(300_000, 2), (250_000, 4), (1_000_000, None), (50_000, 2)])
def test_two_fetches_fit_at_once_unless_that_is_more_than_half_a_second(rate: int, fetches: int | None) -> None:
    # One fetch at a time left a link checker waiting on each server's answer in turn.
    capacity = windows_capacity(rate, fetches)
    assert capacity is not None
    assert rate * WINDOW_SECONDS <= capacity <= 2 * rate * WINDOW_SECONDS
    pair = 2 * fetch_window(rate, fetches).unread
    assert capacity >= pair or capacity == round(2 * rate * WINDOW_SECONDS)
