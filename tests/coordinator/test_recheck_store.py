"""Re-checks through the SQLite store: a problem is final only once another peer, of another
network where there is one, says the same; a disagreement calls for a third; the liar is
outvoted on its record; nobody rechecks its own answer; a lone peer's answers stand; a
re-check nobody comes to give ends the wait rather than the job never ending."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from coordinator import verdicts
from coordinator.sql import SqlStore
from coordinator.store import NotFound
from overlay.wire import Lease, RegisterRequest, Report
from tests.coordinator.conftest import item, publish_source, query, version_of
from workloads.builtin import LINKCHECK, stage_builtin

T0 = 1000.0
LEASE = 60.0
# peer -> the address its requests come from: a and b share 10.1.0.0/16.
ADDRESS = {"a": "10.1.0.5", "b": "10.1.200.9", "c": "10.2.0.1", "d": "10.3.0.1", "z": "10.4.0.1"}
NETWORK = {"a": "10.1.0.0/16", "b": "10.1.0.0/16", "c": "10.2.0.0/16", "d": "10.3.0.0/16", "z": "10.4.0.0/16"}
TRUTH = {
    "http://a.test/ok1": "ok",
    "http://a.test/ok2": "ok",
    "http://a.test/gone": "broken",
    "http://a.test/slow": "timeout",
}
Answering = Callable[[str], str]  # url -> the result a peer reports


def honest(url: str) -> str:
    return TRUTH[url]


def says_broken(url: str) -> str:
    return "broken"


@pytest.fixture
async def store(tmp_path: Path, db_path: Path | str) -> AsyncIterator[SqlStore]:
    async with SqlStore(db_path, host_min_delay=0.0, rechecks=True) as opened:
        await publish_source(opened, stage_builtin(LINKCHECK, tmp_path / "lc"), tmp_path / "dist", T0)
        yield opened


async def join(store: SqlStore, peers: list[str], now: float) -> None:
    for peer in peers:
        await store.register_peer(peer, RegisterRequest(peer, 4, ["*"]), now)


async def work(store: SqlStore, peer: str, answering: Answering, now: float) -> list[str]:
    """The peer leases what it may and reports it; the URLs it answered."""
    answered: list[str] = []
    for granted in await store.lease(peer, 8, ["*"], now, LEASE, address=ADDRESS[peer]):
        await report(store, peer, granted, answering, now)
        answered += [i["url"] for i in granted.payload["items"]]
    return answered


async def report(store: SqlStore, peer: str, granted: Lease, answering: Answering, now: float) -> None:
    items = [item(i["url"], result=answering(i["url"])) for i in granted.payload["items"]]
    response = await store.report(
        peer, Report(granted.unit_id, granted.token, 0, {"items": items}, bundle_version=version_of(granted)), now
    )
    assert response.accepted, response.reason


async def run(
    store: SqlStore, job_id: int, peers: dict[str, Answering], now: float, rounds: int = 30
) -> tuple[float, dict[str, list[str]]]:
    """Rounds of every peer leasing and reporting until the job is done: the time then, and
    which URLs each peer answered."""
    answered: dict[str, list[str]] = {peer: [] for peer in peers}
    for _ in range(rounds):
        now += 1.0
        for peer, answering in peers.items():
            answered[peer] += await work(store, peer, answering, now)
        if (await store.job_status(job_id)).state == "done":
            break
    return now, answered


async def rows(store: SqlStore, job_id: int) -> dict[str, dict[str, object]]:
    return {row["url"]: row for row in await store.job_results(job_id, 0, 100)}


async def test_a_problem_is_final_once_a_peer_of_another_network_says_the_same(store: SqlStore) -> None:
    await join(store, ["a", "c"], T0)
    job_id = await store.create_job(LINKCHECK, {"urls": sorted(TRUTH), "depth": 0}, T0)
    now, answered = await run(store, job_id, {"a": honest, "c": honest}, T0)
    status = await store.job_status(job_id)
    assert status.state == "done"
    # Counts are of the job's URLs, not of the answers it took.
    assert status.items_total == status.items_done == len(TRUTH)
    assert status.counts == {"ok": 2, "broken": 1, "timeout": 1}
    results = await rows(store, job_id)
    assert {url: row["result"] for url, row in results.items()} == TRUTH
    for url in ("http://a.test/gone", "http://a.test/slow"):
        assert results[url]["verdict"] == "confirmed"
        networks = sorted(str(answer).split(" from ")[1] for answer in results[url]["answers"])  # type: ignore[attr-defined]
        assert networks == sorted([NETWORK["a"], NETWORK["c"]])
        assert all(answer.startswith(f"{TRUTH[url]} from ") for answer in results[url]["answers"])  # type: ignore[attr-defined]
        # Answered by both peers: each answered it once.
        assert answered["a"].count(url) == answered["c"].count(url) == 1
    assert await store.job_columns(job_id) == [
        "url", "result", "status", "final_url", "redirects", "error", "depth", "referrers", "more_referrers", "failed", "verdict", "answers"
    ]  # fmt: skip


async def test_a_disagreement_asks_a_third_network_and_the_liar_is_outvoted(
    store: SqlStore, db_path: Path | str
) -> None:
    await join(store, ["z"], T0)
    job_id = await store.create_job(LINKCHECK, {"urls": ["http://a.test/ok1"], "depth": 0}, T0)
    (granted,) = await store.lease("z", 8, ["*"], T0 + 1, LEASE, address=ADDRESS["z"])
    await join(store, ["c", "d"], T0 + 1)  # others are about when the liar's answer comes
    await report(store, "z", granted, says_broken, T0 + 1)
    status = await store.job_status(job_id)
    assert status.state == "running" and status.items_done == 0  # a problem waits for a second look
    now, answered = await run(store, job_id, {"z": says_broken, "c": honest, "d": honest}, T0 + 1)
    assert (await store.job_status(job_id)).state == "done"
    row = (await rows(store, job_id))["http://a.test/ok1"]
    assert row["result"] == "ok" and row["status"] == 200
    assert row["verdict"] == "outvoted"
    assert row["answers"] == [f"broken from {NETWORK['z']}", f"ok from {NETWORK['c']}", f"ok from {NETWORK['d']}"] or (
        row["answers"] == [f"broken from {NETWORK['z']}", f"ok from {NETWORK['d']}", f"ok from {NETWORK['c']}"]
    )
    assert answered["z"] == []  # the liar never answered its own item again
    records = dict(query(db_path, "SELECT id, agreed || '/' || outvoted FROM peers"))
    assert records == {"z": "0/1", "c": "1/0", "d": "1/0"}


async def test_a_peer_never_rechecks_its_own_answer_and_its_network_waits_for_others(store: SqlStore) -> None:
    await join(store, ["a", "b", "c"], T0)
    await store.create_job(LINKCHECK, {"urls": ["http://a.test/gone"], "depth": 0}, T0)
    first = None
    for peer in ("a", "b", "c"):
        leased = await store.lease(peer, 8, ["*"], T0 + 1, LEASE, address=ADDRESS[peer])
        if leased:
            first, (granted,) = peer, leased
    assert first is not None
    await report(store, first, granted, honest, T0 + 1)
    # Not the peer that answered; of its network only once no other network is about, or the
    # question waited PREFER_OTHER_NETWORK.
    same_network = {"a": "b", "b": "a"}.get(first)
    assert await store.lease(first, 8, ["*"], T0 + 2, LEASE, address=ADDRESS[first]) == []
    if same_network is not None:
        assert await store.lease(same_network, 8, ["*"], T0 + 2, LEASE, address=ADDRESS[same_network]) == []
        later = T0 + 1 + verdicts.PREFER_OTHER_NETWORK
        for peer in ("a", "b", "c"):  # all still about
            await store.register_peer(peer, RegisterRequest(peer, 4, ["*"]), later)
        (granted,) = await store.lease(same_network, 8, ["*"], later, LEASE, address=ADDRESS[same_network])
        assert granted.payload["items"][0]["url"] == "http://a.test/gone"
    else:
        (granted,) = await store.lease("a", 8, ["*"], T0 + 2, LEASE, address=ADDRESS["a"])
        assert granted.payload["items"][0]["url"] == "http://a.test/gone"


async def test_a_lone_peers_answers_stand(store: SqlStore) -> None:
    await join(store, ["a"], T0)
    job_id = await store.create_job(LINKCHECK, {"urls": sorted(TRUTH), "depth": 0}, T0)
    await run(store, job_id, {"a": honest}, T0)
    assert (await store.job_status(job_id)).state == "done"
    results = await rows(store, job_id)
    assert {url: row["result"] for url, row in results.items()} == TRUTH
    assert all(row["verdict"] is None and row["answers"] == [] for row in results.values())


async def test_a_recheck_nobody_comes_to_give_ends_the_wait(store: SqlStore) -> None:
    await join(store, ["a", "c"], T0)
    job_id = await store.create_job(LINKCHECK, {"urls": ["http://a.test/gone"], "depth": 0}, T0)
    leased = {p: await store.lease(p, 8, ["*"], T0 + 1, LEASE, address=ADDRESS[p]) for p in ("a", "c")}
    ((owner, (granted,)),) = [(p, units) for p, units in leased.items() if units]
    # The other peer was about when the answer came, and leaves before re-checking it.
    await report(store, owner, granted, honest, T0 + 2)
    assert (await store.job_status(job_id)).state == "running"
    await store.rebalance(T0 + 2 + verdicts.RECHECK_WAIT + 1)
    assert (await store.job_status(job_id)).state == "done"
    row = (await rows(store, job_id))["http://a.test/gone"]
    assert row["result"] == "broken" and row["verdict"] == "unconfirmed"


async def test_a_cancelled_job_takes_its_rechecks_with_it(store: SqlStore) -> None:
    await join(store, ["a", "c"], T0)
    job_id = await store.create_job(LINKCHECK, {"urls": ["http://a.test/gone"], "depth": 0}, T0)
    for peer in ("a", "c"):
        await work(store, peer, honest, T0 + 1)
    assert (await store.job_status(job_id)).state == "running"
    await store.cancel_job(job_id, "operator", T0 + 2)
    for peer in ("a", "c"):
        assert await store.lease(peer, 8, ["*"], T0 + 3, LEASE, address=ADDRESS[peer]) == []
    # The re-check job is nobody's to list or look up.
    assert [job.job_id for job in await store.list_jobs()] == [job_id]
    with pytest.raises(NotFound):
        await store.job_status(job_id + 1)


async def test_known_answers_in_a_liars_units_quarantine_it_and_its_answers_are_redone(
    tmp_path: Path, db_path: Path | str
) -> None:
    truth = {f"http://a.test/{n}": "broken" if n % 2 else "ok" for n in range(16)}

    def truthful(url: str) -> str:
        return truth[url]

    def says_ok(url: str) -> str:
        return "ok"

    async with SqlStore(db_path, host_min_delay=0.0, unit_size=2, rechecks=True) as store:
        await publish_source(store, stage_builtin(LINKCHECK, tmp_path / "lc"), tmp_path / "dist", T0)
        await join(store, ["a", "c"], T0)
        job_id = await store.create_job(LINKCHECK, {"urls": sorted(truth), "depth": 0}, T0)
        now, _ = await run(store, job_id, {"a": truthful, "c": truthful}, T0, rounds=3)
        # Honest peers confirmed some answers; then they go quiet and a liar is all there is.
        confirmed = [row for row in (await rows(store, job_id)).values() if row["verdict"] == "confirmed"]
        assert confirmed and (await store.job_status(job_id)).state == "running"
        now += 20.0
        await join(store, ["z"], now)
        planted_seen = 0
        for _ in range(10):
            now += 1.0
            for granted in await store.lease("z", 8, ["*"], now, LEASE, address=ADDRESS["z"]):
                urls = [i["url"] for i in granted.payload["items"]]
                planted_seen += sum(url in {row["url"] for row in confirmed} for url in urls)
                # No telling them apart: plain URLs of the website, as crawls like the others.
                assert {i["crawl"] for i in granted.payload["items"]} == {True}
                await report(store, "z", granted, says_ok, now)
            if [p for p in await store.peers_overview(0.0, 10) if p.peer_id == "z" and p.quarantined]:
                break
        (liar,) = [p for p in await store.peers_overview(0.0, 10) if p.peer_id == "z"]
        assert planted_seen > 0
        assert liar.quarantined is not None and "known answers" in liar.quarantined
        assert await store.lease("z", 8, ["*"], now + 1, LEASE, address=ADDRESS["z"]) == []
        # The honest peers come back and finish: what the liar said is done again.
        now, _ = await run(store, job_id, {"a": truthful, "c": truthful}, now + 1, rounds=40)
        assert (await store.job_status(job_id)).state == "done"
        assert {url: row["result"] for url, row in (await rows(store, job_id)).items()} == truth
