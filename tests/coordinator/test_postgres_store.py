"""The store on a real PostgreSQL: an installation moved from SQLite goes on where it was;
two coordinators' stores on one database never grant a unit twice; a lost connection is
made again; a database that is not ours is refused."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from psycopg import sql

from coordinator.api import make_app
from coordinator.seeder import BundleService
from coordinator.sql import SqlStore
from coordinator.sql.moving import move
from coordinator.store import OPERATOR, StoreError
from overlay.wire import Report, decode
from tests import postgres
from tests.coordinator.conftest import UNLIMITED, Clock, Linkcheck, Peer, add_linkcheck, item, version_of
from tests.coordinator.test_sqlite_store import LEASE, SITE, T0, answer, assert_site_checked_once, finish, register
from tests.processes import osaas


async def _status_and_rows(store: SqlStore, job_ids: list[int]) -> list[object]:
    return [(await store.job_status(job_id), await store.job_results(job_id, 0, 5000)) for job_id in job_ids]


async def test_a_sqlite_installation_moves_and_goes_on_where_it_was(
    tmp_path: Path, pg_cluster: postgres.Cluster, linkcheck: Linkcheck
) -> None:
    source = tmp_path / "c.sqlite"
    async with SqlStore(source, unit_size=2) as lite:
        await add_linkcheck(lite, linkcheck, T0)
        await lite.grant("alice", "a" * 64, "owner", OPERATOR, T0)
        await register(lite, "p1")
        done_job = await lite.create_job("linkcheck", {"urls": ["http://a.test/"], "depth": 3}, T0)
        now = await finish(lite, "p1", T0)
        running_job = await lite.create_job("linkcheck", {"urls": ["http://a.test/"], "depth": 3}, now)
        await lite.rebalance(now)
        (held,) = await lite.lease("p1", 1, ["linkcheck"], now, LEASE)  # leased when moved
        before = await _status_and_rows(lite, [done_job, running_job])
        grants, audit, bundles = await lite.grants(), await lite.audit_log(100), await lite.list_bundles()

    target = pg_cluster.database()
    moved = move(str(source), target)
    assert moved.rows["jobs"] == 2 and moved.rows["items"] > len(SITE)
    with pytest.raises(StoreError, match="is not empty"):
        move(str(source), target)

    async with SqlStore(target, unit_size=2) as pg:
        assert await _status_and_rows(pg, [done_job, running_job]) == before
        assert (await pg.grants(), await pg.audit_log(100), await pg.list_bundles()) == (grants, audit, bundles)
        # The lease held when it moved is still that peer's, with its token.
        first = held.payload["items"]
        report = Report(held.unit_id, held.token, 0, answer(held.payload), bundle_version=version_of(held))
        assert (await pg.report("p1", report, now)).accepted, first
        await finish(pg, "p1", now + 60)
        await assert_site_checked_once(pg, running_job)
        # The archives the file's coordinator kept on disk go into the database (the migrate
        # command does this), for the coordinators that will share it.
        here = BundleService(tmp_path / "c.bundles")
        assert await pg.bundle_archive("linkcheck", linkcheck.version) is None
        here.archive_dir("linkcheck", linkcheck.version).mkdir(parents=True)
        (here.archive_dir("linkcheck", linkcheck.version) / f"linkcheck-{linkcheck.version}.tar").write_bytes(
            linkcheck.archive
        )
        assert await here.share_archives(pg) == 1
        assert await pg.bundle_archive("linkcheck", linkcheck.version) == linkcheck.archive
        # New rows go on after the moved ones' ids.
        assert await pg.create_job("linkcheck", {"urls": ["http://c.test/"]}, now) == running_job + 1


async def test_two_stores_on_one_database_never_grant_a_unit_twice(
    pg_cluster: postgres.Cluster, linkcheck: Linkcheck
) -> None:
    """Two coordinators' stores on one database, and every peer asks both for work at once
    (as a peer failing over may): no URL and no website is ever in two live leases, every URL
    is reported once, and the job ends."""
    target = pg_cluster.database()
    hosts = [f"http://h{n}.test/" for n in range(30)]
    expected = sorted(f"{h}{p}" for h in hosts for p in range(4))
    async with SqlStore(target, unit_size=2, host_min_delay=0) as a, SqlStore(target, host_min_delay=0) as b:
        await add_linkcheck(a, linkcheck, T0)
        peers = ["p0", "p1"]
        for peer in peers:
            await register(a, peer)
        job_id = await a.create_job("linkcheck", {"urls": expected}, T0)
        rng = random.Random(7)
        now = T0
        for round in range(200):
            if round % 3 == 1 and len(peers) < 8:  # newcomers move websites between peers
                peers.append(f"p{len(peers)}")
                await register(b, peers[-1])
            await asyncio.gather(a.rebalance(now), b.rebalance(now))
            askers = [(peer, store) for peer in peers for store in (a, b)]
            answers = await asyncio.gather(*(store.lease(peer, 4, ["linkcheck"], now, LEASE) for peer, store in askers))
            granted = [(peer, lease) for (peer, _), leases in zip(askers, answers, strict=True) for lease in leases]
            live_urls = [i["url"] for _, lease in granted for i in lease.payload["items"]]
            assert len(live_urls) == len(set(live_urls)), "a URL in two live leases"
            live_hosts = [lease.payload["items"][0]["url"].split("/")[2] for _, lease in granted]
            assert len(live_hosts) == len(set(live_hosts)), "a website in two live leases"
            await asyncio.gather(
                *(
                    rng.choice((a, b)).report(
                        peer,
                        Report(
                            lease.unit_id,
                            lease.token,
                            0,
                            {"items": [item(i["url"]) for i in lease.payload["items"]]},
                            bundle_version=version_of(lease),
                        ),
                        now,
                    )
                    for peer, lease in granted
                )
            )
            status = await a.job_status(job_id)
            if status.state == "done":
                break
            now += 1 if granted else 5
        assert status.state == "done", status
        rows = await b.job_results(job_id, 0, 1000)
        assert sorted(row["url"] for row in rows) == expected
        assert all(row["result"] == "ok" for row in rows)


async def test_a_lost_connection_is_made_again(pg_cluster: postgres.Cluster, linkcheck: Linkcheck) -> None:
    target = pg_cluster.database()
    async with SqlStore(target) as store:
        await add_linkcheck(store, linkcheck, T0)
        with psycopg.connect(pg_cluster.uri(), autocommit=True) as admin:
            (ended,) = admin.execute(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'osaas-coordinator' AND datname = %s",
                (target.rsplit("/", 1)[1],),
            ).fetchone() or (0,)
        assert ended == 1
        assert [b.name for b in await store.list_bundles()] == ["linkcheck"]


async def test_a_database_of_other_tables_is_refused(pg_cluster: postgres.Cluster) -> None:
    target = pg_cluster.database()
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(StoreError, match=r"holds tables that are not an osaas store \(invoices"):
        async with SqlStore(target):
            pass
    with pytest.raises(StoreError, match="cannot connect to postgresql://osaas:\\*\\*\\*@127.0.0.1:1/"):
        async with SqlStore("postgresql://osaas:secret@127.0.0.1:1/none"):
            pass


async def test_the_migrate_command_moves_the_rows_and_the_coordinators_own_files(
    tmp_path: Path, pg_cluster: postgres.Cluster
) -> None:
    source, state = tmp_path / "c.sqlite", tmp_path / "state"
    owner = "b" * 64
    for args in (
        ("coordinator", "key", "--db", str(source)),
        ("coordinator", "owner", "add", "bob", owner, "--db", str(source)),
    ):
        code, _, err = await osaas(*args)
        assert code == 0, err
    (_, key, _) = await osaas("coordinator", "key", "--db", str(source))
    target = pg_cluster.database()
    code, _, err = await osaas(
        "coordinator", "migrate", "--from", str(source), "--to", target, "--state-dir", str(state)
    )
    assert (code, err) == (2, f"osaas: error: --state-dir {state} is not a directory\n")
    state.mkdir()
    code, out, err = await osaas(
        "coordinator", "migrate", "--from", str(source), "--to", target, "--state-dir", str(state)
    )
    assert code == 0, err
    assert f"from {source} to {target}" in out and "serve it with: osaas coordinator serve --db URI" in out
    # The same coordinator: its key and its grants, now read from PostgreSQL and the state dir.
    assert await osaas("coordinator", "key", "--db", target, "--state-dir", str(state)) == (0, key, "")
    code, out, err = await osaas("coordinator", "grant", "list", "--db", target)
    assert code == 0 and "bob" in out and owner in out, (out, err)
    code, _, err = await osaas(
        "coordinator", "migrate", "--from", str(source), "--to", target, "--state-dir", str(state)
    )
    assert code == 2 and "already there: give an empty --state-dir" in err, err
    code, _, err = await osaas("coordinator", "key", "--db", target)
    assert code == 2 and "give --state-dir DIR" in err, err
    code, _, err = await osaas(
        "coordinator", "migrate", "--from", str(source), "--to", str(tmp_path / "x.sqlite"), "--state-dir", str(state)
    )
    assert code == 2 and "is not a PostgreSQL URI" in err, err


async def test_a_database_gone_away_answers_503_until_it_is_back(
    pg_cluster: postgres.Cluster, linkcheck: Linkcheck, clock: Clock
) -> None:
    target = pg_cluster.database()
    name = target.rsplit("/", 1)[1]
    store = SqlStore(target)
    app = make_app(store, lease_seconds=LEASE, clock=clock, rate_limits=UNLIMITED)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        await add_linkcheck(store, linkcheck, clock())
        peer = Peer(client, clock, "alice")

        async def health() -> tuple[int, str]:
            async with client.get("/v1/health") as response:
                return response.status, decode(await response.read())["store"]

        assert await health() == (200, "ok")
        with psycopg.connect(pg_cluster.uri(), autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            status, said = await health()
            assert status == 503 and said.startswith(f"unreachable: cannot connect to {target}: "), said
            status, body = await peer.post("/v1/peers/register", {"name": "alice", "slots": 1, "workloads": ["*"]})
            assert (status, body["error"]["code"]) == (503, "store_unavailable"), body
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
        assert await health() == (200, "ok")
        await peer.register()
