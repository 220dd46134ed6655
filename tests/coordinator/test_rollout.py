"""Rollout rules, pure: which peers get a candidate, when it is rolled back, how a rollout moves."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator import rollout
from coordinator.rollout import MIN_UNITS, Rollout, RolloutState, Tally
from coordinator.store import Conflict, InvalidInput

peer_ids = st.text("0123456789abcdef", min_size=64, max_size=64)
versions = st.from_regex(r"[0-9][0-9a-z.+-]{0,10}", fullmatch=True)
counts = st.integers(0, 1000)


@given(peer_ids, versions, st.integers(0, 100), st.integers(0, 100))
def test_picks_candidate_is_deterministic_and_only_grows_with_the_percent(
    peer: str, version: str, low: int, high: int
) -> None:
    low, high = sorted((low, high))
    picked = rollout.picks_candidate(peer, "linkcheck", version, low)
    assert picked == rollout.picks_candidate(peer, "linkcheck", version, low)
    assert picked == (rollout.bucket(peer, "linkcheck", version) < low)
    if picked:
        assert rollout.picks_candidate(peer, "linkcheck", version, high)
    assert not rollout.picks_candidate(peer, "linkcheck", version, 0)
    assert rollout.picks_candidate(peer, "linkcheck", version, 100)


def test_buckets_spread_peers_over_the_percentages() -> None:
    buckets = [rollout.bucket(f"{i:064x}", "linkcheck", "2.0") for i in range(2000)]
    assert set(buckets) == set(range(100))
    inside = sum(b < 50 for b in buckets)
    assert 800 < inside < 1200  # a fair hash puts about half of the peers into a 50% rollout


@given(counts, counts, counts, counts)
def test_judge_rolls_back_exactly_when_enough_units_fail_clearly_more_often(
    failed: int, ok: int, stable_failed: int, stable_ok: int
) -> None:
    candidate, stable = Tally(ok, failed), Tally(stable_ok, stable_failed)
    message = rollout.judge("linkcheck", "2.0", candidate, "1.0", stable)
    stable_units = stable_ok + stable_failed
    # Cross-multiplied, in integers: failed/units - stable_failed/stable_units > 1/5.
    units = ok + failed
    if stable_units:
        worse = 5 * (failed * stable_units - stable_failed * units) > units * stable_units
    else:
        worse = 5 * failed > units
    assert (message is not None) == (units >= MIN_UNITS and worse)
    if message is not None:
        assert message.startswith(f"rolled back linkcheck 2.0: {failed} of {units} units failed (")
        assert message.endswith(
            f" vs {stable_failed} of {stable_units} ({stable_failed / stable_units if stable_units else 0:.0%}) for 1.0"
        )


def test_judge_message_and_boundaries() -> None:
    assert rollout.judge("linkcheck", "2.0", Tally(0, 6), "1.0", Tally(12, 0)) == (
        "rolled back linkcheck 2.0: 6 of 6 units failed (100%) vs 0 of 12 (0%) for 1.0"
    )
    assert rollout.judge("linkcheck", "2.0", Tally(0, MIN_UNITS - 1), "1.0", Tally()) is None
    # Exactly MARGIN worse is still fine: 3 of 10 vs 1 of 10.
    assert rollout.judge("linkcheck", "2.0", Tally(7, 3), "1.0", Tally(9, 1)) is None
    assert rollout.judge("linkcheck", "2.0", Tally(6, 4), "1.0", Tally(9, 1)) is not None
    # A stable version that fails just as often does not make the candidate look bad.
    assert rollout.judge("linkcheck", "2.0", Tally(0, 10), "1.0", Tally(1, 9)) is None


def test_a_rollout_from_start_to_completion() -> None:
    r = rollout.first("demo", "ab" * 32, "1.0")
    assert (r.stable, r.candidate, r.percent, r.state) == ("1.0", None, 0, RolloutState.STABLE)
    with pytest.raises(InvalidInput, match=r"^demo 1.0 is already the stable version$"):
        rollout.started(r, "1.0", 50)

    r = rollout.started(r, "2.0", 10)
    assert (r.candidate, r.percent, r.state, r.message) == (
        "2.0",
        10,
        RolloutState.ROLLING_OUT,
        "rolling out demo 2.0 to 10% of peers",
    )
    r = rollout.counted(r, "2.0", ok=False)
    r = rollout.counted(r, "1.0", ok=False)  # the stable version's units are not the candidate's
    assert r.since_started == Tally(0, 1)
    r = rollout.started(r, "2.0", 50)  # only the percentage changes: the record so far stays
    assert (r.percent, r.since_started) == (50, Tally(0, 1))
    r = rollout.started(r, "3.0", 50)  # another candidate starts afresh
    assert (r.candidate, r.since_started) == ("3.0", Tally())

    done = rollout.started(r, "3.0", 100)
    assert done == replace(
        r,
        stable="3.0",
        candidate=None,
        percent=0,
        state=RolloutState.STABLE,
        message="rolled out demo 3.0 to every peer",
        since_started=Tally(),
    )


@given(peer_ids, st.integers(1, 99))
def test_version_for_follows_state_and_percent(peer: str, percent: int) -> None:
    r = rollout.started(rollout.first("demo", "ab" * 32, "1.0"), "2.0", percent)
    expected = "2.0" if rollout.picks_candidate(peer, "demo", "2.0", percent) else "1.0"
    assert rollout.version_for(r, peer) == expected
    rolled_back = replace(r, state=RolloutState.ROLLED_BACK)
    assert rollout.version_for(rolled_back, peer) == "1.0"


@given(st.lists(st.booleans(), max_size=30), counts, counts)
def test_judged_rolls_back_once_and_then_leaves_the_rollout_alone(
    outcomes: list[bool], stable_ok: int, stable_failed: int
) -> None:
    stable = Tally(stable_ok, stable_failed)
    r: Rollout = rollout.started(rollout.first("demo", "ab" * 32, "1.0"), "2.0", 50)
    for ok in outcomes:
        before = r
        r = rollout.judged(rollout.counted(r, "2.0", ok), stable)
        if before.state is RolloutState.ROLLED_BACK:
            assert r == before  # nothing is counted or judged once the candidate is gone
        elif r.state is RolloutState.ROLLED_BACK:
            assert (r.candidate, r.percent, r.stable) == (None, 0, "1.0")
            assert r.message == rollout.judge("demo", "2.0", before.since_started.counted(ok), "1.0", stable)
        else:
            assert r.since_started == before.since_started.counted(ok)


def test_a_rolled_back_version_goes_out_again_only_by_force() -> None:
    r = rollout.started(rollout.first("demo", "ab" * 32, "1.0"), "2.0", 50)
    for _ in range(rollout.MIN_UNITS):
        r = rollout.judged(rollout.counted(r, "2.0", False), Tally())
    assert (r.state, r.rolled_back) == (RolloutState.ROLLED_BACK, frozenset({"2.0"}))
    r = rollout.started(r, "3.0", 100)  # another version's rollout keeps the mark
    assert (r.stable, r.rolled_back) == ("3.0", frozenset({"2.0"}))
    for percent in (10, 100):
        with pytest.raises(Conflict, match=r"demo 2.0 was rolled back by the coordinator .* only with --force"):
            rollout.started(r, "2.0", percent)
    forced = rollout.started(r, "2.0", 10, force=True)
    assert (forced.candidate, forced.state, forced.rolled_back) == ("2.0", RolloutState.ROLLING_OUT, frozenset())
    assert rollout.started(r, "3.0", 100, force=True).rolled_back == frozenset({"2.0"})  # force frees only its own
