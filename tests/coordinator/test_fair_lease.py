"""The store assigns hosts, not URLs: fair shares by capacity, one live lease per host, host
pacing, units sized by throughput, stragglers, and the schema 2 -> 3 -> 4 -> 5 migrations.

Store tests run on a real SQLite file with injected times; the concurrency test runs real
signed HTTP requests against the real app on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from coordinator import assignment, host_pacing, reputation, unit_sizing
from coordinator.peer_routes import RETRY_AFTER
from coordinator.sql import SCHEMA_VERSION, SqlStore
from coordinator.sql.schema import MIGRATIONS, SCHEMA
from coordinator.store import (
    BYTES_PER_ITEM,
    PEER_QUIET_SECONDS,
    REBALANCE_INTERVAL,
    StaleLease,
    StoreError,
)
from coordinator.url_jobs import unit_key
from overlay.wire import Lease, RegisterRequest, Report, encode
from tests.coordinator.conftest import Clock, Linkcheck, Peer, add_linkcheck, get, item, submit, version_of

T0 = 1000.0
LEASE = 60.0
REST = host_pacing.DEFAULT_MIN_DELAY


@pytest.fixture
async def store(tmp_path: Path, linkcheck: Linkcheck) -> AsyncIterator[SqlStore]:
    async with SqlStore(tmp_path / "c.sqlite") as opened:
        await add_linkcheck(opened, linkcheck)
        yield opened


async def register(store: SqlStore, peer: str, now: float = T0, capacity: float = 0.0) -> None:
    await store.register_peer(peer, RegisterRequest(peer, 4, ["linkcheck"], capacity=capacity), now)


async def lease_all(store: SqlStore, peer: str, now: float, lease_seconds: float = LEASE) -> list[Lease]:
    return await store.lease(peer, 256, ["linkcheck"], now, lease_seconds)


def hosts_of(leases: list[Lease]) -> list[str]:
    return [unit_key(lease.payload["items"][0]["url"]) for lease in leases]


def done(lease: Lease, status: int = 200) -> dict[str, Any]:
    """An honest report payload for a unit: every URL checked, answered with `status`."""
    return {
        "items": [
            {
                **item(i["url"], crawled=False),
                "status": status,
                "result": "ok" if status < 400 else "broken",
                "error": None if status < 400 else f"HTTP {status}",
            }
            for i in lease.payload["items"]
        ]
    }


async def report(store: SqlStore, peer: str, lease: Lease, now: float, status: int = 200) -> None:
    throttled = 1 if status in (429, 503) else 0  # as the peer counts its fetches' answers
    answer = await store.report(
        peer,
        Report(
            lease.unit_id, lease.token, 0, done(lease, status), throttled=throttled, bundle_version=version_of(lease)
        ),
        now,
    )
    assert answer.accepted and answer.reason == ""


def vouch(path: Path, *peers: str) -> None:
    """Give these keys a long record of confirmed answers, as the store's verdicts do when
    other vantage points agree with them: their weights are then their claims, up to what
    they were seen to do (`reputation.weight`)."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany("UPDATE peers SET agreed = 1000000 WHERE id = ?", [(peer,) for peer in peers])


def host_won_by(winner: str, loser: str, prefix: str) -> str:
    """A host whose rendezvous score is higher for `winner` than for `loser` (equal weights)."""
    for i in range(1000):
        host = f"http://{prefix}{i}.test:80"
        if assignment.score(host, winner, 1.0) > assignment.score(host, loser, 1.0):
            return host
    raise AssertionError("no such host among 1000")


# ---- assignment ------------------------------------------------------------------------------


async def test_peers_get_disjoint_hosts_in_proportion_to_their_capacities(tmp_path: Path, store: SqlStore) -> None:
    # Keys with a long confirmed record, claiming less than a trusted key weighs unseen
    # (reputation.OBSERVED_FLOOR): their weights are their claims.
    await register(store, "big", capacity=900_000)
    await register(store, "small", capacity=300_000)
    vouch(tmp_path / "c.sqlite", "big", "small")
    urls = [f"http://h{i}.test/" for i in range(400)]
    await store.create_job("linkcheck", {"urls": urls, "depth": 0}, T0)
    await store.rebalance(T0)
    got = {peer: hosts_of(await lease_all(store, peer, T0)) for peer in ("big", "small")}
    # One call grants at most 256 units; the rest of the big peer's hosts come with the next.
    assert [len(hosts) for hosts in got.values()] == [256, 100]
    got["big"] += hosts_of(await lease_all(store, "big", T0))

    big, small = set(got["big"]), set(got["small"])
    assert (len(big), len(small), big & small, big | small) == (300, 100, set(), {unit_key(u) for u in urls})
    # Exactly what the assignment module plans for these weights, demands and demand floor.
    weights = {"big": 900_000.0, "small": 300_000.0}
    floor = sum(weights.values()) / BYTES_PER_ITEM * REBALANCE_INTERVAL
    plan = assignment.rebalance({}, weights, {unit_key(u): 1 for u in urls}, demand_floor=floor)
    assert {host: peer for peer, hosts in (("big", big), ("small", small)) for host in hosts} == plan.assignment


async def test_a_quiet_peer_loses_its_hosts_to_their_next_choices(tmp_path: Path, store: SqlStore) -> None:
    for peer in ("p1", "p2", "p3"):
        await register(store, peer)
    vouch(tmp_path / "c.sqlite", "p1", "p2", "p3")  # weights high enough that no cap binds here
    urls = [f"http://h{i}.test/" for i in range(60)]
    await store.create_job("linkcheck", {"urls": urls, "depth": 0}, T0)
    before = {peer: set(hosts_of(await lease_all(store, peer, T0))) for peer in ("p1", "p2")}
    of_p3 = {unit_key(u) for u in urls} - before["p1"] - before["p2"]
    assert before["p1"] and before["p2"] and of_p3  # p3 was given hosts and never asked

    later = T0 + PEER_QUIET_SECONDS + 1
    assert await lease_all(store, "p1", later - 1) == []  # heard from; its own hosts are leased
    assert await lease_all(store, "p2", later - 1) == []
    await store.rebalance(later)
    after = {peer: set(hosts_of(await lease_all(store, peer, later))) for peer in ("p1", "p2")}
    # Only p3's hosts moved, each to the better scoring of the peers left (its next choice).
    assert after["p1"] | after["p2"] == of_p3
    w = reputation.OBSERVED_FLOOR  # what each weighs: equal weights, whatever they are
    assert after["p1"] == {h for h in of_p3 if assignment.score(h, "p1", w) > assignment.score(h, "p2", w)}


async def test_a_peer_that_does_not_run_the_jobs_bundle_gets_no_host(store: SqlStore) -> None:
    # "picky" is every host's first choice by name and score here, but runs another bundle only:
    # given a host, it would never lease its work, and the host would wait.
    await store.register_peer("picky", RegisterRequest("picky", 4, ["other"]), T0)
    await register(store, "able")
    hosts = [host_won_by("picky", "able", f"site{i}-") for i in range(3)]
    await store.create_job("linkcheck", {"urls": [f"{h}/" for h in hosts], "depth": 0}, T0)
    await store.rebalance(T0)
    assert await store.lease("picky", 256, ["other"], T0, LEASE) == []
    assert sorted(hosts_of(await lease_all(store, "able", T0))) == sorted(set(hosts))


async def test_a_peer_without_hosts_gets_nothing(store: SqlStore) -> None:
    await register(store, "p1")
    await register(store, "p2")
    host = host_won_by("p1", "p2", "only")
    await store.create_job("linkcheck", {"urls": [f"{host}/a", f"{host}/b"], "depth": 0}, T0)
    assert await lease_all(store, "p2", T0) == []
    assert hosts_of(await lease_all(store, "p1", T0)) == [host]


async def test_a_host_beyond_every_cap_stays_with_the_peer_that_has_it(tmp_path: Path, linkcheck: Linkcheck) -> None:
    # Small capacities keep the demand floor low, so one host of ten URLs is larger than either
    # peer's cap: it is placed outside the bound. "zed" had it alone; when "amy" joins, moving
    # it would only cost a handover, though "amy" is both its rendezvous choice and first by name.
    async with SqlStore(tmp_path / "c.sqlite", unit_size=2) as store:
        await add_linkcheck(store, linkcheck)
        host = host_won_by("amy", "zed", "big")
        await register(store, "zed", capacity=25_000)
        await store.create_job("linkcheck", {"urls": [f"{host}/{i}" for i in range(10)], "depth": 0}, T0)
        (first,) = await lease_all(store, "zed", T0)
        await register(store, "amy", T0 + 1, capacity=25_000)
        for now in (T0 + 1, T0 + 2, T0 + 3):
            await store.rebalance(now)
        await report(store, "zed", first, T0 + 3)
        later = T0 + 3 + REST
        assert await lease_all(store, "amy", later) == []
        assert hosts_of(await lease_all(store, "zed", later)) == [host]


@pytest.mark.parametrize("epsilon", [assignment.DEFAULT_EPSILON, 1.0])
async def test_the_operator_sets_how_far_a_peer_may_go_beyond_its_share(
    tmp_path: Path, linkcheck: Linkcheck, epsilon: float
) -> None:
    # Small capacities keep the demand floor low: these four hosts (2, 3, 4 and 2 URLs) are the
    # whole demand, and h3 goes to a different peer at the two bounds.
    weights = {"p1": 25_000.0, "p2": 25_000.0, "p3": 25_000.0}
    demand = {f"http://h{i}.test:80": size for i, size in enumerate((2, 3, 4, 2))}
    floor = sum(weights.values()) / BYTES_PER_ITEM * REBALANCE_INTERVAL
    plans = {
        e: assignment.rebalance({}, weights, demand, epsilon=e, demand_floor=floor).assignment
        for e in (assignment.DEFAULT_EPSILON, 1.0)
    }
    assert plans[assignment.DEFAULT_EPSILON] != plans[1.0]  # the bound decides here
    async with SqlStore(tmp_path / "c.sqlite", unit_size=10, epsilon=epsilon) as store:
        await add_linkcheck(store, linkcheck)
        for peer, capacity in weights.items():
            await register(store, peer, capacity=capacity)
        urls = [f"{host.removesuffix(':80')}/{n}" for host, size in demand.items() for n in range(size)]
        await store.create_job("linkcheck", {"urls": urls, "depth": 0}, T0)
        await store.rebalance(T0)
        got = {host: peer for peer in weights for host in hosts_of(await lease_all(store, peer, T0))}
    assert got == plans[epsilon]


def test_epsilon_is_checked() -> None:
    for epsilon in (0.0, -1.0, assignment.MAX_EPSILON * 2, float("nan")):
        with pytest.raises(ValueError, match="epsilon must be above 0 and at most 10"):
            SqlStore("unused.sqlite", epsilon=epsilon)


# ---- politeness ------------------------------------------------------------------------------


async def test_a_host_rests_until_next_allowed_at(tmp_path: Path, linkcheck: Linkcheck) -> None:
    async with SqlStore(tmp_path / "c.sqlite", unit_size=1) as store:
        await add_linkcheck(store, linkcheck)
        await register(store, "p")
        await store.create_job("linkcheck", {"urls": ["http://a.test/1", "http://a.test/2"], "depth": 0}, T0)
        (first,) = await lease_all(store, "p", T0)
        assert await lease_all(store, "p", T0) == []  # one live lease per host
        await report(store, "p", first, T0 + 5)
        assert await lease_all(store, "p", T0 + 5 + REST - 0.01) == []
        (second,) = await lease_all(store, "p", T0 + 5 + REST)
        assert second.payload["items"] == [{"url": "http://a.test/2", "crawl": True}]


async def test_the_operator_sets_the_pause_between_units(tmp_path: Path, linkcheck: Linkcheck) -> None:
    async with SqlStore(tmp_path / "c.sqlite", unit_size=1, host_min_delay=0.0) as store:
        await add_linkcheck(store, linkcheck)
        await register(store, "p")
        await store.create_job("linkcheck", {"urls": ["http://a.test/1", "http://a.test/2"], "depth": 0}, T0)
        (first,) = await lease_all(store, "p", T0)
        assert await lease_all(store, "p", T0) == []  # still one live lease per host
        await report(store, "p", first, T0 + 5)
        assert len(await lease_all(store, "p", T0 + 5)) == 1  # no pause after the report
    for bad in (-0.5, float("nan"), host_pacing.MAX_MIN_DELAY + 1):
        with pytest.raises(ValueError, match="host_min_delay"):
            SqlStore(tmp_path / "d.sqlite", host_min_delay=bad)


async def test_a_reported_crawl_delay_rests_the_host_between_units(tmp_path: Path, linkcheck: Linkcheck) -> None:
    async with SqlStore(tmp_path / "c.sqlite", unit_size=1) as store:
        await add_linkcheck(store, linkcheck)
        await register(store, "p")
        urls = [f"http://a.test/{i}" for i in range(4)]
        await store.create_job("linkcheck", {"urls": urls, "depth": 0}, T0)
        (first,) = await lease_all(store, "p", T0)
        assert first.host == "http://a.test:80"  # the origin the peer keeps robots.txt for
        answer = await store.report(
            "p",
            Report(first.unit_id, first.token, 0, done(first), crawl_delay=4.0, bundle_version=version_of(first)),
            T0 + 1,
        )
        assert answer.accepted
        assert await lease_all(store, "p", T0 + 1 + 4.0 - 0.01) == []  # the crawl delay, not REST
        (second,) = await lease_all(store, "p", T0 + 1 + 4.0)
        # A report without one keeps what was learned; one capped at MAX_CRAWL_DELAY.
        await store.report(
            "p", Report(second.unit_id, second.token, 0, done(second), bundle_version=version_of(second)), T0 + 6
        )
        assert await lease_all(store, "p", T0 + 6 + 4.0 - 0.01) == []
        (third,) = await lease_all(store, "p", T0 + 6 + 4.0)
        await store.report(
            "p",
            Report(third.unit_id, third.token, 0, done(third), crawl_delay=1e9, bundle_version=version_of(third)),
            T0 + 11,
        )
        # One peer's word (capped) rests the host UNCONFIRMED_CRAWL_DELAY at most, until a second
        # peer sees as much (host_pacing): a liar cannot park a website for everyone.
        wait = host_pacing.UNCONFIRMED_CRAWL_DELAY
        assert await lease_all(store, "p", T0 + 11 + wait - 0.01) == []
        assert len(await lease_all(store, "p", T0 + 11 + wait)) == 1
        with sqlite3.connect(tmp_path / "c.sqlite") as conn:
            kept = conn.execute(
                "SELECT crawl_delay, delay_claim, claimed_by FROM hosts WHERE key = 'http://a.test:80'"
            ).fetchone()
        assert kept == (0.0, host_pacing.MAX_CRAWL_DELAY, "p")


async def test_429_and_503_back_a_host_off(tmp_path: Path, linkcheck: Linkcheck) -> None:
    async with SqlStore(tmp_path / "c.sqlite", unit_size=1) as store:
        await add_linkcheck(store, linkcheck)
        await register(store, "p")
        urls = [f"http://a.test/{i}" for i in range(4)]
        await store.create_job("linkcheck", {"urls": urls, "depth": 0}, T0)
        now = T0
        # Each throttled unit doubles the pause from BACKOFF_START; a clean unit forgets it.
        for status, pause in ((429, host_pacing.BACKOFF_START), (503, 2 * host_pacing.BACKOFF_START), (200, REST)):
            (lease,) = await lease_all(store, "p", now)
            now += 2
            await report(store, "p", lease, now, status)
            assert await lease_all(store, "p", now + pause - 0.01) == []
            now += pause
        assert len(await lease_all(store, "p", now)) == 1


async def test_no_host_has_two_live_leases_when_peers_ask_at_once(client: TestClient, clock: Clock) -> None:
    peers = [Peer(client, clock, name) for name in ("alice", "bob")]
    for peer in peers:
        await peer.register()
    hosts = [f"http://s{i}.test" for i in range(20)]
    job_id = await submit(client, [f"{host}/{n}" for host in hosts for n in range(6)])
    usage = {"capacity": 5_000_000.0, "used": 0}

    async def ask(peer: Peer) -> tuple[Peer, dict[str, Any]]:
        status, body = await peer.post("/v1/leases", {"max_units": 4, "workloads": ["linkcheck"], "usage": usage})
        assert status == 200, body
        return peer, body

    held: dict[str, list[str]] = {}  # host -> names of the peers granted a unit of it

    async def round_of(asking: list[Peer]) -> list[dict[str, Any]]:
        answers = await asyncio.gather(*(ask(peer) for _ in range(3) for peer in asking))
        for peer, body in answers:
            for lease in body["leases"]:
                held.setdefault(unit_key(lease["payload"]["items"][0]["url"]), []).append(peer.name)
        return [body for _, body in answers]

    await round_of(peers)
    # A newcomer takes over the hosts whose top choice it is, leased or not: still, nobody
    # gets a unit of a host whose lease is live. Nothing is reported, so each host has 1 unit.
    carol = Peer(client, clock, "carol")
    await carol.register()
    answers = await round_of([*peers, carol])
    assert all(len(names) == 1 for names in held.values()), held
    assert len(held) == 20
    assert all(body["retry_after"] == (None if body["leases"] else RETRY_AFTER) for body in answers)
    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert (job["units_total"], job["units_done"]) == (20 + 20, 0)  # 20 formed, 20 more to form


# ---- unit sizes and stragglers ---------------------------------------------------------------


async def test_units_are_sized_by_the_peers_throughput(store: SqlStore) -> None:
    await register(store, "fast")
    await register(store, "slow")
    fast_host, slow_host = host_won_by("fast", "slow", "f"), host_won_by("slow", "fast", "s")
    for host in (fast_host, slow_host):
        await store.create_job("linkcheck", {"urls": [f"{host}/{n}" for n in range(600)], "depth": 0}, T0)
    (fast,) = await lease_all(store, "fast", T0)
    (slow,) = await lease_all(store, "slow", T0)
    assert (hosts_of([fast]), hosts_of([slow])) == ([fast_host], [slow_host])
    assert len(fast.payload["items"]) == len(slow.payload["items"]) == unit_sizing.DEFAULT_UNIT

    await report(store, "fast", fast, T0 + 1)  # 20 URLs in 1 s: 600 in the target 30 s
    await report(store, "slow", slow, T0 + 100)  # 20 URLs in 100 s: 6 in 30 s
    (fast,) = await lease_all(store, "fast", T0 + 100)
    (slow,) = await lease_all(store, "slow", T0 + 100 + REST)
    assert (len(fast.payload["items"]), len(slow.payload["items"])) == (unit_sizing.MAX_UNIT, 6)


async def test_a_silent_straggler_is_granted_again_and_its_old_token_is_stale(store: SqlStore) -> None:
    lease_seconds = 300.0  # peers renew every 100 s; silent for more than 200 s: taken back
    host = host_won_by("p2", "p1", "slow")
    await register(store, "p1")
    job_id = await store.create_job("linkcheck", {"urls": [f"{host}/page"], "depth": 0}, T0)
    (first,) = await lease_all(store, "p1", T0, lease_seconds)
    await register(store, "p2", T0 + 50)
    await store.rebalance(T0 + 50)  # p2 takes over its top-choice host, still leased by p1

    assert await lease_all(store, "p2", T0 + 150, lease_seconds) == []  # p1 renews: alive
    await store.renew("p1", first.unit_id, first.token, T0 + 150, lease_seconds)
    assert await lease_all(store, "p2", T0 + 350, lease_seconds) == []  # silent 200 s: not yet
    (second,) = await lease_all(store, "p2", T0 + 351, lease_seconds)
    assert (second.unit_id, second.token) == (first.unit_id, first.token + 1)

    with pytest.raises(StaleLease):
        await store.report(
            "p1", Report(first.unit_id, first.token, 0, done(first), bundle_version=version_of(first)), T0 + 352
        )
    with pytest.raises(StaleLease):
        await store.renew("p1", first.unit_id, first.token, T0 + 352, lease_seconds)
    await report(store, "p2", second, T0 + 353, status=404)
    status = await store.job_status(job_id)
    assert (status.state, status.counts) == ("done", {"broken": 1})


# ---- migration -------------------------------------------------------------------------------


async def test_a_schema_2_file_is_migrated_with_its_jobs_and_results(tmp_path: Path, linkcheck: Linkcheck) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # what osaas with schema 2 left behind: a job half done
        conn.executescript(SCHEMA + MIGRATIONS[2] + "PRAGMA user_version=2;")
        conn.execute(
            "INSERT INTO jobs (id, workload, input, state, created_at, unit_size)"
            " VALUES (1, 'linkcheck', ?, 'running', 1.0, 100)",
            (encode({"urls": ["http://a.test/", "http://b.test/"], "depth": 0}),),
        )
        conn.executemany(
            "INSERT INTO units (id, job_id, unit_key, state, token, peer_id, expires_at, attempts)"
            " VALUES (?, 1, ?, ?, ?, ?, ?, 0)",
            [(1, "http://a.test:80", "done", 1, "old", None), (2, "http://b.test:80", "leased", 1, "old", T0 - 1)],
        )
        conn.executemany(
            "INSERT INTO items (job_id, url, unit_key, depth, crawl, unit_id, result, status, done)"
            " VALUES (1, ?, ?, 0, 1, ?, ?, ?, ?)",
            [
                ("http://a.test/", "http://a.test:80", 1, "ok", 200, 1),
                ("http://b.test/", "http://b.test:80", 2, None, None, 0),
            ],
        )
        conn.execute("INSERT INTO peers VALUES ('old', 'old', 1, ?, '', 1.0, 1.0)", (encode(["linkcheck"]),))
    conn.close()
    async with SqlStore(path) as store:
        status = await store.job_status(1)
        assert (status.state, status.units_total, status.units_done, status.items_total, status.counts) == (
            "running",
            2,
            1,
            2,
            {"ok": 1},
        )
        assert [(r["url"], r["result"], r["status"]) for r in await store.job_results(1, 0, 10)] == [
            ("http://a.test/", "ok", 200),
            ("http://b.test/", None, None),
        ]
        await add_linkcheck(store, linkcheck)
        await register(store, "new")
        # The expired lease of the old coordinator is granted again as it is, with a new token.
        (lease,) = await lease_all(store, "new", T0 + REST)
        assert (lease.unit_id, lease.token) == (2, 2)
        assert lease.payload["items"] == [{"url": "http://b.test/", "crawl": True}]
        await report(store, "new", lease, T0 + 2)
        assert (await store.job_status(1)).state == "done"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("SELECT key FROM hosts ORDER BY key").fetchall() == [("http://b.test:80",)]
        # The link-check columns became records (schema 12): every row is read one way now.
        columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
        assert not columns & {"status", "final_url", "redirects", "error"}
        assert conn.execute("SELECT COUNT(*) FROM jobs WHERE model IS NULL").fetchone() == (0,)
    conn.close()


async def test_a_schema_3_file_gets_its_units_built_again_with_every_row_and_reference(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # schema 3: a job with a done unit, a leased one, waiting items
        conn.executescript(SCHEMA + MIGRATIONS[2] + MIGRATIONS[3] + "PRAGMA user_version=3;")
        conn.execute(
            "INSERT INTO jobs (id, workload, input, state, created_at, unit_size)"
            " VALUES (1, 'linkcheck', x'80', 'running', 1.0, 100)"
        )
        conn.executemany(
            "INSERT INTO units (id, job_id, unit_key, state, token, peer_id, expires_at, attempts,"
            " last_error, leased_at, renewed_at) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (3, "http://a.test:80", "done", 1, "p", None, 0, None, 5.0, None),
                (7, "http://b.test:80", "leased", 2, "q", T0, 1, "timeout", 6.0, 8.0),
            ],
        )
        conn.executemany(
            "INSERT INTO items (job_id, url, unit_key, depth, crawl, unit_id, done) VALUES (1, ?, ?, 0, 1, ?, ?)",
            [
                ("http://a.test/", "http://a.test:80", 3, 1),
                ("http://b.test/", "http://b.test:80", 7, 0),
                ("http://b.test/x", "http://b.test:80", None, 0),
            ],
        )
        units_before = conn.execute("SELECT * FROM units ORDER BY id").fetchall()
    conn.close()
    async with SqlStore(path) as store:
        assert (await store.job_status(1)).units_done == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert [row[:11] for row in conn.execute("SELECT * FROM units ORDER BY id")] == units_before
        # Schema 5: the open unit's items are its range; the waiting one is above its queue's cursor.
        assert conn.execute("SELECT id, first_item, last_item FROM units ORDER BY id").fetchall() == [
            (3, None, None),
            (7, 2, 2),
        ]
        assert conn.execute("SELECT unit_key, job_id, taken_through FROM queues ORDER BY unit_key").fetchall() == [
            ("http://a.test:80", 1, 1),
            ("http://b.test:80", 1, 2),
        ]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'units'")} == {
            "units",
            "units_by_job",
            "units_open",
        }
        # The state rule still holds, and writing a unit builds no temporary table for it.
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE units SET state = 'lost' WHERE id = 7")
        plan = [row[1] for row in conn.execute("EXPLAIN UPDATE units SET state = 'done' WHERE id = 7")]
        assert "OpenEphemeral" not in plan
    conn.close()


def schema_4_file(path: Path, units: list[tuple[Any, ...]], items: list[tuple[Any, ...]]) -> None:
    """A file as osaas with schema 4 left it: one job; units (id, unit_key, state, token,
    peer_id, expires_at); items (url, unit_key, unit_id, done)."""
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA + "".join(MIGRATIONS[v] for v in (2, 3, 4)) + "PRAGMA user_version=4;")
        conn.execute(
            "INSERT INTO jobs (id, workload, input, state, created_at, unit_size)"
            " VALUES (1, 'linkcheck', ?, 'running', 1.0, 100)",
            (encode({"urls": ["http://a.test/"], "depth": 0}),),
        )
        conn.executemany(
            "INSERT INTO units (id, job_id, unit_key, state, token, peer_id, expires_at, leased_at,"
            " renewed_at) VALUES (?, 1, ?, ?, ?, ?, ?, 1.0, 1.0)",
            units,
        )
        conn.executemany(
            "INSERT INTO items (job_id, url, unit_key, depth, crawl, unit_id, done) VALUES (1, ?, ?, 0, 0, ?, ?)", items
        )
        conn.execute("INSERT INTO job_progress (job_id, open_items) SELECT 1, COUNT(*) FROM items WHERE done = 0")
        conn.execute("INSERT INTO hosts (key) SELECT DISTINCT unit_key FROM items")
    conn.close()


async def test_a_schema_4_file_keeps_each_units_items_and_what_waits(tmp_path: Path, linkcheck: Linkcheck) -> None:
    a, b = "http://a.test:80", "http://b.test:80"
    path = tmp_path / "old.sqlite"
    # Host a: unit 1 done, whose report left a/3 out (waiting again, below a/4 that waits too);
    # host b: unit 2's lease expired with b/1 and b/2 open, and b/3 waits.
    schema_4_file(
        path,
        units=[(1, a, "done", 1, "old", None), (2, b, "leased", 1, "old", T0 - 1)],
        items=[
            ("http://a.test/1", a, 1, 1),
            ("http://a.test/2", a, 1, 1),
            ("http://a.test/3", a, None, 0),
            ("http://a.test/4", a, None, 0),
            ("http://b.test/1", b, 2, 0),
            ("http://b.test/2", b, 2, 0),
            ("http://b.test/3", b, None, 0),
        ],
    )
    async with SqlStore(path) as store:
        await add_linkcheck(store, linkcheck)
        await register(store, "new")
        first = {lease.unit_id: lease for lease in await lease_all(store, "new", T0)}
        assert {unit_id: [i["url"] for i in lease.payload["items"]] for unit_id, lease in first.items()} == {
            2: ["http://b.test/1", "http://b.test/2"],
            3: ["http://a.test/3", "http://a.test/4"],
        }
        for lease in first.values():
            await report(store, "new", lease, T0 + 1)
        (last,) = await lease_all(store, "new", T0 + 1 + 2 * REST)
        assert [i["url"] for i in last.payload["items"]] == ["http://b.test/3"]
        await report(store, "new", last, T0 + 2 + 2 * REST)
        status = await store.job_status(1)
        assert (status.state, status.items_done, status.counts) == ("done", 7, {"ok": 5, None: 2})
    with sqlite3.connect(path) as conn:
        assert "unit_id" not in {row[1] for row in conn.execute("PRAGMA table_info(items)")}
        assert conn.execute("SELECT COUNT(*) FROM queues").fetchone() == (0,)  # the job is done
    conn.close()


async def test_a_file_whose_open_units_share_items_is_left_as_it_was(tmp_path: Path) -> None:
    a = "http://a.test:80"
    path = tmp_path / "old.sqlite"
    # Never written by osaas 4 (it keeps one open unit per host and job), but a range cannot hold it.
    schema_4_file(
        path,
        units=[(1, a, "queued", 1, None, None), (2, a, "queued", 1, None, None)],
        items=[("http://a.test/1", a, 1, 0), ("http://a.test/2", a, 2, 0), ("http://a.test/3", a, 1, 0)],
    )
    with pytest.raises(
        StoreError, match=rf"cannot migrate to schema {SCHEMA_VERSION}: 1 open units share items; finish its jobs"
    ):
        async with SqlStore(path):
            pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (4,)
        assert conn.execute("SELECT url, unit_id FROM items ORDER BY id").fetchall() == [
            ("http://a.test/1", 1),
            ("http://a.test/2", 2),
            ("http://a.test/3", 1),
        ]
    conn.close()
