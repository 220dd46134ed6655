"""The trust rules, pure: replicated verdicts (`coordinator.verdicts`) and peer records
(`coordinator.reputation`), with properties over any answers and any history."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator import reputation, verdicts
from coordinator.reputation import Observed, PeerRecord, Standing
from coordinator.store import BYTES_PER_ITEM
from coordinator.verdicts import MAX_ANSWERS, Answer, State

BUSY = 1e12  # bytes/s seen: the observed cap out of the way
RESULTS = {"ok": (False, True), "broken": (True, True), "timeout": (True, False), "error": (True, False)}


def answer(peer: str, result: str, network: str | None = None) -> Answer:
    problem, reached = RESULTS[result]
    return Answer(peer, network or f"net-{peer}", result, problem, reached)


answers = st.lists(st.sampled_from(sorted(RESULTS)), min_size=1, max_size=MAX_ANSWERS + 1).map(
    lambda results: [answer(f"p{i}", r) for i, r in enumerate(results)]
)


def test_one_ok_is_final_unless_drawn_and_a_problem_never_is() -> None:
    assert verdicts.settle([answer("a", "ok")]) == verdicts.Settled("ok", State.SINGLE, ("a",), (), ())
    assert verdicts.settle([answer("a", "ok")], sampled=True) is None
    assert verdicts.settle([answer("a", "broken")]) is None
    assert verdicts.needs_second_look(answer("a", "timeout"), 0.0, 0.99)
    assert verdicts.needs_second_look(answer("a", "ok"), 0.05, 0.01)
    assert not verdicts.needs_second_look(answer("a", "ok"), 0.05, 0.5)


def test_two_that_agree_settle_it_and_two_that_differ_call_a_third() -> None:
    settled = verdicts.settle([answer("a", "broken"), answer("b", "broken")])
    assert settled is not None and (settled.value, settled.state) == ("broken", State.CONFIRMED)
    assert verdicts.settle([answer("a", "broken"), answer("b", "ok")]) is None


def test_down_from_one_network_only_is_region_dependent_and_blames_nobody() -> None:
    settled = verdicts.settle([answer("a", "timeout"), answer("b", "ok"), answer("c", "ok")])
    assert settled == verdicts.Settled("ok", State.REGION_DEPENDENT, ("b", "c"), (), ("a",))


def test_a_contradicting_answer_is_outvoted() -> None:
    settled = verdicts.settle([answer("liar", "ok"), answer("b", "broken"), answer("c", "broken")])
    assert settled == verdicts.Settled("broken", State.OUTVOTED, ("b", "c"), ("liar",), ())


def test_a_three_way_split_is_decided_by_those_that_reached_the_website() -> None:
    split = [answer("a", "ok"), answer("liar", "broken"), answer("c", "timeout")]
    assert verdicts.settle(split) is None  # a fourth network is asked
    settled = verdicts.settle([*split, answer("d", "ok")])
    assert settled == verdicts.Settled("ok", State.OUTVOTED, ("a", "d"), ("liar",), ("c",))
    # Still split: disputed, the problem shown, nobody blamed.
    settled = verdicts.settle([*split, answer("d", "error")])
    assert settled == verdicts.Settled("broken", State.DISPUTED, ("liar",), (), ("a", "c", "d"))


def test_those_that_could_not_reach_a_website_never_blame_one_that_did() -> None:
    settled = verdicts.settle([answer("a", "ok"), answer("b", "timeout"), answer("c", "timeout")])
    assert settled == verdicts.Settled("timeout", State.REGION_DEPENDENT, ("b", "c"), (), ("a",))


@given(answers, st.booleans())
def test_settled_answers_are_one_of_the_answers_and_every_peer_is_counted_once(
    given_answers: list[Answer], sampled: bool
) -> None:
    settled = verdicts.settle(given_answers, sampled)
    if len(given_answers) > MAX_ANSWERS:
        assert settled is not None  # re-checks are bounded
    if settled is None:
        return
    assert settled.value in {a.value for a in given_answers}
    groups = settled.agreed + settled.outvoted + settled.unreached
    assert sorted(groups) == sorted(a.peer for a in given_answers)
    assert settled.agreed  # someone gave the final answer
    if len({a.value for a in given_answers}) == 1:
        assert settled.state in (State.SINGLE, State.CONFIRMED) and not settled.outvoted
    # Only an answer that reached the website is blamed, and only by answers that reached it.
    reached = {a.peer for a in given_answers if a.reached}
    assert set(settled.outvoted) <= reached
    if settled.outvoted:
        assert any(a.reached for a in given_answers if a.value == settled.value)


def test_the_next_vantage_point_is_from_a_network_not_heard_yet() -> None:
    first = [answer("a", "broken", "10.1.0.0/16")]
    assert verdicts.next_network(first, ["10.1.0.0/16", "10.2.0.0/16"]) == "10.2.0.0/16"
    assert verdicts.next_network(first, ["10.1.0.0/16"]) is None


# ---- peer records ----------------------------------------------------------------------------


def known(record: PeerRecord, rights: int, wrongs: int) -> PeerRecord:
    for _ in range(rights):
        record = reputation.after_known_answer(record, True)
    for _ in range(wrongs):
        record = reputation.after_known_answer(record, False)
    return record


def test_wrong_on_known_answers_quarantines_and_says_why() -> None:
    liar = known(PeerRecord(), 0, reputation.KNOWN_WRONG_LIMIT)
    assert reputation.standing(liar) is Standing.QUARANTINED
    assert liar.quarantined == "wrong on 2 of 2 known answers"
    assert reputation.weight(1e15, liar, BUSY) == 0.0


def test_a_flaky_honest_peer_is_checked_more_never_quarantined() -> None:
    # Outvoted on 40% of its checked answers: suspect (every answer checked), not quarantined.
    flaky = PeerRecord(agreed=60, outvoted=40, known_right=50, known_wrong=1)
    assert reputation.standing(flaky) is Standing.SUSPECT
    assert reputation.recheck_share(flaky) == reputation.SUSPECT_SHARE
    assert reputation.weight(1e9, flaky, BUSY) == reputation.NEW_WEIGHT


def test_claims_are_capped_by_what_was_earned() -> None:
    assert reputation.weight(1e15, PeerRecord(), BUSY) == reputation.NEW_WEIGHT  # a fresh key claiming the world
    assert reputation.weight(50_000.0, PeerRecord(), 0.0) == 50_000.0  # claims below it hold
    veteran = PeerRecord(agreed=1000)
    assert reputation.weight(1e15, veteran, BUSY) == reputation.NEW_WEIGHT + 1000 * reputation.EARNED_PER_ANSWER
    assert reputation.standing(veteran) is Standing.TRUSTED
    assert reputation.recheck_share(veteran) < reputation.recheck_share(PeerRecord())


def test_claims_are_capped_by_what_the_key_was_seen_to_do() -> None:
    veteran = PeerRecord(agreed=10**6)  # earned far more than it claims
    assert reputation.weight(1e15, veteran, 0.0) == reputation.OBSERVED_FLOOR  # seen doing nothing
    assert reputation.weight(1e15, veteran, 5e6) == reputation.OBSERVED_HEADROOM * 5e6
    assert reputation.weight(3e6, veteran, 5e6) == 3e6  # a claim below what it does holds
    assert reputation.weight(1e15, PeerRecord(), 5e6) == reputation.NEW_WEIGHT  # work alone earns nothing
    assert reputation.weight(1e15, veteran, math.nan) == reputation.OBSERVED_FLOOR
    assert reputation.weight(math.nan, veteran, 5e6) == 0.0


def test_what_a_key_is_seen_to_do_follows_its_recent_work() -> None:
    # 4 items accepted every second for many time constants: seen doing 4 items/s.
    seen = Observed()
    for t in range(1, int(10 * reputation.OBSERVED_SECONDS)):
        seen = reputation.observed_after(seen, 4, float(t))
    now = 10 * reputation.OBSERVED_SECONDS
    assert reputation.observed_rate(seen, now) == pytest.approx(4 * BYTES_PER_ITEM, rel=0.01)
    # It stops: a time constant later it is seen doing a third of that, soon nothing.
    assert reputation.observed_rate(seen, now + reputation.OBSERVED_SECONDS) == pytest.approx(
        4 * BYTES_PER_ITEM / math.e, rel=0.01
    )
    assert reputation.observed_rate(seen, now + 20 * reputation.OBSERVED_SECONDS) < 1.0
    # Nonsense changes nothing; a clock gone back ages nothing.
    assert reputation.observed_after(seen, 0, now) == seen
    assert reputation.observed_after(seen, -5, now) == seen
    assert reputation.observed_after(seen, 5, math.inf) == seen
    assert reputation.observed_items(seen, seen.at - 100) == seen.items


def test_naming_versions_it_was_not_leased_quarantines() -> None:
    record = PeerRecord()
    for _ in range(reputation.MISREPORT_LIMIT):
        record = reputation.after_misreport(record)
    assert record.quarantined == f"named a bundle version it was not leased {reputation.MISREPORT_LIMIT} times"


events = st.lists(st.sampled_from(["agreed", "outvoted", "right", "wrong", "misreport"]), max_size=400)


def replay(history: list[str]) -> PeerRecord:
    record = PeerRecord()
    for event in history:
        if event in ("agreed", "outvoted"):
            record = reputation.after_check(record, event == "agreed")
        elif event in ("right", "wrong"):
            record = reputation.after_known_answer(record, event == "right")
        else:
            record = reputation.after_misreport(record)
    return record


claims = st.floats(min_value=0, max_value=1e18)
seen_rates = st.floats(min_value=0, max_value=1e12)


@given(events, claims)
def test_records_hold_their_promises(history: list[str], claimed: float) -> None:
    record = replay(history)
    assert 0.0 <= reputation.weight(claimed, record, BUSY) <= claimed
    assert 0.0 < reputation.recheck_share(record) <= 1.0
    if "wrong" not in history and "misreport" not in history:
        assert record.quarantined is None  # disagreement alone never quarantines
    # Once quarantined, always: nothing it does later clears it.
    for cut in range(len(history)):
        if replay(history[:cut]).quarantined is not None:
            assert record.quarantined is not None
            break


@given(events, claims, seen_rates)
def test_a_claim_never_weighs_more_than_what_was_seen_and_good_standing_never_less_than_a_start(
    history: list[str], claimed: float, observed: float
) -> None:
    record = replay(history)
    weight = reputation.weight(claimed, record, observed)
    # However much it claims, a key weighs at most the headroom over what it was seen to do
    # (or the floor below which that cap never goes).
    assert weight <= max(reputation.OBSERVED_HEADROOM * observed, reputation.OBSERVED_FLOOR)
    assert weight <= claimed
    # A key in good standing can always start: it weighs what a new key does, or its claim.
    if reputation.standing(record) in (Standing.NEW, Standing.TRUSTED):
        assert weight >= min(claimed, reputation.NEW_WEIGHT)
    if reputation.standing(record) is Standing.QUARANTINED:
        assert weight == 0.0


@given(events, st.lists(st.sampled_from(["agreed", "right"]), max_size=400), claims, seen_rates, seen_rates)
def test_weight_grows_with_confirmed_work_and_with_work_seen(
    history: list[str], confirmed: list[str], claimed: float, observed: float, more_seen: float
) -> None:
    before = replay(history)
    after = replay(history + confirmed)
    assert reputation.weight(claimed, after, observed) >= reputation.weight(claimed, before, observed)
    assert reputation.weight(claimed, before, observed + more_seen) >= reputation.weight(claimed, before, observed)


@given(st.lists(st.tuples(st.integers(-5, 1000), st.floats(0, 1e4)), max_size=50), st.floats(0, 1e4))
def test_work_seen_is_never_negative_and_only_adds(steps: list[tuple[int, float]], later: float) -> None:
    seen, now = Observed(), 0.0
    for items, gap in steps:
        now += gap
        after = reputation.observed_after(seen, items, now)
        assert reputation.observed_items(after, now) >= reputation.observed_items(seen, now)
        seen = after
    assert 0.0 <= reputation.observed_rate(seen, now + later) <= reputation.observed_rate(seen, now)
