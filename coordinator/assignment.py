"""Which peer works on which host: capacity-weighted rendezvous hashing with bounded loads.

The unit of assignment is a host ("https://example.org:443"): all of a host's work goes through
one peer at a time, so per-host politeness never needs peers to agree with each other. Peer i has
a weight w_i > 0 (the bytes/s it promised), host h a demand d_h > 0 (its work remaining);
W and D are their sums.

Every (host, peer) pair has a score w_i / -ln(u), where u is a hash of the pair in (0, 1). The
peer with the highest score is the host's top choice, and peer i is the top choice of a share
w_i / W of the hosts (weighted rendezvous hashing). A peer joining only wins hosts; a peer
leaving only gives up its own.

Bounded loads (consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam, made
weighted): peer i never holds more than cap_i = (1 + ε)·(w_i / W)·D. A host goes to the
highest-scoring peer with room for it, or stays unassigned: the cap is the volunteer's promise
and is never broken to place a host.

Nothing stays unassigned when every host's demand d_h ≤ ε/(1 + ε)·min_i cap_i (that is
ε·(min_i w_i / W)·D). Proof: if h fits nowhere, load_i > cap_i − d_h ≥ cap_i / (1 + ε) =
(w_i / W)·D for every peer, so the loads sum to more than D; yet they hold only hosts other
than h, at most D − d_h. The argument holds for any placement order and any sticky state.

`rebalance` is sticky: only what must move moves.

- Hosts without demand are dropped; hosts of departed peers are placed again.
- An idle peer (just joined, or its hosts all finished) takes over the hosts whose top choice it
  now is, as its room allows. Busy peers never take hosts from each other; a peer left with
  nothing (its last host taken over, or shed) is idle and takes over in turn.
- A peer over its cap (D or W changed) sheds the least demand that brings it back within cap.
- Everything left over is placed largest demand first, which packs better.

Fair share first (`fair_first=True`, the default): a host goes to its highest-scoring peer that
stays within its fair share (w_i / W)·D, and only when no peer does, to its highest-scoring peer
within its cap. The textbook rule (`fair_first=False`) fills peers up to their caps in score
order, so a peer that hashing gave little work stays underloaded: with heavy-tailed host sizes
(bench/fair_load_sim.py) a third of its fair share is common, and Jain's index of the
utilisations stays near 0.94. Filling to the fair share first spreads the overflow over those
peers. The caps, and so the proof above, are the same; the price is that hosts sit further
from their top choice (`Plan.probes`).

The end of a job. Caps are shares of the work left, so they shrink with it, and the last large
hosts fit nowhere: one host alone needs a peer with 80% of W. So a coordinator passes
`demand_floor`, the work its peers can do in one planning interval (W times the interval, in
demand units), and caps come from max(D, demand_floor): nobody is asked for more than (1 + ε)
times its promised rate over an interval, and under load (D above the floor) nothing changes.

Loads are sums of floats, so two sums of the same demands may differ in the last bits: a peer
counts as over its cap only beyond a relative `_SLACK` of 1e-9.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import numbers
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_EPSILON = 0.25
MAX_EPSILON = 10.0  # an operator's largest: caps of 11x the fair share bound next to nothing
RING_VNODES = 100

_HOST_DOMAIN = b"osaas-hrw-host"
_PEER_DOMAIN = b"osaas-hrw-peer"
_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_CELLS = 256_000  # scores per array operation: a few MB
_BLOCK = _CELLS // 1000  # hosts per array operation against 1,000 peers
_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of one `rebalance`. Loads and caps are in the units of the demands."""

    assignment: Mapping[str, str]  # host -> peer
    loads: Mapping[str, float]  # peer -> demand it holds; every peer is listed
    caps: Mapping[str, float]  # peer -> (1 + ε)·(w / W)·max(D, demand_floor)
    moved: frozenset[str]  # hosts that were on a peer and are now on another one
    unassigned: frozenset[str]  # hosts no peer had room for
    # Host placed in this call -> peers examined in score order until one had room, i.e. the
    # chosen peer's rank in the host's scores (1: its top choice).
    probes: Mapping[str, int]


# ---- scores -----------------------------------------------------------------------------


def score(host: str, peer_id: str, weight: float) -> float:
    """The rendezvous score of one pair, in plain Python; `scores` is its array twin."""
    z = ((_host_key(host) ^ _peer_key(peer_id)) + _GAMMA) & _MASK
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    z ^= z >> 31
    # The top 53 bits, so that u is exact in a float64 and never rounds up to 1.0 (which
    # (z + 0.5) / 2**64 does for the top 1,024 values of z).
    u = ((z >> 11) + 0.5) / 2.0**53
    return weight / -math.log(u)


def scores(host: str, peer_ids: Sequence[str], weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """The scores of one host against many peers, in one array operation."""
    return score_table([host], peer_ids, weights)[0]


def score_table(hosts: Sequence[str], peer_ids: Sequence[str], weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Scores of many hosts (rows) against many peers (columns)."""
    return _table(_host_keys(hosts), _peer_keys(peer_ids), np.asarray(weights, dtype=np.float64))


# ---- the anchors ------------------------------------------------------------------------


def hrw_assign(hosts: Iterable[str], peers: Mapping[str, float]) -> dict[str, str]:
    """Unbounded weighted rendezvous hashing: every host on its top choice, whatever the load."""
    _check_weights(peers)
    if not peers:
        return {}
    pending = list(hosts)
    peer_ids = sorted(peers)
    keys, weights = _peer_keys(peer_ids), np.array([peers[p] for p in peer_ids], dtype=np.float64)
    chosen: dict[str, str] = {}
    for start in range(0, len(pending), _BLOCK):
        block = pending[start : start + _BLOCK]
        for host, column in zip(block, _table(_host_keys(block), keys, weights).argmax(axis=1), strict=True):
            chosen[host] = peer_ids[column]
    return chosen


def ring_assign(hosts: Iterable[str], peer_ids: Iterable[str], vnodes: int = RING_VNODES) -> dict[str, str]:
    """A plain consistent-hash ring: `vnodes` points per peer, weights ignored; a host goes to
    the first point at or after its own position."""
    if vnodes < 1:
        raise ValueError(f"a ring needs at least 1 virtual node per peer, not {vnodes}")
    owners = sorted(set(peer_ids))
    if not owners:
        return {}
    placed = list(hosts)
    steps = np.arange(1, vnodes + 1, dtype=np.uint64) * np.uint64(_GAMMA)
    points = _mix64(_peer_keys(owners)[:, None] + steps[None, :]).ravel()
    point_owner = np.repeat(np.arange(len(owners)), vnodes)
    order = np.argsort(points, kind="stable")
    points, point_owner = points[order], point_owner[order]
    at = np.searchsorted(points, _host_keys(placed), side="left") % len(points)
    return {host: owners[i] for host, i in zip(placed, point_owner[at], strict=True)}


# ---- bounded loads ----------------------------------------------------------------------


def capacities(peers: Mapping[str, float], total_demand: float, epsilon: float = DEFAULT_EPSILON) -> dict[str, float]:
    """cap_i = (1 + ε)·(w_i / W)·D for every peer."""
    _check_weights(peers)
    _check_epsilon(epsilon)
    total_weight = math.fsum(peers.values())
    return {peer: (1 + epsilon) * weight / total_weight * total_demand for peer, weight in peers.items()}


def rebalance(
    previous: Mapping[str, str],
    peers: Mapping[str, float],
    demand: Mapping[str, float],
    epsilon: float = DEFAULT_EPSILON,
    fair_first: bool = True,
    demand_floor: float = 0.0,
) -> Plan:
    """The next assignment of `demand`'s hosts to `peers`, moving as little as the caps allow."""
    _check_weights(peers)
    _check_demand(demand)
    _check_epsilon(epsilon)
    if not (math.isfinite(demand_floor) and demand_floor >= 0):
        raise ValueError(f"demand_floor is {demand_floor!r}; it must be a finite number >= 0")
    peer_ids = sorted(peers)
    index = {peer: i for i, peer in enumerate(peer_ids)}
    keys = _peer_keys(peer_ids)
    weights = np.array([peers[p] for p in peer_ids], dtype=np.float64)
    total_demand = max(math.fsum(demand.values()), demand_floor)
    cap_of = capacities(peers, total_demand, epsilon) if peers else {}
    caps = np.array([cap_of[p] for p in peer_ids], dtype=np.float64)
    shares = weights / math.fsum(weights) * total_demand if peers else caps
    limits = (shares, caps) if fair_first else (caps,)

    held = {host: index[peer] for host, peer in previous.items() if host in demand and peer in index}
    loads = _loads(held, demand, len(peer_ids))
    holding = set(held.values())
    _hand_over(held, loads, limits[0], demand, [i for i in range(len(peer_ids)) if i not in holding], keys, weights)
    emptied = _shed(held, loads, caps, demand)
    _hand_over(held, loads, limits[0], demand, emptied, keys, weights)
    # Shed hosts are no longer held, so they are placed again with the new ones.
    pending = sorted((h for h in demand if h not in held), key=lambda h: (-demand[h], h))
    placed, probes, unassigned = _place(pending, loads, limits, demand, keys, weights)
    held.update(placed)

    assignment = {host: peer_ids[i] for host, i in sorted(held.items())}
    moved = frozenset(h for h, p in assignment.items() if h in previous and previous[h] != p)
    final_loads = _loads(held, demand, len(peer_ids))
    return Plan(
        assignment=assignment,
        loads={p: float(final_loads[i]) for i, p in enumerate(peer_ids)},
        caps={p: float(caps[i]) for i, p in enumerate(peer_ids)},
        moved=moved,
        unassigned=frozenset(unassigned),
        probes=probes,
    )


def _hand_over(
    held: dict[str, int],
    loads: np.ndarray,
    limit: np.ndarray,
    demand: Mapping[str, float],
    idle: list[int],
    keys: np.ndarray,
    weights: np.ndarray,
) -> None:
    """Let idle peers take over their top-choice hosts until no peer is newly idle.

    A peer that gives up its last host is idle in turn. Each round asks only the newly idle: an
    idle peer that took nothing wants only hosts larger than its room, and that stays so. Every
    host moves at most once, to its top choice, so this ends. Settling it here rather than in
    the next call is what makes rebalancing unchanged inputs move nothing."""
    while idle and held:
        idle = _take_over(held, loads, limit, demand, idle, keys, weights)


def _take_over(
    held: dict[str, int],
    loads: np.ndarray,
    limit: np.ndarray,
    demand: Mapping[str, float],
    idle: list[int],
    keys: np.ndarray,
    weights: np.ndarray,
) -> list[int]:
    """Move to each idle peer the held hosts whose top choice it is, largest first, while its
    load stays within `limit`. Returns the peers this left holding nothing."""
    hosts = sorted(held)
    host_keys = _host_keys(hosts)
    current = np.fromiter((held[h] for h in hosts), dtype=np.intp, count=len(hosts))
    current_scores = _pair_scores(host_keys, keys[current], weights[current])
    rows_per_block = max(1, _CELLS // len(idle))
    idle_best = np.concatenate(
        [
            _table(host_keys[start : start + rows_per_block], keys[idle], weights[idle]).max(axis=1)
            for start in range(0, len(hosts), rows_per_block)
        ]
    )
    # An idle peer can be a host's top choice only if it beats the peer holding it: the few
    # hosts where one does are scored against every peer.
    challenged = np.flatnonzero(idle_best > current_scores)
    wanted: dict[int, list[str]] = {i: [] for i in idle}
    for start in range(0, len(challenged), _BLOCK):
        rows = challenged[start : start + _BLOCK]
        for row, top in zip(rows, _table(host_keys[rows], keys, weights).argmax(axis=1), strict=True):
            if int(top) in wanted:
                wanted[int(top)].append(hosts[row])
    counts = Counter(held.values())
    for taker, candidates in wanted.items():
        for host in sorted(candidates, key=lambda h: (-demand[h], h)):
            giver = held[host]
            if loads[taker] + demand[host] <= limit[taker]:
                loads[giver] -= demand[host]
                loads[taker] += demand[host]
                held[host] = taker
                counts[giver] -= 1
                counts[taker] += 1
    return sorted(p for p, n in counts.items() if n == 0 and p not in wanted)


def _shed(held: dict[str, int], loads: np.ndarray, caps: np.ndarray, demand: Mapping[str, float]) -> list[int]:
    """Take hosts off every peer over its cap, the least demand that brings each one back.
    Returns the peers left holding nothing."""
    over = {int(i) for i in np.flatnonzero(loads > caps * (1 + _SLACK))}
    if not over:
        return []
    on_peer: dict[int, list[str]] = {i: [] for i in over}
    for host, peer in held.items():
        if peer in over:
            on_peer[peer].append(host)
    emptied = []
    for peer in sorted(over):
        shed = _least_to_shed(on_peer[peer], demand, float(loads[peer] - caps[peer]))
        for host in shed:
            del held[host]
            loads[peer] -= demand[host]
        if len(shed) == len(on_peer[peer]):
            emptied.append(peer)
    return emptied


def _least_to_shed(hosts: list[str], demand: Mapping[str, float], excess: float) -> list[str]:
    """Hosts whose demands add up to at least `excess`, with a small sum: the smallest hosts
    first (pruned of any the others already cover), or one host alone if that moves less.
    Less demand moved is less work handed over, and small hosts are the easiest to place."""
    ascending = sorted(hosts, key=lambda h: (demand[h], h))
    chosen: list[str] = []
    total = 0.0
    for host in ascending:
        if total >= excess:
            break
        chosen.append(host)
        total += demand[host]
    for host in reversed(list(chosen)):
        if total - demand[host] >= excess:
            chosen.remove(host)
            total -= demand[host]
    sizes = [demand[h] for h in ascending]
    alone = bisect.bisect_left(sizes, excess)
    if alone < len(ascending) and sizes[alone] < total:
        return [ascending[alone]]
    return chosen


def _place(
    pending: list[str],
    loads: np.ndarray,
    limits: tuple[np.ndarray, ...],
    demand: Mapping[str, float],
    keys: np.ndarray,
    weights: np.ndarray,
) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """Each pending host, in the given order, to its highest-scoring peer within the first of
    `limits` that any peer can meet."""
    placed: dict[str, int] = {}
    probes: dict[str, int] = {}
    unassigned: list[str] = []
    if not len(keys):
        return placed, probes, list(pending)
    for start in range(0, len(pending), _BLOCK):
        block = pending[start : start + _BLOCK]
        for host, row in zip(block, _table(_host_keys(block), keys, weights), strict=True):
            size = demand[host]
            for limit in limits:
                room = loads + size <= limit
                if room.any():
                    break
            else:
                unassigned.append(host)
                continue
            peer = int(np.where(room, row, -np.inf).argmax())
            placed[host] = peer
            probes[host] = int(np.count_nonzero(row > row[peer])) + 1
            loads[peer] += size
    return placed, probes, unassigned


def _loads(held: Mapping[str, int], demand: Mapping[str, float], peers: int) -> np.ndarray:
    parts: list[list[float]] = [[] for _ in range(peers)]
    for host, peer in held.items():
        parts[peer].append(demand[host])
    return np.array([math.fsum(p) for p in parts], dtype=np.float64)


# ---- hashing ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 18)
def _host_key(host: str) -> int:
    return int.from_bytes(hashlib.blake2b(host.encode(), digest_size=8, person=_HOST_DOMAIN).digest(), "big")


@functools.lru_cache(maxsize=1 << 16)
def _peer_key(peer_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(peer_id.encode(), digest_size=8, person=_PEER_DOMAIN).digest(), "big")


def _host_keys(hosts: Sequence[str]) -> np.ndarray:
    return np.fromiter((_host_key(h) for h in hosts), dtype=np.uint64, count=len(hosts))


def _peer_keys(peer_ids: Sequence[str]) -> np.ndarray:
    return np.fromiter((_peer_key(p) for p in peer_ids), dtype=np.uint64, count=len(peer_ids))


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, in place on a fresh uint64 array (wrapping arithmetic)."""
    z ^= z >> np.uint64(30)
    z *= np.uint64(_M1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_M2)
    z ^= z >> np.uint64(31)
    return z


def _to_scores(mixed: np.ndarray, weights: np.ndarray) -> np.ndarray:
    u = (mixed >> np.uint64(11)).astype(np.float64)
    u += 0.5
    u *= 2.0**-53
    np.log(u, out=u)
    np.negative(u, out=u)
    return np.divide(weights, u, out=u)


def _table(host_keys: np.ndarray, peer_keys: np.ndarray, weights: np.ndarray) -> np.ndarray:
    z = np.bitwise_xor(host_keys[:, None], peer_keys[None, :])
    z += np.uint64(_GAMMA)
    return _to_scores(_mix64(z), weights[None, :])


def _pair_scores(host_keys: np.ndarray, peer_keys: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Scores of host_keys[k] against peer_keys[k], pair by pair."""
    z = np.bitwise_xor(host_keys, peer_keys)
    z += np.uint64(_GAMMA)
    return _to_scores(_mix64(z), weights)


# ---- input checks -----------------------------------------------------------------------


def _check_weights(peers: Mapping[str, float]) -> None:
    for peer, weight in peers.items():
        if not _positive(weight):
            raise ValueError(f"peer {peer} has weight {weight!r}; weights must be positive finite numbers")


def _check_demand(demand: Mapping[str, float]) -> None:
    for host, size in demand.items():
        if not _positive(size):
            raise ValueError(f"host {host} has demand {size!r}; demands must be positive finite numbers")


def _check_epsilon(epsilon: float) -> None:
    if not _positive(epsilon):
        raise ValueError(f"epsilon is {epsilon!r}; it must be a positive finite number (0.25 is the default)")


def _positive(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and float(value) > 0
