"""The operator's dashboard on the real app and store: who may look (operator token, owner
token, public), what the pages show (jobs, peers, the bandwidth-share plot, politeness, broken
links) and the report downloads, all escaped."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator.api import make_app
from coordinator.dashboard import COOKIE, DashboardAccess, operator_token
from coordinator.sql import SqlStore
from overlay.identity import Identity
from tests.coordinator.conftest import (
    LEASE_SECONDS,
    Clock,
    Linkcheck,
    Peer,
    add_linkcheck,
    as_operator,
    item,
    publish_fingerprint,
    submit,
)

TOKEN = "operator-" + "x" * 40


@pytest.fixture
async def store(db_path: Path) -> SqlStore:
    return SqlStore(db_path, unit_size=3, max_attempts=3)


async def dashboard_client(store: SqlStore, clock: Clock, linkcheck: Linkcheck, public: bool = False) -> TestClient:
    app = make_app(store, lease_seconds=LEASE_SECONDS, clock=clock, dashboard_access=DashboardAccess(TOKEN, public))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    await add_linkcheck(store, linkcheck, clock())
    await as_operator(store, clock())
    return client


@pytest.fixture
async def board(store: SqlStore, clock: Clock, linkcheck: Linkcheck) -> AsyncIterator[TestClient]:
    client = await dashboard_client(store, clock, linkcheck)
    try:
        yield client
    finally:
        await client.close()


async def page(client: TestClient, path: str) -> tuple[int, str]:
    async with client.get(path, allow_redirects=True) as response:
        return response.status, await response.text()


async def test_looking_needs_a_token_that_then_stays_in_a_strict_cookie(board: TestClient, store: SqlStore) -> None:
    status, text = await page(board, "/dashboard/")
    assert status == 401 and "osaas coordinator dashboard" in text
    status, _ = await page(board, "/dashboard/?token=guess")
    assert status == 403
    async with board.get(f"/dashboard/?token={TOKEN}", allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/dashboard/"
        cookie = response.headers["Set-Cookie"]
        assert f"{COOKIE}={TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    board.session.cookie_jar.update_cookies({COOKIE: TOKEN})
    status, text = await page(board, "/dashboard/")
    assert status == 200 and "No jobs yet" in text
    # An owner's token works too; a token for a key that is not an owner's does not.
    owner = Identity.generate()
    await store.add_owner("alice", owner.public_hex, 1.0)
    access = DashboardAccess(TOKEN)
    board.session.cookie_jar.clear()
    assert (await page(board, f"/dashboard/?token={access.owner_token(owner.public_hex)}"))[0] == 200
    board.session.cookie_jar.clear()
    assert (await page(board, f"/dashboard/?token={access.owner_token(Identity.generate().public_hex)}"))[0] == 403


async def test_an_owners_dashboard_shows_its_own_jobs_only(board: TestClient, store: SqlStore) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    await store.add_owner("alice", alice.public_hex, 1.0)
    await store.add_owner("bob", bob.public_hex, 1.0)
    hers = await store.create_job("linkcheck", {"urls": ["http://alice.test/"]}, 2.0, owner_key=alice.public_hex)
    his = await store.create_job("linkcheck", {"urls": ["http://bob.test/"]}, 2.0, owner_key=bob.public_hex)
    access = DashboardAccess(TOKEN)
    assert (await page(board, f"/dashboard/?token={access.owner_token(alice.public_hex)}"))[0] == 200
    status, text = await page(board, "/dashboard/")
    assert status == 200 and f'data-job="{hers}"' in text and f'data-job="{his}"' not in text
    for path in (f"/dashboard/jobs/{his}", f"/dashboard/jobs/{his}/report.csv"):
        status, text = await page(board, path)
        assert status == 404 and "bob.test" not in text, path
    assert (await page(board, f"/dashboard/jobs/{hers}"))[0] == 200
    # A viewer's token shows every job.
    vera = Identity.generate()
    await store.grant("vera", vera.public_hex, "viewer", "operator", 3.0)
    board.session.cookie_jar.clear()
    status, text = await page(board, f"/dashboard/?token={access.owner_token(vera.public_hex)}")
    assert status == 200 and f'data-job="{hers}"' in text and f'data-job="{his}"' in text


async def test_a_deleted_job_shows_its_status_and_says_its_results_are_gone(
    board: TestClient, store: SqlStore, clock: Clock
) -> None:
    board.session.cookie_jar.update_cookies({COOKIE: TOKEN})
    job_id = await submit(board, ["http://a.test/"])
    await store.delete_job(job_id, "operator", clock())
    status, text = await page(board, f"/dashboard/jobs/{job_id}")
    assert status == 200 and "deleted" in text and "Its results and logs were deleted" in text
    status, _ = await page(board, f"/dashboard/jobs/{job_id}/report.json")
    assert status == 404


async def test_a_public_dashboard_needs_no_token(store: SqlStore, clock: Clock, linkcheck: Linkcheck) -> None:
    client = await dashboard_client(store, clock, linkcheck, public=True)
    try:
        assert (await page(client, "/dashboard/"))[0] == 200
    finally:
        await client.close()


async def test_the_pages_show_jobs_peers_shares_hosts_and_broken_links(board: TestClient, clock: Clock) -> None:
    board.session.cookie_jar.update_cookies({COOKIE: TOKEN})
    job_id = await submit(board, ["http://a.test/", "http://b.test/<script>"])
    peer = Peer(board, clock, "kitchen <b>")
    await peer.register()
    leases = await peer.lease(4)
    assert leases
    status, text = await page(board, "/dashboard/")
    assert status == 200
    assert f'data-job="{job_id}"' in text and "0/2 URLs" in text
    assert "kitchen &lt;b&gt;" in text and "<b>" not in text  # names are escaped
    assert "<svg" in text and 'class="offered"' in text  # the bandwidth-share plot
    assert "a.test:80" in text and "yes" in text  # a host leased now
    assert 'http-equiv="refresh"' in text  # running work: the page refreshes itself
    for lease in leases:
        urls = [i["url"] for i in lease["payload"]["items"]]
        results = [
            {
                **item(url, crawled=False),
                "status": 404 if "b.test" in url else 200,
                "result": "broken" if "b.test" in url else "ok",
                "error": "HTTP 404" if "b.test" in url else None,
            }
            for url in urls
        ]
        code, _ = await peer.report(lease, payload={"items": results})
        assert code == 200
    status, text = await page(board, f"/dashboard/jobs/{job_id}")
    assert status == 200 and "2/2 URLs" in text
    assert "http://b.test/&lt;script&gt;" in text and "<script>" not in text
    assert text.count('class="problem"') == 1 and "HTTP 404" in text  # the broken link only
    assert "(start URLs)" in text  # listed under the page that holds it: none, it was a start URL
    assert 'http-equiv="refresh"' not in text  # done: it stays still

    async with board.get(f"/dashboard/jobs/{job_id}/report.csv") as response:
        assert response.status == 200 and "attachment" in response.headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert {r["url"]: r["result"] for r in rows} == {"http://a.test/": "ok", "http://b.test/<script>": "broken"}
    async with board.get(f"/dashboard/jobs/{job_id}/report.json") as response:
        lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert sorted(line["url"] for line in lines) == ["http://a.test/", "http://b.test/<script>"]
    async with board.get(f"/dashboard/jobs/{job_id}/report.html") as response:
        assert "http://b.test/&lt;script&gt;" in await response.text()
    assert (await page(board, "/dashboard/jobs/999"))[0] == 404
    assert (await page(board, f"/dashboard/jobs/{job_id}/report.exe"))[0] == 404


async def test_a_workload_without_renderers_offers_its_records_as_json_lines_and_csv(
    board: TestClient, store: SqlStore, clock: Clock, tmp_path: Path
) -> None:
    board.session.cookie_jar.update_cookies({COOKIE: TOKEN})
    await publish_fingerprint(store, tmp_path)
    job_id = await store.create_job("fingerprint", {"urls": ["http://a.test/=1+1"]}, clock())
    peer = Peer(board, clock, "p")
    await peer.register()
    status, body = await peer.post("/v1/leases", {"max_units": 1, "workloads": ["fingerprint"]})
    (lease,) = body["leases"]
    record = {"url": "http://a.test/=1+1", "status": 200, "length": 3, "sha256": "<b>ab</b>"}
    assert (await peer.report(lease, payload={"items": [record]}))[1]["accepted"] is True
    status, text = await page(board, f"/dashboard/jobs/{job_id}")
    assert status == 200 and "1/1 URLs" in text and "1 done" in text
    assert "report.json" in text and "report.csv" in text and "report.html" not in text and "Problems" not in text
    async with board.get(f"/dashboard/jobs/{job_id}/report.csv") as response:
        assert await response.text() == "url,status,length,sha256,failed\r\nhttp://a.test/=1+1,200,3,<b>ab</b>,\r\n"
    async with board.get(f"/dashboard/jobs/{job_id}/report.json") as response:
        assert [json.loads(line) for line in (await response.text()).splitlines()] == [{**record, "failed": None}]
    status, text = await page(board, f"/dashboard/jobs/{job_id}/report.html")
    assert status == 404 and "the fingerprint workload has no html renderer" in text


def test_the_operator_token_is_kept_beside_the_database_for_its_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    token = operator_token(db)
    assert len(token) >= 32 and operator_token(db) == token
    assert (tmp_path / "c.sqlite.dashboard-token").stat().st_mode & 0o777 == 0o600
    assert DashboardAccess(token).owner_token("ab" * 32) != DashboardAccess("other" * 10).owner_token("ab" * 32)
