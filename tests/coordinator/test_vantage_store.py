"""Vantage jobs through the SQLite store: every URL from K peers of K networks, as the
coordinator sees their connections; never two live leases on one website; fewer networks
than K end in rows that say so rather than a job that never ends."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coordinator.sql import SqlStore, schema
from coordinator.store import InvalidInput
from coordinator.vantage import VantageRules
from overlay.wire import Lease, RegisterRequest, Report
from tests.coordinator.conftest import publish_source, version_of
from workloads.builtin import LINKCHECK, PROBE, stage_builtin

T0 = 1000.0
LEASE = 60.0
WAIT = 120.0
# peer -> the address its requests come from: a and b share 10.1.0.0/16.
PEERS = {"a": "10.1.0.5", "b": "10.1.200.9", "c": "10.2.0.1", "d": "2001:db8:7::1"}
NETWORK = {"a": "10.1.0.0/16", "b": "10.1.0.0/16", "c": "10.2.0.0/16", "d": "2001:db8:7::/48"}
FIELDS = (
    "status error address dns connect tls first_byte total tls_version cert_issuer cert_expires location"
    " body_sha256 body_bytes"
).split()


@pytest.fixture
async def store(tmp_path: Path, db_path: Path | str) -> AsyncIterator[SqlStore]:
    async with SqlStore(db_path, host_min_delay=0.0, vantage=VantageRules(wait=WAIT)) as opened:
        await publish_source(opened, stage_builtin(PROBE, tmp_path / "probe"), tmp_path / "dist", T0)
        for peer in PEERS:
            await opened.register_peer(peer, RegisterRequest(peer, 4, ["*"]), T0)
        yield opened


def record(url: str, peer: str) -> dict[str, object]:
    """What a vantage point reports; `address` says who it claims to be (not trusted)."""
    return {"url": url, **dict.fromkeys(FIELDS), "status": 200, "address": peer, "truncated": False}


async def lease(store: SqlStore, peer: str, now: float) -> list[Lease]:
    return await store.lease(peer, 8, ["*"], now, LEASE, address=PEERS[peer])


async def report(store: SqlStore, peer: str, granted: Lease, now: float) -> None:
    items = [record(item["url"], peer) for item in granted.payload["items"]]
    response = await store.report(
        peer, Report(granted.unit_id, granted.token, 0, {"items": items}, bundle_version=version_of(granted)), now
    )
    assert response.accepted, response.reason


async def test_each_url_is_answered_from_k_networks_one_website_holder_at_a_time(store: SqlStore) -> None:
    urls = ["http://a.test/1", "http://a.test/2", "http://b.test/1"]
    job_id = await store.create_job(PROBE, {"urls": urls, "vantage": 3}, T0)
    now = T0
    live: dict[str | None, tuple[str, Lease]] = {}
    units_of: dict[str, int] = {}
    for _ in range(40):  # rounds of every peer asking, then reporting what it holds
        now += 1.0
        for peer in PEERS:
            for granted in await lease(store, peer, now):
                host = granted.host
                assert host not in live, f"two live leases on {host}"
                live[host] = (peer, granted)
        for host, (peer, granted) in list(live.items()):
            units_of[peer] = units_of.get(peer, 0) + 1
            await report(store, peer, granted, now)
            del live[host]
        if (await store.job_status(job_id)).state == "done":
            break
    assert (await store.job_status(job_id)).state == "done"
    rows = await store.job_results(job_id, 0, 100)
    assert await store.job_columns(job_id) == ["url", "network", *FIELDS, "truncated", "failed"]
    by_url: dict[str, list[str]] = {}
    for row in rows:
        assert row["failed"] is None and row["status"] == 200
        # The network is the coordinator's view of the connection, whatever the record says.
        peer = row["address"]
        assert row["network"] == NETWORK[peer]
        by_url.setdefault(row["url"], []).append(row["network"])
    assert sorted(by_url) == sorted(urls)
    # 3 replicas x 2 websites: six units, none to both a and b (one network).
    assert sum(units_of.values()) == 6 and not ("a" in units_of and "b" in units_of)
    for networks in by_url.values():
        assert len(networks) == 3 and len(set(networks)) == 3  # three vantage points, three networks


async def test_fewer_networks_than_asked_for_end_in_rows_that_say_so(store: SqlStore) -> None:
    job_id = await store.create_job(PROBE, {"urls": ["http://a.test/"], "vantage": 4}, T0)
    now = T0
    for _ in range(10):
        now += 1.0
        for peer in PEERS:
            for granted in await lease(store, peer, now):
                await report(store, peer, granted, now)
    assert (await store.job_status(job_id)).state == "running"  # three networks answered; a fourth may come
    await store.rebalance(now + WAIT + 1)
    status = await store.job_status(job_id)
    assert status.state == "done" and status.items_done == 4
    rows = await store.job_results(job_id, 0, 10)
    answered = [row for row in rows if row["failed"] is None]
    assert sorted(row["network"] for row in answered) == sorted({*NETWORK.values()})
    (missing,) = [row for row in rows if row["failed"] is not None]
    assert missing["network"] is None and missing["status"] is None
    assert missing["failed"] == (
        "no vantage point left: 3 of 4 networks took this website's items;"
        f" none of another network came within {WAIT:g} s"
    )


async def test_a_peer_in_two_networks_is_one_vantage_point(store: SqlStore) -> None:
    job_id = await store.create_job(PROBE, {"urls": ["http://a.test/"], "vantage": 2}, T0)
    # Peer a over IPv4, then over IPv6: two networks, one machine.
    (first,) = await store.lease("a", 8, ["*"], T0 + 1, LEASE, address=PEERS["a"])
    await report(store, "a", first, T0 + 1)
    assert await store.lease("a", 8, ["*"], T0 + 2, LEASE, address="2001:db8:99::1") == []
    (second,) = await lease(store, "c", T0 + 2)
    await report(store, "c", second, T0 + 2)
    rows = await store.job_results(job_id, 0, 10)
    assert sorted(row["network"] for row in rows) == [NETWORK["a"], NETWORK["c"]]


async def test_a_job_without_vantage_points_refuses_a_vantage_count(store: SqlStore, tmp_path: Path) -> None:
    await publish_source(store, stage_builtin(LINKCHECK, tmp_path / "lc"), tmp_path / "lc-dist", T0)
    with pytest.raises(InvalidInput, match="does not ask for vantage points"):
        await store.create_job(LINKCHECK, {"urls": ["http://a.test/"], "vantage": 3}, T0)
    with pytest.raises(InvalidInput, match=r"input.vantage must be an integer 1..16"):
        await store.create_job(PROBE, {"urls": ["http://a.test/"], "vantage": 17}, T0)


async def test_a_schema_9_file_keeps_its_items_and_their_referrers(tmp_path: Path) -> None:
    path = tmp_path / "nine.sqlite"
    with sqlite3.connect(path) as conn:  # a file as schema 9 left it, with a crawl under way
        conn.executescript(schema.SCHEMA + "".join(schema.MIGRATIONS[v] for v in range(2, 10)))
        conn.execute(
            "INSERT INTO jobs (id, workload, input, state, created_at, unit_size) VALUES (4, 'linkcheck', x'80',"
            " 'running', 1.0, 10)"
        )
        conn.executemany(
            "INSERT INTO items (id, job_id, url, unit_key, depth, crawl, done, record) VALUES (?, 4, ?, ?, ?, 1, ?, ?)",
            [
                (7, "http://a.test/", "http://a.test:80", 0, 1, b"\x90"),
                (9, "http://a.test/b", "http://a.test:80", 1, 0, None),
            ],
        )
        conn.execute("INSERT INTO referrers (job_id, item_id, referrer_url) VALUES (4, 9, 'http://a.test/')")
        conn.execute("PRAGMA user_version = 9")
    conn.close()
    async with SqlStore(path):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
        assert conn.execute(
            "SELECT id, url, depth, done, record, replica, network FROM items ORDER BY id"
        ).fetchall() == [
            (7, "http://a.test/", 0, 1, b"\x90", 0, None),
            (9, "http://a.test/b", 1, 0, None, 0, None),
        ]
        assert conn.execute(
            "SELECT items.url FROM referrers JOIN items ON items.id = referrers.item_id"
        ).fetchall() == [("http://a.test/b",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        # A URL once per job and vantage point now.
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO items (job_id, url, unit_key, depth, crawl) VALUES (4, 'http://a.test/', 'k', 0, 0)"
            )
        conn.execute(
            "INSERT INTO items (job_id, url, unit_key, depth, crawl, replica) VALUES (4, 'http://a.test/', 'k', 0, 0, 1)"
        )
    conn.close()
