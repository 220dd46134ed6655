"""The coordinator's /metrics (Prometheus text, parsed with prometheus_client's own parser) and
its health check, over loopback HTTP with a real SQLite store."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from coordinator.api import make_app
from coordinator.dashboard import DashboardAccess
from coordinator.sql import SqlStore
from coordinator.store import StoreError
from overlay.wire import decode
from tests.coordinator.conftest import (
    LEASE_SECONDS,
    UNLIMITED,
    Clock,
    Linkcheck,
    Peer,
    add_linkcheck,
    as_operator,
    get,
    item,
    submit,
)

TOKEN = "operator-" + "m" * 40
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _client(store: SqlStore, clock: Clock, linkcheck: Linkcheck, public: bool = False) -> TestClient:
    app = make_app(
        store,
        lease_seconds=LEASE_SECONDS,
        clock=clock,
        dashboard_access=DashboardAccess(TOKEN, public),
        rate_limits=UNLIMITED,
    )
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    await add_linkcheck(store, linkcheck, clock())
    await as_operator(store, clock())
    return client


@pytest.fixture
async def watched(db_path: Path, clock: Clock, linkcheck: Linkcheck) -> AsyncIterator[TestClient]:
    client = await _client(SqlStore(db_path, unit_size=3, max_attempts=3), clock, linkcheck)
    try:
        yield client
    finally:
        await client.close()


async def scrape(client: TestClient, token: str | None = TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.get("/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_metrics_count_leases_reports_store_calls_and_the_queue(watched: TestClient, clock: Clock) -> None:
    peer = Peer(watched, clock, "alice")
    register = {"name": "alice", "slots": 4, "workloads": ["*"], "capacity": 250_000.0}
    assert (await peer.post("/v1/peers/register", register))[0] == 200
    job_id = await submit(watched, ["http://a.test/", "http://a.test/x", "http://b.test/", "http://c.test/"])
    before = await scrape(watched)
    assert value(before, "osaas_units_leased_total") == 0
    assert value(before, "osaas_items_pending") == 4
    assert value(before, "osaas_units_open", state="leased") == 0
    assert value(before, "osaas_store_up") == 1

    leases = await peer.lease(max_units=3)
    assert len(leases) == 3
    first, second, third = leases
    assert (await peer.report(first, payload={"items": [item(u) for u in _urls(first)]}))[0] == 200
    assert (await peer.report(second, exit_code=1, error="the workload crashed"))[0] == 200
    stale = dict(third, token=third["token"] + 7)
    assert (await peer.report(stale))[0] == 409

    after = await scrape(watched)
    assert value(after, "osaas_units_leased_total") == 3
    assert value(after, "osaas_units_reported_total", outcome="done") == 1
    assert value(after, "osaas_units_reported_total", outcome="failed") == 1
    assert value(after, "osaas_units_reported_total", outcome="refused") == 1
    assert value(after, "osaas_units_open", state="leased") == 1  # the third, still out
    assert value(after, "osaas_items_pending") == 2  # the failed unit's, queued again, and the third's
    assert value(after, "osaas_peers") == 1
    # Per peer, labelled by its key's first 16 hex digits: the rate it said it can sustain.
    assert value(after, "osaas_peer_capacity_bytes_per_second", peer=peer.identity.public_hex[:16]) == 250_000
    # Store calls by name, and planning (a registration and a new job both plan).
    assert value(after, "osaas_store_call_seconds_count", call="lease") == 1
    assert value(after, "osaas_store_call_seconds_count", call="report") == 3
    assert value(after, "osaas_plan_seconds_count") >= 1
    # Requests by route pattern, not path: job ids never make a series each.
    assert value(after, "osaas_http_requests_total", route="/v1/reports", method="POST", status="409") == 1
    await get(watched, f"/v1/jobs/{job_id}")
    for method in ("BREW", "PROPFIND", "X1"):  # anyone may send any method: one series for them all
        async with watched.request(method, "/v1/health") as response:
            assert 400 <= response.status < 500
    again = await scrape(watched)
    methods = {dict(labels).get("method") for (name, labels) in again if name == "osaas_http_requests_total"}
    assert methods <= {"GET", "POST", "other"} and {"GET", "POST"} <= methods
    routes = {dict(labels).get("route") for (name, labels) in again if name == "osaas_http_requests_total"}
    assert "/v1/jobs/{job_id}" in routes and f"/v1/jobs/{job_id}" not in routes


def _urls(lease: dict[str, object]) -> list[str]:
    payload = lease["payload"]
    assert isinstance(payload, dict)
    return [i["url"] for i in payload["items"]]


async def test_metrics_need_the_operators_token_unless_the_dashboard_is_public(
    watched: TestClient, tmp_path: Path, clock: Clock, linkcheck: Linkcheck
) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        async with watched.get("/metrics", headers=headers) as response:
            assert response.status == 401
            assert "operator's token" in await response.text()
    assert value(await scrape(watched), "osaas_store_up") == 1

    public = await _client(SqlStore(tmp_path / "public.sqlite"), clock, linkcheck, public=True)
    try:
        assert value(await scrape(public, token=None), "osaas_store_up") == 1
    finally:
        await public.close()


async def test_health_says_503_when_the_store_process_is_gone(
    db_path: Path, clock: Clock, linkcheck: Linkcheck
) -> None:
    store = SqlStore(db_path, own_process=True)
    client = await _client(store, clock, linkcheck)
    try:
        async with client.get("/v1/health") as response:
            assert (response.status, decode(await response.read())["store"]) == (200, "ok")
        (child,) = [p for p in multiprocessing.active_children() if p.name == "sqlite-store"]
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        async with client.get("/v1/health") as response:
            body = decode(await response.read())
        assert response.status == 503
        assert body["ok"] is False
        assert body["store"] == "unreachable: the store process ended (exit code -9)"
        async with client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200  # the counters still, and the store's state
            text = await response.text()
        assert "osaas_store_up 0.0" in text
    finally:
        with contextlib.suppress(StoreError):  # closing says again that the store process is gone
            await client.close()
