"""Fair-load simulation: the coordinator's bounded assignment, host pacing and unit sizing under
churn, side by side with the assignments it replaces.

    python -m bench.fair_load_sim [--peers 1000] [--hosts 100000] [--epsilon 0.25] [--steps 20]
                                  [--churn 0.005] [--seed 1] [--late-leavers 5] [--no-events]

About 70 s on 2 cores with the defaults (one core used).

The swarm: peer capacities (pages/s) are Pareto(α=1.5) with minimum 1; pages per host are
lognormal with median 20 and σ=1.5, at least 1 (the largest of 100,000 hosts has some 15,000
pages). Churn: in each of `--steps` steps a `--churn` share of the peers leaves and as many new
peers join (20 × 0.5% = 10% each way). All of it runs in virtual time; nothing sleeps.

Part 1, assignment. The real coordinator.assignment places every host (demand = its pages),
then follows the churn, a leave and a join per step, for four assignments:

- bounded HRW, fair share first: `rebalance`, the coordinator's default;
- bounded HRW, textbook rule: `rebalance(fair_first=False)`, highest score with room under the cap;
- unbounded weighted HRW (`hrw_assign`), anchor: followed incrementally, since a leave moves only
  the leaver's hosts and a join only the hosts whose top choice the joiner is;
- a plain consistent-hash ring (`ring_assign`, 100 virtual nodes per peer, weights ignored), anchor.

Utilisation u_i = load_i / ((w_i/W)·D). Printed: the worst max and p99 of u and the lowest
Jain's index of u over all steps; host demand moved by leaves and by joins over the ideal (for
peer i, w_i/W·D), summed over the run; mean probes (rank of the chosen peer in the host's
scores); the most hosts unassigned at any step; peers whose load was ever above
(1 + ε)·(w_i/W)·D.

Part 2, events (full size, default assignment only). One job of all the hosts runs to its end.
A peer of capacity w has ceil(w) slots, each fetching one host at w/ceil(w) pages/s (slower for
the 10% of hosts with a robots.txt crawl delay; 2% of hosts answer 429 now and then). A slot
leases a unit of a host its peer is assigned, sized by unit_sizing from the peer's observed
throughput; the coordinator grants only when host_pacing.may_lease allows, fences with
coordinator.leases, paces hosts with after_unit, and rebalances every 60 s during the churn,
every 300 s after it (demand: pages not yet reported; demand floor: W × the interval). Half of
the leaving peers crash: they stop at once and never report. The other half are cut off from
the coordinator: they fetch on until their unit ends or they have gone SELF_FENCE (1.5) renew
intervals without a renewal, then stop, and deliver a finished unit's report when they
reconnect, up to two minutes later. Leases of silent holders are taken back when they expire
or when unit_sizing.is_straggler says so, and other peers redo the units; fencing
(leases.judge_report) refuses a late report once its unit was granted again. Peers self-fence
as simulated (peer/unit_work.py stops a unit STOP_UNRENEWED renew intervals after its last
renewal), which the straggler rule's politeness argument needs. The churn falls in the first
20 minutes, while units are queued, so the straggler rule cannot fire then; `--late-leavers`
holders vanish the moment the job's last unit is leased, which is its case. In this job, though,
that moment finds one or two units in flight, just leased (the tail is the largest hosts'
sequential units), so lease expiry comes as early as the rule, which fires 0 times: with 60 s
leases renewed every 20 s it can beat expiry by at most 20 s, and only for a holder that had
renewed at least once. Counted against ground truth
(who is really fetching which host): politeness violations (a start while another peer fetches
the host, before the host's next_allowed_at, or within DEFAULT_MIN_DELAY of the last fetch);
pages lost and units reported twice; peers above their cap in any plan. The anchors are not run
through events: politeness and fencing do not depend on the assignment.

Targets at ε = 0.25 (default column): max u ≤ 1.25, Jain ≥ 0.97, moved ≤ 1.5 × ideal, and 0
politeness violations, peers over budget and lost or duplicated units.
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from coordinator import assignment, host_pacing, leases, unit_sizing
from coordinator.host_pacing import HostPace, UnitSummary
from coordinator.leases import UnitLease, UnitState, Verdict

OVER = 1 + 1e-9  # loads are float sums; see coordinator.assignment
METHODS = ("bounded, fair first", "bounded, textbook", "unbounded HRW", "ring")


# ---- the swarm and its churn ----------------------------------------------------------------


@dataclass(frozen=True)
class Swarm:
    weights: dict[str, float]  # peer id -> pages/s
    pages: dict[str, float]  # host -> pages
    churn: list[tuple[list[str], dict[str, float]]]  # per step: who leaves, who joins (weights)


def make_swarm(peers: int, hosts: int, steps: int, churn: float, seed: int) -> Swarm:
    rng = np.random.default_rng(seed)
    weights = {rng.bytes(8).hex(): float(w) for w in 1 + rng.pareto(1.5, peers)}
    sizes = np.maximum(1, np.rint(rng.lognormal(math.log(20), 1.5, hosts)))
    pages = {f"https://site{i:06d}.example:443": float(s) for i, s in enumerate(sizes)}
    per_step = max(1, round(churn * peers))
    members = sorted(weights)
    schedule = []
    for _ in range(steps):
        leaving = [members[i] for i in rng.choice(len(members), per_step, replace=False)]
        joining = {rng.bytes(8).hex(): float(w) for w in 1 + rng.pareto(1.5, per_step)}
        members = sorted((set(members) - set(leaving)) | set(joining))
        schedule.append((leaving, joining))
    return Swarm(weights, pages, schedule)


# ---- part 1: assignment metrics -------------------------------------------------------------


@dataclass
class Tally:
    max_u: float = 0.0
    p99_u: float = 0.0
    min_jain: float = 1.0
    moved: dict[str, float] = field(default_factory=lambda: {"leave": 0.0, "join": 0.0})
    ideal: dict[str, float] = field(default_factory=lambda: {"leave": 0.0, "join": 0.0})
    probes: list[int] = field(default_factory=list)
    unassigned: int = 0
    over_budget: set[str] = field(default_factory=set)
    seconds: float = 0.0

    def look(
        self, loads: Mapping[str, float], peers: Mapping[str, float], total: float, epsilon: float, unassigned: int
    ) -> None:
        ids = sorted(peers)
        weight = math.fsum(peers.values())
        share = np.array([peers[p] / weight * total for p in ids])
        load = np.array([loads.get(p, 0.0) for p in ids])
        u = load / share
        self.max_u = max(self.max_u, float(u.max()))
        self.p99_u = max(self.p99_u, float(np.percentile(u, 99)))
        self.min_jain = min(self.min_jain, float(u.sum() ** 2 / (len(u) * (u * u).sum())))
        self.over_budget |= {p for p, x, s in zip(ids, load, share, strict=True) if x > (1 + epsilon) * s * OVER}
        self.unassigned = max(self.unassigned, unassigned)

    def moved_ratio(self, kind: str | None = None) -> float:
        kinds = [kind] if kind else ["leave", "join"]
        return sum(self.moved[k] for k in kinds) / sum(self.ideal[k] for k in kinds)


def loads_of(chosen: Mapping[str, str], demand: Mapping[str, float]) -> dict[str, float]:
    loads: dict[str, float] = {}
    for host, peer in chosen.items():
        loads[peer] = loads.get(peer, 0.0) + demand[host]
    return loads


def moved_demand(before: Mapping[str, str], after: Mapping[str, str], demand: Mapping[str, float]) -> float:
    return math.fsum(demand[h] for h, p in before.items() if after.get(h, p) != p)


def follow(swarm: Swarm, epsilon: float, method: str) -> Tally:
    """Run one assignment through the initial placement and every churn step."""
    started = time.perf_counter()
    tally, demand, peers = Tally(), swarm.pages, dict(swarm.weights)
    total = math.fsum(demand.values())
    place = _placer(method, epsilon, demand, tally)
    chosen, unassigned = place({}, peers, "initial")
    tally.look(loads_of(chosen, demand), peers, total, epsilon, unassigned)
    for leaving, joining in swarm.churn:
        weight = math.fsum(peers.values())
        tally.ideal["leave"] += math.fsum(peers[p] for p in leaving) / weight * total
        peers = {p: w for p, w in peers.items() if p not in leaving}
        chosen, unassigned = place(chosen, peers, "leave")
        tally.look(loads_of(chosen, demand), peers, total, epsilon, unassigned)
        peers |= joining
        tally.ideal["join"] += math.fsum(joining.values()) / math.fsum(peers.values()) * total
        chosen, unassigned = place(chosen, peers, "join")
        tally.look(loads_of(chosen, demand), peers, total, epsilon, unassigned)
    tally.seconds = time.perf_counter() - started
    return tally


Placer = Callable[[Mapping[str, str], dict[str, float], str], tuple[dict[str, str], int]]


def _placer(method: str, epsilon: float, demand: Mapping[str, float], tally: Tally) -> Placer:
    """One step of `method`: (new assignment, hosts unassigned), counting moves into `tally`."""
    hosts = list(demand)

    def bounded(previous: Mapping[str, str], peers: dict[str, float], kind: str) -> tuple[dict[str, str], int]:
        plan = assignment.rebalance(previous, peers, demand, epsilon, fair_first=method == METHODS[0])
        if kind != "initial":
            tally.moved[kind] += math.fsum(demand[h] for h in plan.moved)
        tally.probes.extend(plan.probes.values())
        return dict(plan.assignment), len(plan.unassigned)

    def hrw(previous: Mapping[str, str], peers: dict[str, float], kind: str) -> tuple[dict[str, str], int]:
        if kind == "initial":
            return assignment.hrw_assign(hosts, peers), 0
        chosen = dict(previous)
        if kind == "leave":  # only the leavers' hosts have a new top choice
            orphans = [h for h, p in previous.items() if p not in peers]
            chosen.update(assignment.hrw_assign(orphans, peers))
        else:  # a host moves when a joiner outscores its current, top, peer
            joiners = sorted(set(peers) - set(previous.values()))
            table = assignment.score_table(hosts, joiners, [peers[j] for j in joiners])
            for host, row in zip(hosts, table, strict=True):
                best = int(row.argmax())
                if row[best] > assignment.score(host, previous[host], peers[previous[host]]):
                    chosen[host] = joiners[best]
        tally.moved[kind] += moved_demand(previous, chosen, demand)
        return chosen, 0

    def ring(previous: Mapping[str, str], peers: dict[str, float], kind: str) -> tuple[dict[str, str], int]:
        chosen = assignment.ring_assign(hosts, peers)
        if kind != "initial":
            tally.moved[kind] += moved_demand(previous, chosen, demand)
        return chosen, 0

    return {METHODS[0]: bounded, METHODS[1]: bounded, METHODS[2]: hrw, METHODS[3]: ring}[method]


# ---- part 2: events -------------------------------------------------------------------------

LEASE_SECONDS = 60.0
RENEW_INTERVAL = LEASE_SECONDS / 3  # as the peer agent renews
MAX_ATTEMPTS = 10
STEP_SECONDS = 60.0  # churn steps, each followed by a rebalance
LATER_INTERVAL = 300.0  # rebalances once the churn is over
MAX_VIRTUAL_SECONDS = 30 * 86400.0  # a job still running by then is stuck: its pages count as lost
SELF_FENCE = 1.5  # renew intervals without a renewal after which a peer stops fetching
RECONNECT_SECONDS = 120.0  # a cut-off peer delivers its report within this, uniformly
_READY, _FINISH, _CHECK, _REBALANCE, _LATE, _STOP, _LATE_REPORT = range(7)


@dataclass
class EventReport:
    makespan: float = 0.0
    units: int = 0
    violations: int = 0
    over_budget: set[str] = field(default_factory=set)
    lost_pages: float = 0.0
    duplicated_units: int = 0
    stale_reports: int = 0  # refused by fencing: cut-off peers whose units were granted again
    late_accepted: int = 0  # cut-off peers' reports merged: their leases were still current
    gave_up: int = 0
    taken_back: int = 0
    stragglers: int = 0
    rebalances: int = 0
    unassigned: int = 0
    seconds: float = 0.0


class _Unit:
    """A batch of one host's pages, and what the simulation knows of its current lease."""

    __slots__ = ("host", "pages", "lease", "leased_at", "expected", "renewed", "seconds", "summary", "accepted")

    def __init__(self, host: int, pages: int) -> None:
        self.host, self.pages = host, pages
        self.lease = UnitLease(UnitState.QUEUED)
        self.leased_at = self.expected = self.renewed = self.seconds = 0.0
        self.summary = UnitSummary()
        self.accepted = 0  # reports merged: must end at exactly 1


class _Peer:
    __slots__ = ("id", "weight", "speed", "free", "alive", "estimate", "ready", "units")

    def __init__(self, peer_id: str, weight: float) -> None:
        slots = math.ceil(weight)
        self.id, self.weight, self.speed, self.free = peer_id, weight, weight / slots, slots
        self.alive = True
        self.estimate: float | None = None  # pages/s of one slot, from its reports
        self.ready: deque[int] = deque()  # hosts that may be leasable
        self.units: set[int] = set()


class EventRun:
    """One job of every host, in virtual time, over the swarm and its churn."""

    def __init__(self, swarm: Swarm, epsilon: float, seed: int, late_leavers: int) -> None:
        self.swarm, self.epsilon, self.late_leavers = swarm, epsilon, late_leavers
        self.rng = np.random.default_rng(seed + 1)
        self.names = list(swarm.pages)
        n = len(self.names)
        self.total = [int(swarm.pages[h]) for h in self.names]
        self.unleased = list(self.total)
        self.done = [0] * n
        self.queued: list[list[int]] = [[] for _ in range(n)]
        self.owner: list[_Peer | None] = [None] * n
        self.pace = [HostPace() for _ in range(n)]
        self.live = [-1] * n  # the unit the coordinator holds a live lease for, or -1
        self.fetchers = [0] * n  # ground truth: peers fetching the host now
        self.last_fetch = [-math.inf] * n
        self.ready_at = [-1.0] * n
        draws = self.rng.random((n, 2))
        self.crawl_delay = [float(self.rng.uniform(2, 10)) if d < 0.1 else None for d in draws[:, 0]]
        self.throttle = [0.3 if d < 0.02 else 0.0 for d in draws[:, 1]]
        self.units: list[_Unit] = []
        self.queued_work = sum(self.total)  # pages not leased + units waiting to be leased again
        self.peers: dict[str, _Peer] = {}
        self.events: list[tuple[float, int, int, int, int, _Peer | None]] = []
        self.seq = 0
        self.report = EventReport()

    def run(self) -> EventReport:
        started = time.perf_counter()
        for peer_id, weight in self.swarm.weights.items():
            self.peers[peer_id] = _Peer(peer_id, weight)
        self._rebalance(0.0, STEP_SECONDS)
        self._push(STEP_SECONDS, _REBALANCE, 0, 0)
        remaining = sum(self.total)
        now = 0.0
        while self.events and remaining > 0 and now < MAX_VIRTUAL_SECONDS:
            now, _, kind, a, b, holder = heapq.heappop(self.events)
            if kind == _READY:
                if self.ready_at[a] == now:
                    self.ready_at[a] = -1.0
                peer = self.owner[a]
                if peer is not None and peer.alive:
                    peer.ready.append(a)
                    self._fill(peer, now)
            elif kind == _FINISH:
                assert holder is not None
                remaining -= self._finish(a, b, holder, now)
            elif kind == _CHECK:
                self._check(a, b, now)
            elif kind == _LATE:
                self._late_leave(a, now)
            elif kind == _STOP:
                self.fetchers[a] -= 1
                self.last_fetch[a] = now
            elif kind == _LATE_REPORT:
                assert holder is not None
                remaining -= self._late_report(a, b, holder, now)
            else:
                self._churn_and_rebalance(a, now)
        self.report.makespan = now
        self.report.units = len(self.units)
        self.report.lost_pages = sum(self.total) - sum(self.done)
        self.report.duplicated_units = sum(u.accepted > 1 for u in self.units)
        self.report.seconds = time.perf_counter() - started
        return self.report

    def _push(self, at: float, kind: int, a: int, b: int, holder: _Peer | None = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, a, b, holder))

    def _ready(self, host: int, at: float) -> None:
        """The host's owner will ask for it at `at`; `may_lease` decides then."""
        if self.ready_at[host] != at:
            self.ready_at[host] = at
            self._push(at, _READY, host, 0)

    def _has_work(self, host: int) -> bool:
        return self.unleased[host] > 0 or bool(self.queued[host])

    # -- the coordinator's side

    def _churn_and_rebalance(self, step: int, now: float) -> None:
        if step < len(self.swarm.churn):
            leaving, joining = self.swarm.churn[step]
            for peer_id in leaving:
                self._leave(self.peers.pop(peer_id), now, cut_off=self.rng.random() < 0.5)
            for peer_id, weight in joining.items():
                self.peers[peer_id] = _Peer(peer_id, weight)
        interval = STEP_SECONDS if step + 1 < len(self.swarm.churn) else LATER_INTERVAL
        self._rebalance(now, interval)
        self._push(now + interval, _REBALANCE, step + 1, 0)

    def _rebalance(self, now: float, interval: float) -> None:
        weights = {p.id: p.weight for p in self.peers.values()}
        demand, previous = {}, {}
        for host, name in enumerate(self.names):
            left = self.total[host] - self.done[host]
            if left > 0:
                demand[name] = float(left)
                holder = self.owner[host]
                if holder is not None:
                    previous[name] = holder.id
        plan = assignment.rebalance(
            previous, weights, demand, self.epsilon, demand_floor=math.fsum(weights.values()) * interval
        )
        self.report.rebalances += 1
        self.report.unassigned = max(self.report.unassigned, len(plan.unassigned))
        self.report.over_budget |= {p for p, load in plan.loads.items() if load > plan.caps[p] * OVER}
        for host, name in enumerate(self.names):
            new = self.peers[plan.assignment[name]] if name in plan.assignment else None
            if new is not self.owner[host]:
                self.owner[host] = new
                if new is not None and self._has_work(host):
                    self._ready(host, now)

    def _grant(self, peer: _Peer, host: int, now: float) -> None:
        if self.queued[host]:
            index = self.queued[host].pop()
            self.queued_work -= 1
        else:
            pages = min(unit_sizing.unit_size(peer.estimate), self.unleased[host])
            self.unleased[host] -= pages
            self.queued_work -= pages
            index = len(self.units)
            self.units.append(_Unit(host, pages))
        unit = self.units[index]
        # Ground truth, not the coordinator's view: is anybody at this host, or was just now?
        pace = self.pace[host]
        too_soon = now < pace.next_allowed_at or now < self.last_fetch[host] + host_pacing.DEFAULT_MIN_DELAY
        if self.fetchers[host] or too_soon:
            self.report.violations += 1
        if self.queued_work == 0 and self.late_leavers:
            self._push(now, _LATE, self.late_leavers, 0)  # the last unit is out: some holders vanish
            self.late_leavers = 0
        unit.lease = leases.grant(unit.lease, peer.id, now, LEASE_SECONDS, MAX_ATTEMPTS)
        if unit.lease.state is UnitState.DONE:
            self.report.gave_up += 1
            return
        unit.leased_at, unit.expected = now, unit_sizing.expected_seconds(unit.pages, peer.estimate)
        self.live[host] = index
        self.fetchers[host] += 1
        peer.free -= 1
        peer.units.add(index)
        delay = self.crawl_delay[host]
        unit.seconds = unit.pages * max(1 / peer.speed, delay or 0.0)
        unit.summary = UnitSummary(crawl_delay=delay)
        if self.throttle[host] and self.rng.random() < self.throttle[host]:
            unit.seconds += 10.0  # the egress waits out some 429s within the unit
            retry_after = 30.0 if self.rng.random() < 0.5 else None
            unit.summary = UnitSummary(throttled=3, retry_after=retry_after, crawl_delay=delay)
        self._push(now + unit.seconds, _FINISH, index, unit.lease.token, peer)

    def _finish(self, index: int, token: int, peer: _Peer, now: float) -> int:
        """A slot reports its unit; the pages newly done."""
        if not peer.alive:
            return 0  # it left mid-unit and never reports
        unit = self.units[index]
        host = unit.host
        newly = 0
        if leases.judge_report(unit.lease, peer.id, token) is Verdict.ACCEPT:
            unit.lease = leases.completed(unit.lease)
            unit.accepted += 1
            self.done[host] += unit.pages
            newly = unit.pages
        else:
            self.report.stale_reports += 1
        self.live[host], self.last_fetch[host] = -1, now
        self.fetchers[host] -= 1
        self.pace[host] = host_pacing.after_unit(self.pace[host], now, unit.summary)
        peer.estimate = unit_sizing.observe(peer.estimate, unit.pages, unit.seconds)
        peer.free += 1
        peer.units.discard(index)
        if self._has_work(host):
            self._ready(host, now)
        self._fill(peer, now)
        return newly

    def _leave(self, peer: _Peer, now: float, cut_off: bool) -> None:
        """The peer is gone for the coordinator: it renews nothing from `now` on. A crashed peer
        stops at once and never reports. A cut-off one (its network to the coordinator is down)
        fetches on until its unit ends or it has missed SELF_FENCE renewals, whichever is first,
        and delivers the report of a finished unit when it reconnects."""
        peer.alive = False
        for index in peer.units:
            unit = self.units[index]
            # What the coordinator saw: renewals every RENEW_INTERVAL until the peer vanished.
            unit.renewed = unit.leased_at + RENEW_INTERVAL * math.floor((now - unit.leased_at) / RENEW_INTERVAL)
            if unit.renewed > unit.leased_at:
                unit.lease = leases.renewed(unit.lease, unit.renewed, LEASE_SECONDS)
            ends = unit.leased_at + unit.seconds
            stops = min(ends, unit.renewed + SELF_FENCE * RENEW_INTERVAL) if cut_off else now
            self._push(max(stops, now), _STOP, unit.host, 0)
            if cut_off and ends <= stops:
                reconnect = now + float(self.rng.uniform(0, RECONNECT_SECONDS))
                self._push(max(ends, reconnect), _LATE_REPORT, index, unit.lease.token, peer)
            overdue_from = unit.leased_at + max(
                unit_sizing.STRAGGLER_FACTOR * unit.expected, unit_sizing.MIN_STRAGGLER_SECONDS
            )
            silent_from = unit.renewed + unit_sizing.MISSED_RENEWALS * RENEW_INTERVAL
            self._push(math.nextafter(max(overdue_from, silent_from), math.inf), _CHECK, index, unit.lease.token)
            assert unit.lease.expires_at is not None
            self._push(unit.lease.expires_at, _CHECK, index, unit.lease.token)
        peer.units.clear()

    def _late_report(self, index: int, token: int, peer: _Peer, now: float) -> int:
        """A cut-off peer's report arrives; fencing decides. The pages newly done."""
        unit = self.units[index]
        host = unit.host
        verdict = leases.judge_report(unit.lease, peer.id, token)
        if verdict is not Verdict.ACCEPT:
            self.report.stale_reports += 1
            return 0
        # Its lease was still current (maybe expired, but not granted again): merge it.
        unit.lease = leases.completed(unit.lease)
        unit.accepted += 1
        self.done[host] += unit.pages
        self.report.late_accepted += 1
        if index in self.queued[host]:  # taken back, not yet granted again
            self.queued[host].remove(index)
            self.queued_work -= 1
        if self.live[host] == index:
            self.live[host] = -1
            self.pace[host] = host_pacing.after_unit(self.pace[host], now, unit.summary)
        if self._has_work(host):
            self._ready(host, now)
        return unit.pages

    def _check(self, index: int, token: int, now: float) -> None:
        """Is a silent holder's lease to be taken back yet?"""
        unit = self.units[index]
        host = unit.host
        if unit.lease.state is not UnitState.LEASED or unit.lease.token != token or self.live[host] != index:
            return  # reported, re-leased, or already taken back
        if not leases.is_eligible(unit.lease, now):
            if not unit_sizing.is_straggler(
                unit.leased_at, unit.expected, now, self.queued_work > 0, unit.renewed, RENEW_INTERVAL
            ):
                return
            unit.lease = leases.released(unit.lease)
            self.report.stragglers += 1
        self.report.taken_back += 1
        self.live[host] = -1
        self.queued[host].append(index)
        self.queued_work += 1
        self.pace[host] = host_pacing.after_abandoned(self.pace[host], now)
        owner = self.owner[host]
        if owner is None or not owner.alive:
            self._rebalance(now, LATER_INTERVAL)  # the coordinator notices the silent peer
        self._ready(host, now)

    def _late_leave(self, count: int, now: float) -> None:
        """Holders of running units vanish after the job's last unit was leased: with nothing
        queued, their units are what the straggler rule is for."""
        holders = sorted((p for p in self.peers.values() if p.units), key=lambda p: p.id)
        for i in sorted(self.rng.choice(len(holders), min(count, len(holders)), replace=False)):
            self._leave(self.peers.pop(holders[i].id), now, cut_off=self.rng.random() < 0.5)

    # -- the peer's side

    def _fill(self, peer: _Peer, now: float) -> None:
        """Lease units for the peer's free slots from the hosts it holds that may be leased."""
        while peer.free > 0 and peer.ready:
            host = peer.ready.popleft()
            if self.owner[host] is not peer or not self._has_work(host):
                continue
            if host_pacing.may_lease(self.pace[host], now, 1 if self.live[host] >= 0 else 0):
                self._grant(peer, host, now)
            elif self.live[host] < 0:
                self._ready(host, self.pace[host].next_allowed_at)  # paced: ask again then
            # else: leased elsewhere; the report or the take-back makes it ready again


# ---- the table ------------------------------------------------------------------------------


def _row(name: str, values: list[str], target: str, verdict: str) -> str:
    return f"{name:<30}" + "".join(f"{v:>21}" for v in values) + f"{target:>10}  {verdict}"


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--epsilon", type=float, default=assignment.DEFAULT_EPSILON)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--churn", type=float, default=0.005, help="share of peers leaving (and joining) per step")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--late-leavers", type=int, default=5, help="holders that vanish once the job's last unit is leased (part 2)"
    )
    parser.add_argument("--no-events", action="store_true", help="skip part 2, the event simulation")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    swarm = make_swarm(args.peers, args.hosts, args.steps, args.churn, args.seed)
    total = math.fsum(swarm.pages.values())
    print(
        f"{args.peers} peers (Pareto 1.5, W = {math.fsum(swarm.weights.values()):.0f} pages/s), {args.hosts} hosts "
        f"({total:.0f} pages, largest {max(swarm.pages.values()):.0f}), epsilon {args.epsilon}, "
        f"{args.steps} steps of {args.churn:.1%} leaving + {args.churn:.1%} joining, seed {args.seed}"
    )
    tallies = [follow(swarm, args.epsilon, method) for method in METHODS]
    events = None if args.no_events else EventRun(swarm, args.epsilon, args.seed, args.late_leavers).run()

    eps = args.epsilon
    main_tally = tallies[0]
    print(_row("", list(METHODS), "target", "(first column)"))
    print(
        _row(
            "max u (worst step)",
            [f"{t.max_u:.3f}" for t in tallies],
            f"<= {1 + eps:.2f}",
            _verdict(main_tally.max_u <= (1 + eps) * OVER),
        )
    )
    print(_row("p99 u (worst step)", [f"{t.p99_u:.3f}" for t in tallies], "", ""))
    print(
        _row(
            "Jain's index of u (lowest)",
            [f"{t.min_jain:.4f}" for t in tallies],
            ">= 0.97",
            _verdict(main_tally.min_jain >= 0.97),
        )
    )
    print(_row("moved / ideal, leaves", [f"{t.moved_ratio('leave'):.2f}x" for t in tallies], "", ""))
    print(_row("moved / ideal, joins", [f"{t.moved_ratio('join'):.2f}x" for t in tallies], "", ""))
    print(
        _row(
            "moved / ideal, all churn",
            [f"{t.moved_ratio():.2f}x" for t in tallies],
            "<= 1.5x",
            _verdict(main_tally.moved_ratio() <= 1.5),
        )
    )
    print(
        _row(
            "mean probes per placed host",
            [f"{np.mean(t.probes):.2f}" if t.probes else "1 (top)" for t in tallies],
            "",
            "",
        )
    )
    print(_row("unassigned hosts (most)", [str(t.unassigned) for t in tallies], "", ""))
    print(
        _row(
            "peers over budget (ever)",
            [str(len(t.over_budget)) for t in tallies],
            "0",
            _verdict(not main_tally.over_budget),
        )
    )
    print(_row("assignment seconds", [f"{t.seconds:.1f}" for t in tallies], "", ""))
    if events is not None:
        na = ["n/a"] * (len(METHODS) - 1)
        print(
            _row(
                "events: peers over budget", [str(len(events.over_budget)), *na], "0", _verdict(not events.over_budget)
            )
        )
        print(_row("politeness violations", [str(events.violations), *na], "0", _verdict(events.violations == 0)))
        lost = f"{events.lost_pages:.0f} / {events.duplicated_units}"
        print(
            _row(
                "lost pages / duplicated units",
                [lost, *na],
                "0 / 0",
                _verdict(events.lost_pages == 0 and events.duplicated_units == 0 and events.gave_up == 0),
            )
        )
        print(
            f"events: job done at {events.makespan:.0f} virtual s, {events.units} units, {events.rebalances} "
            f"rebalances, {events.taken_back} leases taken back from departed peers ({events.stragglers} by the "
            f"straggler rule), {events.late_accepted} late reports merged and {events.stale_reports} refused by "
            f"fencing, {events.gave_up} units given up, most "
            f"unassigned {events.unassigned}; {events.seconds:.1f} s"
        )
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
