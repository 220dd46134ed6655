"""Trust simulation: the coordinator's trust rules (`coordinator.reputation`,
`coordinator.verdicts`, the crawl-delay rule of `coordinator.host_pacing`) driven in virtual time
by a swarm where most kinds of peer lie, side by side with an anchor run without verification.

    python -m bench.trust_sim [--items 10000000] [--peers 1000] [--networks 50] [--seed 1]
                              [--churn 0.0005] [--sybil 100] [--drain 60] [--known 1]
                              [--known-timeouts-wrong] [--rule NAME=VALUE ...]

About 40 s of one core for the defaults.

The swarm: `--peers` keys in `--networks` networks (/16s), 10% of each kind of liar, the rest
honest. Claimed capacities (bytes/s) are lognormal, median 2 MB/s. Honest peers answer the truth
but time out on 0.5% of reachable items. Liars:
- fabricated ok / fabricated broken: answer "ok" / "broken" to everything, without fetching;
- inflated capacity: honest answers, claims 1e15 bytes/s;
- injected links: honest verdicts, adds 10,000 made-up links to every page it reports;
- forged version: every report names a bundle version it was not leased (refused);
- huge crawl delay: honest verdicts, reports a robots.txt Crawl-delay of 1e300 s.

Items are URLs on websites: ok 95%, broken 4%, region-dependent 1% (unreachable from 3 random
networks, ok elsewhere). A unit is 50 items of one website (10 units a website) plus one planted
known answer (half ok, half broken; peers cannot tell it apart; one the key timed out on is not
counted, unless `--known-timeouts-wrong`). Virtual time runs in one-minute
ticks; each tick the coordinator leases one unit per online key, each to a key drawn in
proportion to `reputation.weight(claimed, record, observed)` (refreshed every tick, and at once
when a key is quarantined), `observed` being what the key was seen to do: every answer it gave
(first, second look, known answer) counted as an accepted item at the end of its tick
(`reputation.observed_after`). At this load a key does about a unit a tick (under 1 item/s),
far below what any key's real capacity allows, so what it is seen doing is what it was given. Each item's first answer goes through `verdicts.needs_second_look` with the
key's `recheck_share`; further answers come from a key of `verdicts.next_network` (networks
offered in a random order weighted by what their keys weigh), drawn by weight in that network,
until `verdicts.settle` returns; `reputation.after_check` is applied to agreed and outvoted
keys, `after_known_answer` to the planted items (one more for every 50 second looks a key
answers: those come in units too), `after_misreport` to each refused report (a forged-version
key drawn for a second look counts as a refused report of its own). When a key is
quarantined, every item it answered is settled again without the answers of quarantined keys:
the remaining answers, plus new ones until `settle` returns (redo fetches). Churn: each tick a `--churn` share of online keys leaves
and as many new keys join with the same mix; at a third of the run a Sybil wave of `--sybil`
fresh keys, all liars claiming 1e15, joins from 5 networks of their own. After the last item
settled, `--drain` more minutes of work on other items (not counted) let quarantines go on
correcting the counted items' verdicts.

Counted: fetches (every answer charged to a budget, whether or not a liar really fetched);
wrong final verdicts when the last item settled and `--drain` minutes later (final value !=
truth; a region-dependent item's truth is "ok"), split into lies (a lying key's answer among the
item's) and honest timeouts (flaky or down networks only);
time to quarantine per kind; the share of first answers each kind captured against its fair
share (its share of the online keys' real capacity, tick by tick); junk links kept under the
per-page cap; the host time (units plus the pauses `host_pacing.after_unit` imposes between
them, with a unit taking 50 s) against the same host fed only honest reports.

The anchor: no replication, no known answers, every report taken at its word: each item fetched
once by a key drawn in proportion to its real capacity (the inflated keys' claims, taken at
their word, would hand them practically all the work: shown on its own row), links uncapped,
a crawl delay as the last peer reported it capped at `MAX_CRAWL_DELAY` (the pre-issue rule).

Not modelled: real capacity limits and lease timing (weights decide shares, not throughput),
the bounded HRW assignment of websites to keys (each unit is drawn afresh: pessimistic for the
crawl-delay rule, which then sees more distinct keys a website), liars that adapt (answer
honestly until trusted, lie only on non-planted items, coordinate), junk links becoming new
items, budgets.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from array import array

from bench.trust_swarm import (
    BROKEN,
    DELAY,
    FAB_BROKEN,
    FAB_OK,
    HONEST,
    INFLATED,
    KIND_SHARE,
    LIARS,
    LINKS,
    OK,
    REGION,
    TIMEOUT,
    VALUES,
    VERSION,
    Draw,
    Peer,
)
from coordinator import host_pacing, reputation, verdicts
from coordinator.host_pacing import HostPace, UnitSummary
from coordinator.reputation import PeerRecord, Standing
from coordinator.verdicts import Answer
from workloads.linkcheck.check import MAX_LINKS_PER_PAGE

FLAKY = 0.005  # honest timeouts on reachable items
DOWN_NETWORKS = 3  # networks a region-dependent item is down from
INJECTED = 10_000  # links an injecting liar adds to each page
TICK = 60.0  # virtual seconds
UNIT_SECONDS = 50.0  # a unit's fetching, for host time
UNITS_PER_HOST = 10
SYBIL_NETWORKS = 5
ORDERS = 64  # network orders drawn each tick for second looks


class Sim:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.arng = random.Random(args.seed + 1)  # the anchor's
        self.n: int = args.items  # counted; the drain's items come after them
        self.size = self.n + args.drain * int(args.peers * 1.2 + args.sybil) * args.unit
        self.truth = bytearray(self.size)
        self.final = bytearray(self.size)
        self.down: dict[int, tuple[int, ...]] = {}
        self.single_by = array("i", [-1]) * self.size  # the key whose lone answer settled it, else -1
        self.multi: dict[int, tuple[int, ...]] = {}  # item -> its answers, packed peer * 4 + value
        self.peers: list[Peer] = []
        self.tick = 0
        self.next_item = 0
        self.units_leased = 0
        self.fetch = dict.fromkeys(("first", "second look", "known answers", "refused reports", "redo"), 0)
        self.outvoted_by_timeouts = 0  # keys that reached the website, outvoted by two that did not
        self.anchor_wrong = [0, 0]  # lies, honest timeouts
        self.first_by_kind = dict.fromkeys((HONEST, *LIARS), 0)
        self.fair_by_kind = dict.fromkeys((HONEST, *LIARS), 0.0)
        self.wave_first = self.after_wave_first = 0
        self.wave_fair = 0.0
        self.inflated_tail = [0, 0]  # first answers by inflated keys, all, in the run's last tenth
        self.links_kept = self.links_pages = 0
        self.left_unquarantined = dict.fromkeys(LIARS, 0)
        self.host = -1
        self.true_delay = 0.0
        self.pace = [HostPace(), HostPace()]
        self.wave_tick = -1
        self.ticks = 0  # until the last counted item settled
        self.wrong_at_end = (0, 0)
        self.draw = self.anchor_draw = Draw([], [])
        self.by_net: dict[str, Draw] = {}
        self.host_time = [0.0, 0.0, 0.0]  # with the rule, honest reports only, anchor
        self.worst_host = 1.0
        self.network_order: list[list[str]] = []
        for _ in range(args.peers):
            self._join(self._kind(), self.rng.randrange(args.networks))

    # ---- the swarm ---------------------------------------------------------------------------

    def _kind(self) -> str:
        draw = self.rng.random()
        return LIARS[int(draw / KIND_SHARE)] if draw < KIND_SHARE * len(LIARS) else HONEST

    def _join(self, kind: str, network: int, wave: bool = False) -> Peer:
        real = 2e6 * math.exp(self.rng.gauss(0.0, 1.0))
        claimed = 1e15 if kind == INFLATED or wave else real
        peer = Peer(len(self.peers), kind, network, claimed, real, self.tick, wave)
        self.peers.append(peer)
        return peer

    def _churn(self) -> None:
        online = [p for p in self.peers if p.online]
        leaving = [p for p in online if self.rng.random() < self.args.churn]
        for peer in leaving:
            peer.online = False
            if peer.kind != HONEST and peer.quarantined_at is None:
                self.left_unquarantined[peer.kind] += 1
        for _ in leaving:
            self._join(self._kind(), self.rng.randrange(self.args.networks))
        if self.tick == self.wave_tick:
            for k in range(self.args.sybil):
                self._join(LIARS[k % len(LIARS)], self.args.networks + k % SYBIL_NETWORKS, wave=True)

    def _refresh(self) -> None:
        """Weights as the coordinator sees them, by network too; quarantined keys weigh 0."""
        online = [p for p in self.peers if p.online]
        now = self.tick * TICK
        for peer in online:
            peer.seen = reputation.observed_after(peer.seen, peer.answers - peer.folded, now)
            peer.folded = peer.answers
        weights = [reputation.weight(p.claimed, p.record, reputation.observed_rate(p.seen, now)) for p in online]
        self.draw = Draw.of(online, weights)
        by_net: dict[int, list[tuple[Peer, float]]] = {}
        for peer, w in zip(online, weights, strict=True):
            by_net.setdefault(peer.network, []).append((peer, w))
        self.by_net = {f"net-{n}": Draw.of([p for p, _ in pw], [w for _, w in pw]) for n, pw in by_net.items()}
        # The order networks are offered to `next_network` in: random, weighted by what each
        # network's keys weigh (Efraimidis-Spirakis keys), so a network of fresh keys is seldom first.
        totals = {name: d.cum[-1] for name, d in self.by_net.items() if d.cum}
        self.network_order = [
            sorted(totals, key=lambda name: -(self.rng.random() ** (1.0 / totals[name]))) for _ in range(ORDERS)
        ]

    # ---- answers -----------------------------------------------------------------------------

    def _answer(self, peer: Peer, item: int, rng: random.Random) -> int:
        kind = peer.kind
        if kind == FAB_OK:
            return OK
        if kind == FAB_BROKEN:
            return BROKEN
        truth = self.truth[item]
        if truth == REGION:
            if peer.network in self.down[item]:
                return TIMEOUT
            truth = OK
        return TIMEOUT if rng.random() < FLAKY else truth

    def _other(self, answers: list[Answer], item: int) -> Peer:
        """A key for one more answer: of a network not heard yet, drawn by weight there."""
        rng = self.rng
        while True:
            order = self.network_order[rng.randrange(len(self.network_order))]
            net = verdicts.next_network(answers, order)
            peer = self.by_net[net].pick(rng) if net is not None else self.draw.pick(rng)
            if peer is None or peer.quarantined_at is not None or any(a.peer == str(peer.id) for a in answers):
                continue
            if peer.kind == VERSION:  # its report names another version: refused, ask again
                self._count("refused reports", 1, item)
                peer.units += 1
                self._record(peer, reputation.after_misreport(peer.record))
                continue
            return peer

    def _resolve(self, item: int, answers: list[Answer], sampled: bool, kind: str) -> None:
        """Ask for answers until `verdicts.settle` returns, then keep the result."""
        settled = verdicts.settle(answers, sampled)
        while settled is None:
            peer = self._other(answers, item)
            peer.answers += 1
            self._count(kind, 1, item)
            answers.append(peer.cache[self._answer(peer, item, self.rng)])
            peer.looks += 1  # second looks come in units of their own, with known answers too
            settled = verdicts.settle(answers)
        self.final[item] = VALUES.index(str(settled.value))
        if len(answers) == 1:
            self.single_by[item] = int(answers[0].peer)
            self.multi.pop(item, None)
        else:
            self.single_by[item] = -1
            self.multi[item] = tuple(int(a.peer) * 4 + VALUES.index(str(a.value)) for a in answers)
            for name in settled.agreed:
                peer = self.peers[int(name)]
                peer.record = reputation.after_check(peer.record, True)
            if settled.value == VALUES[TIMEOUT]:
                self.outvoted_by_timeouts += len(settled.outvoted)
            for name in settled.outvoted:
                peer = self.peers[int(name)]
                peer.record = reputation.after_check(peer.record, False)
        for answer in answers:
            peer = self.peers[int(answer.peer)]
            peer.items.append(item)
            if peer.looks >= self.args.unit:  # after the item is on its list: a quarantine redoes it
                peer.looks = 0
                self._plant(peer, self._known(peer), item)

    def _known(self, peer: Peer) -> int:
        """Known answers planted in the key's next unit: `--known`, else the rule's."""
        return reputation.known_answers(peer.record) if self.args.known is None else self.args.known

    def _count(self, kind: str, fetches: int, item: int) -> None:
        if item < self.n:  # fetches for the drain's items are not counted
            self.fetch[kind] += fetches

    def _plant(self, peer: Peer, count: int, item: int) -> None:
        """Known answers among its work: reachable from everywhere, so wrong only if it lies
        (or, honest, times out)."""
        self._count("known answers", count, item)
        for _ in range(count):
            planted = OK if self.rng.random() < 0.5 else BROKEN
            if peer.kind == FAB_OK or peer.kind == FAB_BROKEN:
                value = OK if peer.kind == FAB_OK else BROKEN
            else:
                value = TIMEOUT if self.rng.random() < FLAKY else planted
            if value == TIMEOUT and not self.args.known_timeouts_wrong:
                continue  # it did not reach the website: no evidence either way
            self._record(peer, reputation.after_known_answer(peer.record, value == planted))

    def _record(self, peer: Peer, record: PeerRecord) -> None:
        peer.record = record
        if record.quarantined is not None and peer.quarantined_at is None:
            self._quarantine(peer)

    def _quarantine(self, peer: Peer) -> None:
        """No more websites for it; every item it answered is settled again without it."""
        peer.quarantined_at = self.tick
        self._refresh()
        items, peer.items = peer.items, array("i")
        for item in items:
            if self.single_by[item] == peer.id:
                answers: list[Answer] = []
            elif any(packed // 4 == peer.id for packed in self.multi.get(item, ())):
                answers = [
                    self.peers[packed // 4].cache[packed % 4]
                    for packed in self.multi[item]
                    if self.peers[packed // 4].quarantined_at is None
                ]
            else:
                continue  # settled again since, without it
            if not answers:
                first = self._other(answers, item)
                first.answers += 1
                self._count("redo", 1, item)
                answers.append(first.cache[self._answer(first, item, self.rng)])
            self._resolve(item, answers, True, "redo")

    # ---- units -------------------------------------------------------------------------------

    def _unit(self, peer: Peer) -> bool:
        """One unit leased to `peer`; False when its report was refused (the unit goes back)."""
        rng, args = self.rng, self.args
        start = self.next_item
        end = min(start + args.unit, self.n if start < self.n else self.size)
        counted = start < self.n
        peer.units += 1
        known = self._known(peer)
        if peer.kind == VERSION:
            self._count("refused reports", end - start + known, start)
            self._record(peer, reputation.after_misreport(peer.record))
            return False
        if counted:
            self.units_leased += 1
            self._pace(peer)
        share = reputation.recheck_share(peer.record)
        needs, settle, cache = verdicts.needs_second_look, verdicts.settle, peer.cache
        truth, final, single_by, items = self.truth, self.final, self.single_by, peer.items
        networks = self.args.networks
        for item in range(start, end):
            draw = rng.random()
            if draw >= 0.05:
                truth[item] = OK
            elif draw >= 0.01:
                truth[item] = BROKEN
            else:
                truth[item] = REGION
                self.down[item] = tuple(rng.sample(range(networks), DOWN_NETWORKS))
            value = self._answer(peer, item, rng)
            answer = cache[value]
            if needs(answer, share, rng.random()):
                self._resolve(item, [answer], True, "second look")
                continue
            settle([answer])  # SINGLE: final on its one answer
            final[item] = value
            single_by[item] = peer.id
            items.append(item)
        peer.answers += end - start + known
        self._count("first", end - start, start)
        self._plant(peer, known, start)
        self.next_item = end
        if not counted:
            return True
        if peer.kind == LINKS:
            self.links_kept += (end - start) * min(INJECTED, MAX_LINKS_PER_PAGE)
            self.links_pages += end - start
        self.first_by_kind[peer.kind] += end - start
        if peer.wave:
            self.wave_first += end - start
        if self.tick >= self.wave_tick:
            self.after_wave_first += end - start
        if start >= self.n * 9 // 10:
            self.inflated_tail[0] += (end - start) * (peer.kind == INFLATED)
            self.inflated_tail[1] += end - start
        self._anchor(start, end)
        return True

    def _anchor(self, start: int, end: int) -> None:
        """The same items, once each, by a key drawn by real capacity, every answer believed."""
        peer = self.anchor_draw.pick(self.arng)
        assert peer is not None
        for item in range(start, end):
            if self._answer(peer, item, self.arng) != (self.truth[item] if self.truth[item] != REGION else OK):
                self.anchor_wrong[peer.kind not in (FAB_OK, FAB_BROKEN)] += 1

    def _pace(self, peer: Peer) -> None:
        """Host time of the unit's website: with the rule, with honest reports only, anchor."""
        host = self.units_leased // UNITS_PER_HOST
        if host != self.host:
            if self.host >= 0:
                self.worst_host = max(self.worst_host, self.pace[0].next_allowed_at / self.pace[1].next_allowed_at)
            self.host = host
            self.true_delay = float(self.rng.randint(1, 10)) if self.rng.random() < 0.1 else 0.0
            self.pace = [HostPace(), HostPace()]
        seen = 1e300 if peer.kind == DELAY else self.true_delay
        for k, said in enumerate((seen, self.true_delay)):
            pace = self.pace[k]
            finished = pace.next_allowed_at + UNIT_SECONDS
            after = host_pacing.after_unit(pace, finished, UnitSummary(crawl_delay=said), peer=str(peer.id))
            self.host_time[k] += after.next_allowed_at - pace.next_allowed_at
            self.pace[k] = after
        wait = max(host_pacing.DEFAULT_MIN_DELAY, min(seen, host_pacing.MAX_CRAWL_DELAY))
        self.host_time[2] += UNIT_SECONDS + wait

    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> None:
        ticks = math.ceil(self.n / self.args.unit / self.args.peers)
        self.wave_tick = ticks // 3 if self.args.sybil else -1
        while self.next_item < self.size and (not self.ticks or self.tick < self.ticks + self.args.drain):
            self._churn()
            self._refresh()
            online = [p for p in self.peers if p.online]
            self.anchor_draw = Draw.of(online, [p.real for p in online])
            total_real = sum(p.real for p in online)
            leased = 0
            for _ in range(len(online)):
                if self.next_item >= self.size:
                    break
                peer = self.draw.pick(self.rng)
                if peer is None or peer.quarantined_at is not None:
                    continue
                if self._unit(peer):
                    leased += 1
            if self.next_item >= self.n and not self.ticks:
                self.ticks = self.tick + 1
                self.wrong_at_end = self.wrong()
            if self.ticks:
                leased = 0
            for kind in self.fair_by_kind:
                share = sum(p.real for p in online if p.kind == kind) / total_real
                self.fair_by_kind[kind] += share * leased * self.args.unit
            if self.tick >= self.wave_tick >= 0:
                self.wave_fair += sum(p.real for p in online if p.wave) / total_real * leased * self.args.unit
            self.tick += 1

    def wrong(self) -> tuple[int, int]:
        """Wrong final verdicts among the counted items: with a lying key's answer among its
        answers, and with honest answers only (timeouts from two networks)."""
        lies = honest = 0
        truth, final, single_by, peers = self.truth, self.final, self.single_by, self.peers
        for item in range(self.n):
            if final[item] == (truth[item] if truth[item] != REGION else OK):
                continue
            by = single_by[item]
            keys = [by] if by >= 0 else [packed // 4 for packed in self.multi[item]]
            if any(peers[k].kind in (FAB_OK, FAB_BROKEN) for k in keys):
                lies += 1
            else:
                honest += 1
        return lies, honest


# ---- the report ------------------------------------------------------------------------------


def _minutes(values: list[float]) -> str:
    if not values:
        return "never"
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
    return f"{statistics.median(values):.0f} / {p95:.0f} / {values[-1]:.0f}"


def report(sim: Sim, wall: float) -> list[tuple[str, str, str]]:
    n = sim.n
    lies, honest = sim.wrong_at_end
    after_lies, after_honest = sim.wrong()
    fetches = sum(sim.fetch.values())
    keys = [p for p in sim.peers if p.joined < sim.ticks]
    rows = [
        ("items / minutes / keys", f"{n:,} / {sim.ticks} / {len(keys):,}", f"{n:,}"),
        (
            "wrong final verdicts: lies / honest timeouts",
            f"{lies:,} / {honest:,}",
            f"{sim.anchor_wrong[0]:,} / {sim.anchor_wrong[1]:,}",
        ),
        (f"  the same {sim.args.drain} minutes later", f"{after_lies:,} / {after_honest:,}", ""),
        ("fetches", f"{fetches:,}", f"{n:,}"),
        ("extra fetches over no replication", f"{(fetches / n - 1) * 100:+.2f}%", "+0.00%"),
    ]
    for what, count in sim.fetch.items():
        rows.append((f"  {what}", f"{count / n * 100:.2f}%", ""))
    for kind in LIARS:
        kind_keys = [p for p in keys if p.kind == kind]
        caught = [p for p in kind_keys if p.quarantined_at is not None]
        rows.append(
            (
                f"{kind}: quarantined / keys (left before)",
                f"{len(caught)} / {len(kind_keys)} ({sim.left_unquarantined[kind]})",
                f"0 / {len(kind_keys)}",
            )
        )
        if caught:
            minutes = [float(p.quarantined_at - p.joined) * TICK / 60 for p in caught if p.quarantined_at is not None]
            rows.append(("  minutes to quarantine, median / p95 / max", _minutes(minutes), "never"))
            units = [float(p.units) for p in caught]
            rows.append(
                ("  units to quarantine, median / max", f"{statistics.median(units):.0f} / {max(units):.0f}", "")
            )
    honest_caught = sum(
        1 for p in sim.peers if p.kind in (HONEST, INFLATED, LINKS, DELAY) and p.quarantined_at is not None
    )
    suspects = sum(1 for p in sim.peers if p.kind == HONEST and reputation.standing(p.record) is Standing.SUSPECT)
    rows.append(("honest-answering keys quarantined / honest suspect", f"{honest_caught} / {suspects}", ""))
    rows.append(("keys that reached a website, outvoted by timeouts", f"{sim.outvoted_by_timeouts:,}", ""))
    first = sum(sim.first_by_kind.values())
    for kind in (INFLATED, FAB_OK, FAB_BROKEN):
        got = sim.first_by_kind[kind] / first * 100
        fair = sim.fair_by_kind[kind] / first * 100
        rows.append((f"work share, {kind} (fair)", f"{got:.2f}% ({fair:.2f}%)", f"({fair:.2f}%)"))
    tail = sim.inflated_tail
    online = [p for p in sim.peers if p.online]
    claims = sum(p.claimed for p in online if p.claimed >= 1e15) / sum(p.claimed for p in online)
    rows.append(
        (
            "  inflated capacity, last tenth of the items",
            f"{tail[0] / max(1, tail[1]) * 100:.2f}%",
            f"{claims * 100:.4f}% with the wave's",
        )
    )
    if sim.after_wave_first:
        got = sim.wave_first / sim.after_wave_first * 100
        fair = sim.wave_fair / sim.after_wave_first * 100
        rows.append((f"work share, Sybil wave of {sim.args.sybil} (fair)", f"{got:.2f}% ({fair:.2f}%)", ""))
    per_page = min(INJECTED, MAX_LINKS_PER_PAGE)
    rows.append(
        (
            "junk links kept (per page)",
            f"{sim.links_kept:,} ({per_page:,} max)",
            f"{sim.links_pages * INJECTED:,} ({INJECTED:,})",
        )
    )
    honest_time = sim.host_time[1]
    rows.append(
        (
            "host time over honest reports (worst host)",
            f"{(sim.host_time[0] / honest_time - 1) * 100:+.1f}% ({sim.worst_host:.2f}x)",
            f"{(sim.host_time[2] / honest_time - 1) * 100:+.1f}%",
        )
    )
    rows.append(("wall s", f"{wall:.0f}", ""))
    return rows


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--networks", type=int, default=50)
    parser.add_argument("--unit", type=int, default=50, help="items a unit")
    parser.add_argument(
        "--known", type=int, default=None, help="known answers planted in each unit (default: reputation.known_answers)"
    )
    parser.add_argument("--churn", type=float, default=0.0005, help="share of online keys leaving each tick")
    parser.add_argument("--sybil", type=int, default=100, help="fresh liar keys joining at a third of the run")
    parser.add_argument("--drain", type=int, default=60, help="minutes of further work (other items) after the last")
    parser.add_argument(
        "--known-timeouts-wrong", action="store_true", help="a known answer timed out counts as wrong (not ignored)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rule", action="append", default=[], help="NAME=VALUE: a rule's constant, for trials")
    args = parser.parse_args(argv)
    for rule in args.rule:
        name, _, value = rule.partition("=")
        module = next((m for m in (reputation, verdicts) if name.isupper() and hasattr(m, name)), None)
        if module is None:
            parser.error(f"neither coordinator.reputation nor coordinator.verdicts has a constant {name}")
        setattr(module, name, type(getattr(module, name))(float(value)))
    return args


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    began = time.process_time()
    sim = Sim(args)
    sim.run()
    rows = report(sim, time.process_time() - began)
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'trust rules':>32}  {'anchor (no verification)':>26}")
    for what, ours, anchor in rows:
        print(f"{what:{width}}  {ours:>32}  {anchor:>26}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
