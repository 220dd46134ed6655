"""The SQLite store directly: crash safety, reopening, and a random-schedule property."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.host_pacing import DEFAULT_MIN_DELAY as REST
from coordinator.sql import SqlStore, peers
from coordinator.store import StaleLease, StoreError, UnknownPeer
from overlay import http
from overlay.identity import Identity
from overlay.wire import RegisterRequest, Report
from tests.coordinator.conftest import Linkcheck, add_linkcheck, item, version_of

T0 = 1000.0
LEASE = 60.0
SITE = {  # page -> its links; everything under http://a.test plus one outside
    "http://a.test/": ["http://a.test/1", "http://a.test/2", "http://b.test/"],
    "http://a.test/1": ["http://a.test/", "http://a.test/3"],
    "http://a.test/2": ["http://a.test/3", "http://a.test/4"],
    "http://a.test/3": ["http://a.test/1"],
    "http://a.test/4": [],
    "http://b.test/": ["http://b.test/never"],
}


def answer(payload: dict[str, Any]) -> dict[str, Any]:
    """What an honest workload reports for a unit of the SITE."""
    return {
        "items": [item(i["url"], SITE[i["url"]] if i["crawl"] else [], crawled=i["crawl"]) for i in payload["items"]]
    }


def _outcome(row: dict[str, Any]) -> dict[str, Any]:
    """A result without its referrers, which grow as more pages are crawled."""
    return {k: v for k, v in row.items() if k != "referrers"}


def _finished(row: dict[str, Any]) -> bool:
    """Reported by the workload, or given up on by the platform."""
    return row["result"] is not None or row["failed"] is not None


async def register(store: SqlStore, peer: str) -> None:
    await store.register_peer(peer, RegisterRequest(name=peer, slots=4, workloads=["linkcheck"]), T0)


async def finish(store: SqlStore, peer: str, now: float) -> float:
    """Lease and honestly report until nothing is left, rebalancing as the coordinator's
    background task would and letting each host rest between its units; the time it ends."""
    while True:
        await store.rebalance(now)
        leases = await store.lease(peer, 8, ["linkcheck"], now, LEASE)
        if not leases:
            return now
        for lease in leases:
            await store.report(
                peer,
                Report(lease.unit_id, lease.token, 0, answer(lease.payload), bundle_version=version_of(lease)),
                now,
            )
        now += REST


async def assert_site_checked_once(store: SqlStore, job_id: int) -> None:
    rows = await store.job_results(job_id, 0, 5000)
    urls = [r["url"] for r in rows]
    assert sorted(urls) == sorted(SITE)
    assert len(urls) == len(set(urls))
    assert all(r["result"] == "ok" for r in rows)
    status = await store.job_status(job_id)
    assert (status.state, status.items_total, status.items_done, status.counts) == ("done", 6, 6, {"ok": 6})


async def test_store_abandoned_mid_job_is_picked_up_by_a_fresh_store(tmp_path: Path, linkcheck: Linkcheck) -> None:
    path = tmp_path / "c.sqlite"
    abandoned = SqlStore(path, unit_size=2)
    await abandoned.open()
    await add_linkcheck(abandoned, linkcheck)
    await register(abandoned, "p1")
    job_id = await abandoned.create_job("linkcheck", {"urls": ["http://a.test/"], "depth": None}, T0)
    (first,) = await abandoned.lease("p1", 1, ["linkcheck"], T0, LEASE)
    await abandoned.report(
        "p1", Report(first.unit_id, first.token, 0, answer(first.payload), bundle_version=version_of(first)), T0
    )
    held = await abandoned.lease("p1", 8, ["linkcheck"], T0 + REST, LEASE)
    assert sorted(len(lease.payload["items"]) for lease in held) == [1, 2]  # b.test/, and a.test/1 + /2
    try:
        # No close: the first store just stops, as a killed process would.
        fresh = SqlStore(path, unit_size=2)
        async with fresh:
            assert (await fresh.job_status(job_id)).items_done == 1
            end = await finish(fresh, "p1", T0 + REST + LEASE + REST)
            await assert_site_checked_once(fresh, job_id)
            # The lease taken before the "crash" was re-leased: its late report is stale.
            stale = Report(
                held[0].unit_id, held[0].token, 0, answer(held[0].payload), bundle_version=version_of(held[0])
            )
            with pytest.raises(StaleLease):
                await fresh.report("p1", stale, end)
    finally:
        await abandoned.close()


_SERVER = """
import asyncio, sys
from pathlib import Path
from coordinator.api import serve
asyncio.run(serve(
    "127.0.0.1", 0, Path(sys.argv[1]), unit_size=2, operator_keys=[sys.argv[2]], ready=lambda port: print(port, flush=True)
))
"""


async def test_coordinator_killed_mid_job_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    identity = Identity.generate()  # a peer's, and the operator's, who submits the job
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SERVER,
        str(path),
        identity.public_hex,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, "coordinator subprocess did not start"
        port = int(line)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:

            async def call(path: str, obj: Any) -> Any:
                return await http.call(session, "POST", base, path, obj, identity=identity)

            job_id = (await call("/v1/jobs", {"workload": "linkcheck", "input": {"urls": ["http://a.test/"]}}))[
                "job_id"
            ]
            await call("/v1/peers/register", {"name": "p", "slots": 1, "workloads": ["linkcheck"]})
            for _ in range(100):  # the coordinator's first plan settles a moment (host_planning.settled)
                leases = (await call("/v1/leases", {"max_units": 1, "workloads": ["linkcheck"]}))["leases"]
                if leases:
                    break
                await asyncio.sleep(0.1)
            (lease,) = leases
            report = {
                "unit_id": lease["unit_id"],
                "token": lease["token"],
                "bundle_version": version_of(lease),
                "exit_code": 0,
                "payload": answer(lease["payload"]),
            }
            assert await call("/v1/reports", report) == {"accepted": True, "reason": ""}
            await call("/v1/leases", {"max_units": 1, "workloads": ["linkcheck"]})
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    peer = identity.public_hex
    async with SqlStore(path, unit_size=2) as store:
        status = await store.job_status(job_id)
        assert (status.items_done, status.items_total) == (1, 4)
        await finish(store, peer, time.time() + LEASE)
        await assert_site_checked_once(store, job_id)


# ---- property: any interleaving of peers, expiries and retries reports every URL once --

_step = st.one_of(
    st.tuples(st.just("lease"), st.sampled_from(("p1", "p2")), st.integers(1, 3)),
    st.tuples(st.just("report"), st.integers(0, 50), st.sampled_from((0, 0, 1, 2, 3))),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("advance"), st.sampled_from((10.0, 61.0))),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_step, max_size=25))
async def test_any_schedule_reports_every_url_exactly_once(
    tmp_path_factory: Any, linkcheck: Linkcheck, steps: list[tuple]
) -> None:
    path = tmp_path_factory.mktemp("prop") / "c.sqlite"
    async with SqlStore(path, unit_size=2, max_attempts=3) as store:
        await add_linkcheck(store, linkcheck)
        for peer in ("p1", "p2"):
            await register(store, peer)
        job_id = await store.create_job("linkcheck", {"urls": ["http://a.test/", "http://a.test/2"], "depth": None}, T0)
        now = T0
        issued: list[tuple[str, Any]] = []
        finished: dict[str, dict[str, Any]] = {}
        for step in steps:
            if step[0] == "lease":
                issued += [(step[1], lease) for lease in await store.lease(step[1], step[2], ["linkcheck"], now, LEASE)]
            elif step[0] == "advance":
                now += step[1]
            elif issued:
                peer, lease = issued[step[1] % len(issued)]
                payload = answer(lease.payload)
                if step[0] == "report" and step[2] == 1:
                    payload["items"] = payload["items"][:1]
                try:
                    if step[0] == "release":
                        await store.release(peer, lease.unit_id, lease.token, now)
                    else:
                        await store.report(
                            peer,
                            Report(lease.unit_id, lease.token, step[2], payload, "x", bundle_version=version_of(lease)),
                            now,
                        )
                except StaleLease:
                    pass
                rows = {r["url"]: r for r in await store.job_results(job_id, 0, 5000) if _finished(r)}
                # A finished result is never overwritten, whoever reports what afterwards.
                assert {u: _outcome(rows[u]) for u in finished} == {u: _outcome(r) for u, r in finished.items()}
                finished = rows
        await finish(store, "p1", now + 10 * LEASE)
        results = await store.job_results(job_id, 0, 5000)
        urls = [r["url"] for r in results]
        assert len(urls) == len(set(urls))
        assert all(_finished(r) for r in results)
        assert (await store.job_status(job_id)).state == "done"


async def test_unusable_files_are_refused_in_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"^cannot open database .*garbage\.sqlite: file is not a database$"):
        await SqlStore(garbage).open()

    newer = tmp_path / "newer.sqlite"
    async with SqlStore(newer):
        pass
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match=r"was written by a newer osaas \(schema 99\); upgrade osaas$"):
        await SqlStore(newer).open()


async def test_an_empty_or_damaged_file_is_refused_and_left_as_it_was(tmp_path: Path, linkcheck: Linkcheck) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(StoreError, match=r"empty\.sqlite is empty \(0 bytes\), not an osaas database: restore"):
        await SqlStore(empty).open()
    assert empty.stat().st_size == 0  # never replaced by a new database

    damaged = tmp_path / "damaged.sqlite"
    async with SqlStore(damaged) as store:
        await add_linkcheck(store, linkcheck)
        for _ in range(3):
            await store.create_job("linkcheck", {"urls": [f"http://a.test/{i}" for i in range(1000)]}, T0)
    size = damaged.stat().st_size
    with damaged.open("r+b") as f:  # a page in the middle overwritten, as by a bad disk or copy
        f.seek(size // 2)
        f.write(bytes(range(256)) * 16)
    before = damaged.read_bytes()
    with pytest.raises(StoreError, match=r"damaged\.sqlite is damaged \(.+\): restore it from a backup"):
        await SqlStore(damaged).open()
    assert damaged.read_bytes() == before


async def test_reopening_keeps_everything(tmp_path: Path, linkcheck: Linkcheck) -> None:
    path = tmp_path / "c.sqlite"
    async with SqlStore(path) as store:
        await add_linkcheck(store, linkcheck)
        job_id = await store.create_job("linkcheck", {"urls": ["http://a.test/"], "depth": 0}, T0)
        before = await store.job_status(job_id)
    async with SqlStore(path) as store:
        assert await store.job_status(job_id) == before
        assert [j.job_id for j in await store.list_jobs()] == [job_id]


async def test_peers_quiet_for_a_week_are_forgotten_and_may_come_back(tmp_path: Path, linkcheck: Linkcheck) -> None:
    # Keys cost nothing: a table of every key that ever registered would only grow.
    async with SqlStore(tmp_path / "c.sqlite") as store:
        await add_linkcheck(store, linkcheck)
        await register(store, "gone")
        week_later = T0 + peers.FORGET_AFTER + 1
        await store.register_peer("here", RegisterRequest(name="here", slots=4, workloads=["linkcheck"]), week_later)
        await store.rebalance(week_later)
        assert await store.peer_count() == 1
        assert [p.peer_id for p in await store.peers_overview(0.0, 10)] == ["here"]
        with pytest.raises(UnknownPeer):
            await store.lease("gone", 1, ["linkcheck"], week_later, 60.0)
        await store.register_peer("gone", RegisterRequest(name="gone", slots=4, workloads=["linkcheck"]), week_later)
        assert await store.peer_count() == 2


@pytest.mark.parametrize("settle", [0.0, 3.0])
async def test_peers_started_together_all_get_work_once_the_first_plan_settled(
    tmp_path: Path, linkcheck: Linkcheck, settle: float
) -> None:
    # Measured across hosts: the first of six peers to register was given every website, leased
    # a unit of each and kept them; three others waited 34-44 s for their first unit.
    async with SqlStore(tmp_path / "c.sqlite", settle=settle) as store:
        await add_linkcheck(store, linkcheck)
        await store.create_job("linkcheck", {"urls": [f"http://site{i}.test/" for i in range(6)]}, T0)
        first: list[int] = []
        for i in range(6):  # they register a third of a second apart, each asking for work at once
            now = T0 + i / 3
            peer = f"peer-{i}"
            await store.register_peer(peer, RegisterRequest(name=peer, slots=6, workloads=["linkcheck"]), now)
            first.append(len(await store.lease(peer, 6, ["linkcheck"], now, 60.0)))
        later = T0 + 3.5
        await store.rebalance(later)
        second = [len(await store.lease(f"peer-{i}", 6, ["linkcheck"], later, 60.0)) for i in range(6)]
    if settle:
        assert first == [0] * 6 and second == [1] * 6  # every peer has a website within seconds
    else:
        assert first[0] == 6 and sum(second) == 0  # the first peer took them all (as before)


async def test_schema_7_keeps_the_version_its_last_rollback_named(tmp_path: Path, linkcheck: Linkcheck) -> None:
    path = tmp_path / "seven.sqlite"
    async with SqlStore(path) as store:
        await add_linkcheck(store, linkcheck)
    version = linkcheck.version
    with sqlite3.connect(path) as conn:  # as schema 7 left a rollout the coordinator rolled back
        conn.execute("ALTER TABLE bundles DROP COLUMN rolled_back")
        conn.executescript(  # and without schema 9's job models and unit logs, nor 10's vantage points
            # (15's indexes first: they name columns of 14)
            "ALTER TABLE peers DROP COLUMN observed_items; ALTER TABLE peers DROP COLUMN observed_at; DROP TABLE archives;"
            " DROP INDEX items_open_by_host; DROP INDEX items_checked_by_host;"
            " CREATE INDEX items_by_host ON items(unit_key, job_id, id);"
            " DROP TABLE unit_logs; ALTER TABLE jobs DROP COLUMN model;"
            " ALTER TABLE items DROP COLUMN record; ALTER TABLE items DROP COLUMN failed;"
            " DROP INDEX jobs_with_vantage; ALTER TABLE jobs DROP COLUMN vantage;"
            " ALTER TABLE units DROP COLUMN replica;"
            " ALTER TABLE units DROP COLUMN network;"
            # and with the link-check columns schema 12 made records of
            " ALTER TABLE items ADD COLUMN status INTEGER; ALTER TABLE items ADD COLUMN final_url TEXT;"
            " ALTER TABLE items ADD COLUMN redirects BLOB; ALTER TABLE items ADD COLUMN error TEXT;"
            # and without 13's trust columns
            " ALTER TABLE hosts DROP COLUMN delay_claim; ALTER TABLE hosts DROP COLUMN claimed_by;"
            " ALTER TABLE units DROP COLUMN version; ALTER TABLE peers DROP COLUMN misreports;"
            " ALTER TABLE peers DROP COLUMN agreed; ALTER TABLE peers DROP COLUMN outvoted;"
            " ALTER TABLE peers DROP COLUMN known_right; ALTER TABLE peers DROP COLUMN known_wrong;"
            " ALTER TABLE peers DROP COLUMN quarantined;"
            # and without 14's re-checks
            " DROP INDEX jobs_rechecks; ALTER TABLE jobs DROP COLUMN recheck_of; DROP TABLE answers; DROP TABLE plants;"
            " ALTER TABLE items DROP COLUMN verdict; ALTER TABLE items DROP COLUMN asked_at;"
            " ALTER TABLE peers DROP COLUMN network;"
            # and with the referrers before 15
            " DROP TABLE referrers; ALTER TABLE items DROP COLUMN more_referrers;"
            " ALTER TABLE items DROP COLUMN answerer; DROP TABLE keys;"
            " ALTER TABLE jobs DROP COLUMN deleted_at; ALTER TABLE jobs DROP COLUMN summary;"
            " CREATE TABLE referrers (job_id INTEGER NOT NULL REFERENCES jobs(id),"
            " item_id INTEGER NOT NULL REFERENCES items(id), referrer_url TEXT NOT NULL,"
            " UNIQUE (job_id, item_id, referrer_url));"
        )
        conn.execute(
            "INSERT INTO bundles (name, version, owner_key, info_hash, archive_sha256, manifest, published_at)"
            " SELECT name, 'x', owner_key, info_hash, archive_sha256, manifest, published_at FROM bundles"
        )
        conn.execute(
            "UPDATE rollouts SET state = 'rolled_back', message = ?",
            (f"rolled back linkcheck {version}: 5 of 5 units failed (100%) vs 0 of 0 (0%) for x",),
        )
        conn.execute("PRAGMA user_version=7")
    conn.close()
    async with SqlStore(path) as store:
        status = await store.bundle_status("linkcheck")
    assert {v.version: v.rolled_back for v in status.versions} == {version: True, "x": False}
