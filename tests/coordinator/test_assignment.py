"""Bounded-load rendezvous assignment, pure: the cap, stickiness under churn, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import assignment
from coordinator.assignment import Plan, rebalance

TOLERANCE = 1e-9  # loads are float sums; see the module docstring

HOSTS = [f"https://site{i}.example:443" for i in range(40)]
PEERS = [f"{i:02x}c0ffee" for i in range(10)]

peer_sets = st.dictionaries(st.sampled_from(PEERS), st.floats(0.1, 100), min_size=1, max_size=8)
demands = st.dictionaries(st.sampled_from(HOSTS), st.floats(0.01, 1000), max_size=40)
previous_maps = st.dictionaries(st.sampled_from(HOSTS), st.sampled_from(PEERS), max_size=40)
epsilons = st.floats(0.01, 2.0)
slow = settings(deadline=None, max_examples=60)


def check_plan(plan: Plan, peers: dict[str, float], demand: dict[str, float], epsilon: float) -> None:
    """Everything every plan must satisfy, whatever came before it."""
    assert set(plan.assignment) | plan.unassigned == set(demand)
    assert not set(plan.assignment) & plan.unassigned
    assert set(plan.assignment.values()) <= set(peers)
    assert set(plan.loads) == set(plan.caps) == set(peers)
    total_demand, total_weight = math.fsum(demand.values()), math.fsum(peers.values())
    for peer, weight in peers.items():
        held = math.fsum(demand[h] for h, p in plan.assignment.items() if p == peer)
        assert plan.loads[peer] == pytest.approx(held, rel=1e-12, abs=1e-12)
        assert plan.caps[peer] == pytest.approx((1 + epsilon) * weight / total_weight * total_demand, rel=1e-12)
        assert plan.loads[peer] <= plan.caps[peer] * (1 + TOLERANCE)
    assert set(plan.probes) <= set(plan.assignment)
    assert all(1 <= n <= len(peers) for n in plan.probes.values())


def top_choice(host: str, peers: dict[str, float]) -> str:
    return max(sorted(peers), key=lambda p: assignment.score(host, p, peers[p]))


def held_by(plan: Plan, peer: str) -> set[str]:
    return {h for h, p in plan.assignment.items() if p == peer}


def idled(before: Plan, after: Plan, peers: dict[str, float]) -> set[str]:
    """Peers that held nothing before, or whose every host has left them."""
    return {p for p in peers if not held_by(before, p) & held_by(after, p)}


# ---- scores -------------------------------------------------------------------------------


@given(
    st.text(min_size=1, max_size=30), st.lists(st.sampled_from(PEERS), min_size=1, max_size=10, unique=True), st.data()
)
def test_scalar_and_vector_scores_agree(host: str, peer_ids: list[str], data: st.DataObject) -> None:
    weights = data.draw(st.lists(st.floats(0.01, 1e6), min_size=len(peer_ids), max_size=len(peer_ids)))
    scalar = [assignment.score(host, p, w) for p, w in zip(peer_ids, weights, strict=True)]
    vector = assignment.scores(host, peer_ids, weights)
    np.testing.assert_allclose(vector, scalar, rtol=1e-13)
    assert list(np.argsort(-vector, kind="stable")) == sorted(range(len(peer_ids)), key=lambda i: -scalar[i])


def test_scalar_and_vector_rankings_are_identical_on_a_large_sample() -> None:
    hosts = [f"https://h{i}.test:443" for i in range(200)]
    peer_ids = [f"{i:064x}" for i in range(300)]
    weights = [1 + (i * 7919 % 97) / 10 for i in range(300)]
    table = assignment.score_table(hosts, peer_ids, weights)
    for host, row in zip(hosts, table, strict=True):
        scalar = [assignment.score(host, p, w) for p, w in zip(peer_ids, weights, strict=True)]
        assert list(np.argsort(-row, kind="stable")) == sorted(range(300), key=lambda i: -scalar[i])


def test_scores_are_pinned_across_processes_and_machines() -> None:
    # Changing the hash would reassign every host of every running coordinator.
    assert assignment.score("https://example.org:443", "00ff", 1.0) == pytest.approx(0.43410901644914596, rel=1e-14)
    assert assignment.score("https://example.org:443", "a1b2", 2.5) == pytest.approx(9.0766335604495, rel=1e-14)
    hosts = ["https://example.org:443", "https://example.com:443", "http://a.test:80"]
    assert assignment.hrw_assign(hosts, {"00ff": 1.0, "a1b2": 2.5, "77": 1.0}) == {
        "https://example.org:443": "a1b2",
        "https://example.com:443": "a1b2",
        "http://a.test:80": "00ff",
    }
    assert assignment.ring_assign(hosts, ["00ff", "a1b2", "77"]) == {
        "https://example.org:443": "a1b2",
        "https://example.com:443": "00ff",
        "http://a.test:80": "77",
    }


def test_weighted_hrw_gives_peers_hosts_in_proportion_to_their_weights() -> None:
    hosts = [f"https://h{i}.test:443" for i in range(4000)]
    chosen = assignment.hrw_assign(hosts, {"light": 1.0, "heavy": 3.0})
    heavy = sum(p == "heavy" for p in chosen.values())
    assert 2850 < heavy < 3150  # 3000 expected; the standard deviation is about 27
    assert all(chosen[h] == top_choice(h, {"light": 1.0, "heavy": 3.0}) for h in hosts[:200])


def test_ring_ignores_weights_and_a_leaving_peer_moves_only_its_hosts() -> None:
    hosts = [f"https://h{i}.test:443" for i in range(2000)]
    before = assignment.ring_assign(hosts, PEERS)
    assert set(before) == set(hosts) and set(before.values()) == set(PEERS)
    after = assignment.ring_assign(hosts, PEERS[1:])
    assert {h for h in hosts if after[h] != before[h]} == {h for h in hosts if before[h] == PEERS[0]}
    with pytest.raises(ValueError, match="at least 1 virtual node"):
        assignment.ring_assign(hosts, PEERS, vnodes=0)


# ---- the bound and the partition ----------------------------------------------------------


@slow
@given(previous_maps, peer_sets, demands, epsilons, st.booleans())
def test_rebalance_keeps_every_peer_within_its_cap_and_places_each_host_once(
    previous: dict[str, str], peers: dict[str, float], demand: dict[str, float], epsilon: float, fair_first: bool
) -> None:
    plan = rebalance(previous, peers, demand, epsilon, fair_first)
    check_plan(plan, peers, demand, epsilon)
    assert plan.moved == {h for h, p in plan.assignment.items() if previous.get(h, p) != p}
    # An unassigned host fitted nowhere: the cap is never broken to place it.
    for host in plan.unassigned:
        assert all(plan.loads[p] + demand[host] > plan.caps[p] for p in peers)


@slow
@given(previous_maps, peer_sets, demands, st.floats(0.2, 2.0), st.booleans())
def test_nothing_is_unassigned_when_every_host_is_at_most_eps_over_1_plus_eps_of_the_smallest_cap(
    previous: dict[str, str], peers: dict[str, float], demand: dict[str, float], epsilon: float, fair_first: bool
) -> None:
    # Make the condition true by adding hosts as large as the largest one: D grows, so do caps.
    peers = {p: min(max(w, 1.0), 10.0) for p, w in peers.items()}
    largest = max(demand.values(), default=1.0)
    total_weight, lightest = math.fsum(peers.values()), min(peers.values())
    needed = largest * total_weight / (epsilon * lightest) * (1 + 1e-6)
    fillers = max(0, math.ceil((needed - math.fsum(demand.values())) / largest)) + 1
    demand = demand | {f"https://filler{i}.example:443": largest for i in range(fillers)}
    caps = assignment.capacities(peers, math.fsum(demand.values()), epsilon)
    assert max(demand.values()) <= epsilon / (1 + epsilon) * min(caps.values())

    plan = rebalance(previous, peers, demand, epsilon, fair_first)
    check_plan(plan, peers, demand, epsilon)
    assert plan.unassigned == frozenset()


# ---- stickiness -----------------------------------------------------------------------------


@slow
@given(previous_maps, peer_sets, demands, epsilons, st.booleans(), st.data())
def test_a_leaving_peer_moves_only_its_own_hosts(
    previous: dict[str, str],
    peers: dict[str, float],
    demand: dict[str, float],
    epsilon: float,
    fair_first: bool,
    data: st.DataObject,
) -> None:
    before = rebalance(previous, peers, demand, epsilon, fair_first)
    leaving = data.draw(st.sampled_from(sorted(peers)))
    rest = {p: w for p, w in peers.items() if p != leaving}
    after = rebalance(before.assignment, rest, demand, epsilon, fair_first)
    check_plan(after, rest, demand, epsilon)
    idle = idled(before, after, rest)
    for host, peer in before.assignment.items():
        if peer == leaving:
            continue
        # Caps only grew, so nobody sheds. An idle peer takes over its top-choice hosts (an
        # idle peer: one that held nothing, or whose last host was taken over in turn).
        new = after.assignment[host]
        assert new == peer or (new in idle and new == top_choice(host, rest))


@slow
@given(
    st.dictionaries(st.sampled_from(PEERS), st.floats(1, 4), min_size=2, max_size=8),
    st.integers(150, 300),
    st.floats(0.25, 1.0),
    st.booleans(),
    st.data(),
)
def test_with_equal_demands_and_ample_slack_only_the_leavers_hosts_move(
    peers: dict[str, float], hosts: int, epsilon: float, fair_first: bool, data: st.DataObject
) -> None:
    demand = {f"https://h{i}.test:443": 1.0 for i in range(hosts)}
    before = rebalance({}, peers, demand, epsilon, fair_first)
    if fair_first:
        # Every peer has room for a host at all times, and all hosts fill the fair shares
        # exactly: a peer left with nothing would leave D - (its share) for the others.
        assert set(before.assignment.values()) == set(peers)
    leaving = data.draw(st.sampled_from(sorted(peers)))
    rest = {p: w for p, w in peers.items() if p != leaving}
    after = rebalance(before.assignment, rest, demand, epsilon, fair_first)
    assert after.unassigned == frozenset()
    if set(before.assignment.values()) == set(peers):  # nobody idle to take over anything
        assert after.moved == {h for h, p in before.assignment.items() if p == leaving}


@slow
@given(previous_maps, peer_sets, demands, epsilons, st.floats(0.1, 100), st.booleans())
def test_a_joining_peer_takes_only_hosts_whose_top_choice_it_is(
    previous: dict[str, str],
    peers: dict[str, float],
    demand: dict[str, float],
    epsilon: float,
    weight: float,
    fair_first: bool,
) -> None:
    joiner = "ffjoiner"
    before = rebalance(previous, peers, demand, epsilon, fair_first)
    grown = peers | {joiner: weight}
    after = rebalance(before.assignment, grown, demand, epsilon, fair_first)
    check_plan(after, grown, demand, epsilon)
    for host in after.moved:
        old, new = before.assignment[host], after.assignment[host]
        # The cap of every old peer shrank (W grew): one now over it sheds for the bound. Any
        # other move is an idle peer taking over a host whose top choice it is: the joiner, or
        # a peer that shedding, or a takeover in turn, left with nothing for a moment.
        shed = before.loads[old] > after.caps[old] * (1 + TOLERANCE)
        assert shed or new == top_choice(host, grown)


@slow
@given(
    st.dictionaries(st.sampled_from(PEERS), st.floats(1, 4), min_size=1, max_size=8),
    st.integers(150, 300),
    st.floats(0.25, 1.0),
    st.floats(1, 4),
    st.booleans(),
)
def test_with_equal_demands_and_ample_slack_a_joiner_moves_hosts_only_to_itself(
    peers: dict[str, float], hosts: int, epsilon: float, weight: float, fair_first: bool
) -> None:
    demand = {f"https://h{i}.test:443": 1.0 for i in range(hosts)}
    before = rebalance({}, peers, demand, epsilon, fair_first)
    grown = peers | {"ffjoiner": weight}
    after = rebalance(before.assignment, grown, demand, epsilon, fair_first)
    assert after.unassigned == frozenset()
    if any(before.loads[p] > after.caps[p] for p in peers):
        return  # someone sheds for the bound: the general test covers that
    # It takes the hosts it is now the top choice of, as many as its room allows, and no other.
    wanted = {h for h in demand if top_choice(h, grown) == "ffjoiner"}
    room = weight / math.fsum(grown.values()) * hosts if fair_first else after.caps["ffjoiner"]
    assert after.moved <= wanted
    assert {after.assignment[h] for h in after.moved} <= {"ffjoiner"}
    # Whether a host exactly filling the room fits is up to the last bit of a float sum.
    assert min(len(wanted), math.floor(room - 1e-9)) <= len(after.moved) <= min(len(wanted), math.floor(room + 1e-9))


@slow
@given(previous_maps, peer_sets, demands, epsilons, st.booleans())
def test_rebalancing_unchanged_inputs_moves_nothing(
    previous: dict[str, str], peers: dict[str, float], demand: dict[str, float], epsilon: float, fair_first: bool
) -> None:
    first = rebalance(previous, peers, demand, epsilon, fair_first)
    again = rebalance(first.assignment, peers, demand, epsilon, fair_first)
    assert again.assignment == first.assignment
    assert again.moved == frozenset() and again.unassigned == first.unassigned and again.probes == {}


@slow
@given(previous_maps, peer_sets, demands, epsilons, st.booleans())
def test_rebalance_is_deterministic_whatever_the_order_of_its_inputs(
    previous: dict[str, str], peers: dict[str, float], demand: dict[str, float], epsilon: float, fair_first: bool
) -> None:
    def reversed_dict(d: dict) -> dict:
        return dict(reversed(list(d.items())))

    plan = rebalance(previous, peers, demand, epsilon, fair_first)
    assert rebalance(reversed_dict(previous), reversed_dict(peers), reversed_dict(demand), epsilon, fair_first) == plan


# ---- exact examples -------------------------------------------------------------------------


def test_hosts_fill_peers_and_one_too_large_for_any_cap_stays_unassigned() -> None:
    demand = {"https://big.test:443": 10.0, "https://a.test:443": 1.0, "https://b.test:443": 1.0}
    plan = rebalance({}, {"p": 1.0, "q": 1.0}, demand)
    assert plan.caps == {"p": 7.5, "q": 7.5}  # 1.25 * 1/2 * 12
    assert plan.unassigned == {"https://big.test:443"}
    assert set(plan.assignment) == {"https://a.test:443", "https://b.test:443"}
    assert plan.moved == frozenset()


def test_a_single_peer_takes_everything_on_the_first_probe() -> None:
    plan = rebalance({}, {"p": 3.0}, {"https://a.test:443": 1.0, "https://b.test:443": 2.0})
    assert plan.assignment == {"https://a.test:443": "p", "https://b.test:443": "p"}
    assert plan.loads == {"p": 3.0} and plan.caps == {"p": 3.75}
    assert plan.probes == {"https://a.test:443": 1, "https://b.test:443": 1}


def test_without_fair_first_and_with_room_everywhere_it_is_plain_weighted_hrw() -> None:
    hosts = [f"https://h{i}.test:443" for i in range(300)]
    peers = {p: 1.0 + i for i, p in enumerate(PEERS)}
    plan = rebalance({}, peers, dict.fromkeys(hosts, 1.0), epsilon=100.0, fair_first=False)
    assert plan.assignment == assignment.hrw_assign(hosts, peers)
    assert set(plan.probes.values()) == {1}


def test_a_host_whose_top_choice_is_full_goes_to_the_next_and_counts_two_probes() -> None:
    peers = {"p": 1.0, "q": 1.0}
    both_prefer_p = [h for h in HOSTS if top_choice(h, peers) == "p"][:2]
    plan = rebalance({}, peers, dict.fromkeys(both_prefer_p, 3.0), fair_first=False)  # caps 3.75
    assert sorted(plan.assignment.values()) == ["p", "q"]
    assert sorted(plan.probes.values()) == [1, 2]


def test_an_overloaded_peer_sheds_its_smallest_hosts_when_they_move_least() -> None:
    demand = {
        "https://a.test:443": 5.0,
        "https://b.test:443": 1.0,
        "https://c.test:443": 1.0,
        "https://d.test:443": 1.0,
    }
    previous = dict.fromkeys(demand, "p")  # q just joined: p holds 8, its cap is now 5
    plan = rebalance(previous, {"p": 1.0, "q": 1.0}, demand)
    assert plan.assignment["https://a.test:443"] == "p"
    assert plan.loads == {"p": 5.0, "q": 3.0}
    assert plan.moved == {"https://b.test:443", "https://c.test:443", "https://d.test:443"}


def test_an_overloaded_peer_sheds_one_host_when_that_moves_least() -> None:
    demand = {"https://a.test:443": 3.0} | {f"https://s{i}.test:443": 1.25 for i in range(4)}
    # p holds 8, its cap is 5: the three small hosts would move 3.75, the large one 3.
    plan = rebalance(dict.fromkeys(demand, "p"), {"p": 1.0, "q": 1.0}, demand)
    assert plan.moved == {"https://a.test:443"}
    assert plan.loads == {"p": 5.0, "q": 3.0}


def test_hosts_of_departed_peers_are_placed_again_and_finished_hosts_dropped() -> None:
    demand = {"https://a.test:443": 1.0, "https://b.test:443": 1.0, "https://c.test:443": 1.0}
    previous = {
        "https://a.test:443": "gone",
        "https://b.test:443": "p",
        "https://c.test:443": "q",
        "https://done.test:443": "p",
    }
    plan = rebalance(previous, {"p": 1.0, "q": 1.0}, demand, epsilon=1.0)
    assert set(plan.assignment) == set(demand)
    assert plan.assignment["https://b.test:443"] == "p" and plan.assignment["https://c.test:443"] == "q"
    assert plan.moved == {"https://a.test:443"}
    assert set(plan.probes) == {"https://a.test:443"}


def test_a_demand_floor_keeps_the_last_large_host_of_a_job_placeable() -> None:
    peers = {p: 1.0 for p in PEERS}
    last = {"https://big.test:443": 120.0}
    assert rebalance({}, peers, last).unassigned == {"https://big.test:443"}  # caps: 15 each
    # The peers can do 100 each in a planning interval: caps are 1.25 x 100 whatever is left.
    plan = rebalance({}, peers, last, demand_floor=1000.0)
    assert plan.unassigned == frozenset() and set(plan.caps.values()) == {125.0}
    assert plan.loads == {p: (120.0 if p == plan.assignment["https://big.test:443"] else 0.0) for p in peers}
    # Under load the floor changes nothing.
    demand = {h: 10.0 for h in HOSTS}
    assert rebalance({}, peers, demand, demand_floor=399.0) == rebalance({}, peers, demand)
    with pytest.raises(ValueError, match=r"^demand_floor is -1.0; it must be a finite number >= 0$"):
        rebalance({}, peers, demand, demand_floor=-1.0)


def test_no_peers_leaves_every_host_unassigned() -> None:
    plan = rebalance({}, {}, {"https://a.test:443": 1.0})
    assert plan.unassigned == {"https://a.test:443"} and plan.assignment == {} and plan.loads == {}


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "1"])
def test_bad_weights_demands_and_epsilons_are_refused_in_one_line(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^peer p has weight .*; weights must be positive finite numbers$"):
        rebalance({}, {"p": bad}, {"https://a.test:443": 1.0})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"^host https://a.test:443 has demand .*; demands must be positive"):
        rebalance({}, {"p": 1.0}, {"https://a.test:443": bad})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"^epsilon is .*; it must be a positive finite number"):
        rebalance({}, {"p": 1.0}, {"https://a.test:443": 1.0}, epsilon=bad)  # type: ignore[arg-type]
