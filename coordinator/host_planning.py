"""Which peer works on which host, and when to plan again: the rules a store applies.

Pure: a store (SQLite today, PostgreSQL later) reads the active peers, the running jobs'
bundles, each host's demand and the current assignment, calls `plan_hosts`, and writes what
it says; `Replanning` and `plan_is_due` say when a lease should plan first.

Weights are bytes/s: what a peer claims (DEFAULT_PEER_CAPACITY when it did not say), capped by
what its key earned with confirmed answers and what it was seen to do (`reputation.weight`);
a quarantined key weighs nothing and gets no host. Demand is a host's unfinished items
(waiting, queued or leased). The demand floor is the items the active peers get through in one
planning interval, at BYTES_PER_ITEM, by their weights. A peer that does not run
every bundle of the running jobs gets no host: it could be given one whose work it never
leases, and that host would wait as long as the peer is active.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from coordinator import assignment, reputation
from coordinator.reputation import PeerRecord
from coordinator.store import BYTES_PER_ITEM, DEFAULT_PEER_CAPACITY, REBALANCE_INTERVAL
from overlay.wire import ANY_WORKLOAD

# A lease replans at most this often (seconds of its `now`); the API's task replans anyway.
MIN_REPLAN = REBALANCE_INTERVAL / 2
# Planning takes at most this share of the store's time: after a plan that took c seconds the
# next waits c / PLAN_SHARE seconds (real time), unless a peer the last plan did not know asks.
# Plans under CHEAP_PLAN seconds (a few thousand hosts) are never held back.
PLAN_SHARE = 0.1
CHEAP_PLAN = 0.05
# A coordinator's first plan waits this long after it first hears from a peer (`settled`), so
# that peers started together all get hosts, not the first one to register all of them.
SETTLE_SECONDS = 3.0
MAX_SETTLE = 60.0
# A peer that could not work on a host (its bundle would not download there, say) leaves it to
# other peers this long; then it may try again (the failure may have been passing).
STEP_ASIDE_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class ActivePeer:
    """A peer heard from lately, or holding a live lease."""

    capacity: float  # bytes/s it said it sustains; 0 or less: it did not say
    workloads: object  # the bundle names it registered, as decoded (anything: a peer said it)
    record: PeerRecord  # its key's agreement record
    observed: float  # bytes/s the coordinator saw it do lately (`reputation.observed_rate`)


@dataclass(frozen=True, slots=True)
class HostPlan:
    """What a plan decided, and what a store writes of it."""

    chosen: dict[str, str]  # every host with work -> its peer
    changed: list[tuple[str, str]]  # (host, peer) newly placed or moved
    dropped: list[str]  # hosts that had a peer and now have none (no work left)
    moved: int  # of `changed`, hosts taken from one peer to another
    overflow: int  # hosts beyond every peer's cap, placed anyway (`overflow`)
    eligible: int  # peers that run every running bundle and weigh something: those given hosts


def plan_hosts(
    previous: Mapping[str, str],
    active: Mapping[str, ActivePeer],
    running: Collection[str],
    demand: Mapping[str, int],
    epsilon: float = assignment.DEFAULT_EPSILON,
    stepped_aside: Mapping[str, Collection[str]] | None = None,
) -> HostPlan:
    """Assign every host with work to an active peer; sticky, so only what must move moves.
    `stepped_aside`: host -> peers that could not work on it lately (their bundle would not
    download, say); such a host goes to another peer while one can take it (`step_aside`)."""
    bundles = set(running)
    weights = {peer_id: weight(peer) for peer_id, peer in active.items() if runs_all(peer.workloads, bundles)}
    peers = {peer_id: w for peer_id, w in weights.items() if w > 0}
    floor = math.fsum(peers.values()) / BYTES_PER_ITEM * REBALANCE_INTERVAL
    plan = assignment.rebalance(previous, peers, demand, epsilon=epsilon, demand_floor=floor)
    placed = overflow(plan, demand, previous)
    chosen = spread(step_aside({**plan.assignment, **placed}, peers, stepped_aside or {}), peers, demand, plan.caps)
    return HostPlan(
        chosen=chosen,
        changed=[(host, peer) for host, peer in chosen.items() if previous.get(host) != peer],
        dropped=[host for host in previous if host not in chosen],
        moved=len(plan.moved),
        overflow=len(placed),
        eligible=len(peers),
    )


def step_aside(
    chosen: Mapping[str, str], peers: Mapping[str, float], stepped_aside: Mapping[str, Collection[str]]
) -> dict[str, str]:
    """`chosen` with every host whose peer stepped aside from it given to the heaviest other
    peer (the most capacity: the likeliest to hold a copy of what failed) that did not step
    aside too; kept where it is when every peer did (someone must try again)."""
    moved = dict(chosen)
    for host, peer in chosen.items():
        away = stepped_aside.get(host, ())
        if peer in away:
            others = sorted((p for p in peers if p not in away), key=lambda p: (-peers[p], p))
            if others:
                moved[host] = others[0]
    return moved


def spread(
    chosen: Mapping[str, str],
    peers: Mapping[str, float],
    demand: Mapping[str, float],
    caps: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """`chosen` with no eligible peer left idle while another holds two hosts or more: the
    smallest host of the peer holding most moves to the idle peer of most capacity, if it fits
    under that peer's cap (`caps`, the bounded loads'; the next plan would take it back, and
    the one after give it again). The bounded loads leave this to chance when the work is small
    beside the peers' capacity (the demand floor makes every cap loose): six peers and six
    websites could leave three peers with nothing. Sticky like the rest: once spread, the next
    plan keeps it."""
    moved = dict(chosen)
    held: dict[str, list[str]] = {peer: [] for peer in peers}
    for host, peer in moved.items():
        held.setdefault(peer, []).append(host)
    idle = sorted((p for p in peers if not held[p]), key=lambda p: (-peers[p], p))
    for newcomer in idle:
        busiest = max(sorted(held), key=lambda p: len(held[p]))
        if len(held[busiest]) < 2:
            break
        host = min(sorted(held[busiest]), key=lambda h: demand.get(h, 0))
        if caps is not None and demand.get(host, 0) > caps.get(newcomer, math.inf):
            continue  # a smaller newcomer's cap cannot hold it; a larger one's came first
        held[busiest].remove(host)
        held[newcomer].append(host)
        moved[host] = newcomer
    return moved


def weight(peer: ActivePeer) -> float:
    """Its weight in the plan: its claim (DEFAULT_PEER_CAPACITY when it made none) as far as
    its record and what it was seen to do bear it out (`reputation.weight`)."""
    claimed = peer.capacity if peer.capacity > 0 else DEFAULT_PEER_CAPACITY
    return reputation.weight(claimed, peer.record, peer.observed)


def runs_all(workloads: object, bundles: Collection[str]) -> bool:
    """Does a peer that registered `workloads` run every one of `bundles`?"""
    names = set(workloads) if isinstance(workloads, list) else set()
    return ANY_WORKLOAD in names or set(bundles) <= names


def overflow(plan: assignment.Plan, demand: Mapping[str, float], previous: Mapping[str, str]) -> dict[str, str]:
    """Hosts the bounded loads left without a peer, largest first: each stays with the active
    peer that had it, unless that peer already keeps a larger one of them, else goes to the
    peer with the most room left under its cap. Work is never stranded: a host larger than any
    peer's room (typically the last big host of a job, when the caps have shrunk with the work
    left) would otherwise wait for nobody. Moving it would not bring it under a cap, only cost
    a handover (a pause at the host, a bundle fetch on the new peer). Caps bound shares of the
    backlog, not a volunteer's rate, which its own egress enforces."""
    room = {peer: plan.caps[peer] - plan.loads[peer] for peer in plan.caps}
    placed: dict[str, str] = {}
    keeping: set[str] = set()
    for host in sorted(plan.unassigned, key=lambda h: (-demand[h], h)):
        if not room:
            break
        peer = previous.get(host)
        if peer not in room or peer in keeping:
            peer = max(sorted(room), key=lambda p: room[p])
        keeping.add(peer)
        placed[host] = peer
        room[peer] -= demand[host]
    return placed


@dataclass(frozen=True, slots=True)
class Replanning:
    """The last plan, as the next one's timing needs it."""

    at: float = -math.inf  # the store's `now` it was made at
    peers: frozenset[str] = frozenset()  # the active peers it knew
    seconds: float = 0.0  # what it took (monotonic clock)
    ended: float = -math.inf  # when it ended (monotonic clock)


def settled(first_peer_at: float | None, now: float, settle: float) -> bool:
    """May the store make its first plan? Not before `settle` seconds after it first heard from
    a peer: the first peer to register would otherwise be given every host, lease a unit of
    each and keep them, while the peers that came a second later waited a unit's length (half
    a minute) for work. After the first plan a newcomer gets hosts at the next one."""
    return first_peer_at is not None and now - first_peer_at >= settle


def planned(now: float, started: float, ended: float, active: Collection[str]) -> Replanning:
    """The record of a plan made at `now` that ran from `started` to `ended` (monotonic)."""
    return Replanning(now, frozenset(active), ended - started, ended)


def rested(last: Replanning, monotonic_now: float) -> bool:
    """Has the store rested long enough since the last plan (PLAN_SHARE)?"""
    if last.seconds < CHEAP_PLAN:
        return True
    return monotonic_now - last.ended >= last.seconds / PLAN_SHARE


def plan_is_due(
    last: Replanning,
    needed: bool,
    peer_id: str,
    now: float,
    monotonic_now: float,
    holds_a_host: Callable[[], bool],
) -> bool:
    """Should this peer's lease replan first? Yes at once when the asking peer was not active
    at the last plan (the set of active peers changed). Else at most every MIN_REPLAN seconds,
    and not before the store rested from the last plan (PLAN_SHARE): when a plan is `needed`
    (hosts without a peer got work, peers registered), or when the asking peer holds no host
    (another peer may have gone quiet). `holds_a_host` is asked only when that decides."""
    if peer_id not in last.peers:
        return True
    if 0 <= now - last.at < MIN_REPLAN or not rested(last, monotonic_now):
        return False
    return needed or not holds_a_host()
