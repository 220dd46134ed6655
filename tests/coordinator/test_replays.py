"""Each signed request is taken once: nonces remembered for the clock window, memory bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.replays import Busy, SeenNonces


def test_a_nonce_is_taken_once_per_signer() -> None:
    seen = SeenNonces(window=60.0)
    assert seen.first_time("alice", "n1", sent_at=100.0, now=100.0)
    assert not seen.first_time("alice", "n1", sent_at=100.0, now=130.0)
    assert seen.first_time("bob", "n1", sent_at=100.0, now=130.0)  # another signer's nonce


def test_nonces_are_forgotten_once_their_timestamp_alone_refuses_them() -> None:
    seen = SeenNonces(window=60.0)
    seen.first_time("alice", "n1", sent_at=100.0, now=100.0)
    seen.first_time("alice", "n2", sent_at=150.0, now=150.0)
    assert not seen.first_time("alice", "n1", sent_at=100.0, now=160.0)  # still in the window
    seen.first_time("alice", "n3", sent_at=161.0, now=161.0)
    assert len(seen) == 2  # n1 left the window (100 + 60 < 161)


def test_memory_is_bounded_and_full_means_busy_not_forgetting() -> None:
    seen = SeenNonces(capacity=3, window=60.0)
    for nonce in ("a", "b", "c"):
        assert seen.first_time("alice", nonce, sent_at=100.0, now=100.0)
    with pytest.raises(Busy):
        seen.first_time("alice", "d", sent_at=100.0, now=101.0)
    assert not seen.first_time("alice", "a", sent_at=100.0, now=101.0)  # still remembered
    assert seen.first_time("alice", "d", sent_at=170.0, now=170.0)  # the window moved on


@settings(max_examples=50)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 200)), max_size=60))
def test_no_replay_within_the_window_ever_gets_through(requests: list[tuple[str, int]]) -> None:
    seen = SeenNonces(window=60.0)
    now = 0.0
    taken: dict[str, float] = {}
    for nonce, step in requests:
        now += step / 10
        sent_at = now
        first = seen.first_time("alice", nonce, sent_at, now)
        if nonce in taken and now - taken[nonce] <= 60.0:
            assert not first
        if first:
            taken[nonce] = sent_at


def test_busy_says_when_to_come_back() -> None:
    seen = SeenNonces(capacity=1, window=60.0)
    seen.first_time("alice", "a", sent_at=100.0, now=100.0)
    with pytest.raises(Busy) as busy:
        seen.first_time("alice", "b", sent_at=130.0, now=130.0)
    assert busy.value.retry_after == 30.0  # when "a" leaves the window
