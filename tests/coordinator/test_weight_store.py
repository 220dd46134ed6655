"""Claims are measured, in the store's plans: a peer's weight is what it claims only as far as
its key's confirmed work and what the store saw it do bear it out (`reputation.weight`).

A real SQLite store with injected times. The agreement record a test gives a key is written as
the store's verdicts write it when other vantage points agree with its answers."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coordinator import assignment, reputation
from coordinator.sql import SqlStore
from overlay.wire import MAX_CAPACITY, Report
from tests.coordinator.conftest import Linkcheck, add_linkcheck, version_of
from tests.coordinator.test_fair_lease import REST, T0, done, lease_all, register, report

HONEST = ("alice", "bob", "carol")
BOUND = 1 + assignment.DEFAULT_EPSILON  # a peer's load stays within this many times its share
CLAIM = 2_000_000.0  # bytes/s each honest peer claims, and sustains


@pytest.fixture
async def store(tmp_path: Path, linkcheck: Linkcheck) -> AsyncIterator[SqlStore]:
    async with SqlStore(tmp_path / "c.sqlite") as opened:
        await add_linkcheck(opened, linkcheck)
        yield opened


def confirm(path: Path, peer: str, answers: int) -> None:
    """The key has had `answers` of its answers confirmed by other vantage points."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE peers SET agreed = ? WHERE id = ?", (answers, peer))


def assigned(path: Path) -> dict[str, str]:
    """Every website with a peer, and its peer, as the last plan wrote them."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT key, peer_id FROM hosts WHERE peer_id IS NOT NULL").fetchall())


async def share_after_new_job(store: SqlStore, path: Path, peer: str, name: str, now: float) -> float:
    """The share of the websites with work the next plan gives `peer`, once a new job of 300
    websites is added to them."""
    await store.create_job("linkcheck", {"urls": [f"http://{name}{i}.test/" for i in range(300)], "depth": 0}, now)
    await store.rebalance(now)
    plan = assigned(path)
    return Counter(plan.values())[peer] / len(plan)


async def test_a_fresh_key_claiming_the_world_gets_a_bounded_share_grown_only_by_verified_work(
    tmp_path: Path, store: SqlStore
) -> None:
    for peer in HONEST:
        await register(store, peer, capacity=CLAIM)
        confirm(tmp_path / "c.sqlite", peer, 10**6)
    await register(store, "boaster", capacity=MAX_CAPACITY)
    # Its claim counts for nothing: it weighs a new key's NEW_WEIGHT beside the trusted keys'
    # OBSERVED_FLOOR (none was seen doing more yet): about 3% of the websites, not all.
    fair = reputation.NEW_WEIGHT / (reputation.NEW_WEIGHT + len(HONEST) * reputation.OBSERVED_FLOOR)
    first = await share_after_new_job(store, tmp_path / "c.sqlite", "boaster", "a", T0)
    assert 0 < first <= BOUND * fair

    # It does the work it was given, fast, and every report is accepted: work the store saw,
    # but nobody confirmed. Its weight, and its share, stay where they were.
    for lease in await lease_all(store, "boaster", T0):
        await report(store, "boaster", lease, T0 + 1)
    assert await share_after_new_job(store, tmp_path / "c.sqlite", "boaster", "b", T0 + 2) <= BOUND * fair

    # Other vantage points confirm its answers: it is trusted, and weighs what the honest do.
    confirm(tmp_path / "c.sqlite", "boaster", reputation.TRUSTED_AFTER)
    grown = await share_after_new_job(store, tmp_path / "c.sqlite", "boaster", "c", T0 + 3)
    assert first < grown <= BOUND / (len(HONEST) + 1)
    # More confirmed answers do not make its claim good: it was not seen doing more than the others.
    confirm(tmp_path / "c.sqlite", "boaster", 10**6)
    assert await share_after_new_job(store, tmp_path / "c.sqlite", "boaster", "d", T0 + 4) <= BOUND / (len(HONEST) + 1)


async def test_a_quarantined_key_gets_no_website_whatever_it_claims_earned_or_did(
    tmp_path: Path, store: SqlStore
) -> None:
    await register(store, "liar", capacity=MAX_CAPACITY)
    confirm(tmp_path / "c.sqlite", "liar", 10**6)
    await store.create_job("linkcheck", {"urls": [f"http://w{i}.test/" for i in range(5)], "depth": 0}, T0)
    await store.rebalance(T0)
    leases = await lease_all(store, "liar", T0)
    assert len(leases) == 5  # alone, it holds every website
    await report(store, "liar", leases[0], T0 + 1)  # work accepted
    for lease in leases[1 : 1 + reputation.MISREPORT_LIMIT]:  # then caught naming other versions
        answer = await store.report(
            "liar",
            Report(lease.unit_id, lease.token, 0, done(lease), bundle_version=f"not {version_of(lease)}"),
            T0 + 1,
        )
        assert not answer.accepted
    for peer in HONEST:
        await register(store, peer, T0 + 2, capacity=CLAIM)
    assert await share_after_new_job(store, tmp_path / "c.sqlite", "liar", "x", T0 + 2) == 0.0
    assert "liar" not in assigned(tmp_path / "c.sqlite").values()


async def test_a_trusted_key_weighs_what_it_was_seen_to_do_not_what_it_claims(tmp_path: Path, store: SqlStore) -> None:
    await register(store, "worker", capacity=MAX_CAPACITY)
    confirm(tmp_path / "c.sqlite", "worker", 10**6)
    for i in range(20):
        await store.create_job("linkcheck", {"urls": [f"http://big{i}.test/{n}" for n in range(1000)], "depth": 0}, T0)
    # Alone, it works through all 20,000 URLs in a few seconds: units grow to MAX_UNIT as its
    # throughput shows, and every host rests between units.
    now, checked = T0, 0
    while checked < 20_000:
        for lease in await lease_all(store, "worker", now):
            await report(store, "worker", lease, now + 1)
            checked += len(lease.payload["items"])
        now += 1 + REST
    for peer in HONEST:
        await register(store, peer, now, capacity=CLAIM)
        confirm(tmp_path / "c.sqlite", peer, 10**6)
    # Seen doing 20,000 URLs over the last OBSERVED_SECONDS (1.7 MB/s), it weighs twice that:
    # about as much as the three honest keys together, which were not seen working yet (each
    # weighs OBSERVED_FLOOR), and nowhere near its claim.
    share = await share_after_new_job(store, tmp_path / "c.sqlite", "worker", "e", now)
    assert 1 / (len(HONEST) + 1) < share < 0.6
