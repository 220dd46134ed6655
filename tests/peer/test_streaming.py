"""A running unit's streamed items on their way to a real coordinator (loopback HTTP, a real
SQLite store): delivered in batches under the lease, held within bounds while it is away,
and a refusal ends the unit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from coordinator.api import make_app
from coordinator.sql import SqlStore
from overlay import wire
from overlay.identity import Identity
from peer import streaming
from peer.client import CoordinatorClient
from peer.streaming import ItemStreamer
from tests.coordinator.conftest import UNLIMITED, Linkcheck, add_linkcheck, item
from tests.sites import free_port
from workloads.builtin import build_linkcheck

URLS = ["http://a.test/", "http://a.test/x", "http://a.test/y"]


@dataclass
class Leased:
    store: SqlStore
    client: CoordinatorClient
    lease: wire.Lease
    job_id: int


@pytest.fixture(scope="module")
def linkcheck(tmp_path_factory: pytest.TempPathFactory) -> Linkcheck:
    owner = Identity.generate()
    return Linkcheck(owner, build_linkcheck(owner, tmp_path_factory.mktemp("linkcheck-bundle")))


@pytest.fixture
async def leased(tmp_path: Path, linkcheck: Linkcheck) -> AsyncIterator[Leased]:
    store = SqlStore(tmp_path / "coordinator.sqlite")
    server = TestServer(make_app(store, rate_limits=UNLIMITED), host="127.0.0.1")
    await server.start_server()
    try:
        await add_linkcheck(store, linkcheck, time.time())
        job_id = await store.create_job("linkcheck", {"urls": URLS}, time.time())
        async with aiohttp.ClientSession() as session:
            client = CoordinatorClient(str(server.make_url("/")), Identity.generate(), session)
            await client.register(wire.RegisterRequest(name="peer", slots=1, workloads=["*"]))
            (lease,) = (await client.lease(wire.LeaseRequest(max_units=1, workloads=["*"]))).leases
            yield Leased(store, client, lease, job_id)
    finally:
        await server.close()
        await store.close()


async def items_done(leased: Leased) -> int:
    return (await leased.store.job_status(leased.job_id)).items_done


async def test_streamed_records_reach_the_coordinator_in_batches(leased: Leased) -> None:
    lost: list[str] = []
    streamer = ItemStreamer(leased.client, leased.lease, lost.append)
    for url in URLS[:2]:
        await streamer.put(item(url), 100)
    assert streamer.leftover() == [item(URLS[0]), item(URLS[1])]
    assert await streamer.deliver() is None
    assert (streamer.taken, streamer.leftover(), lost, await items_done(leased)) == (2, [], [], 2)
    # The run loop sends a full batch at once, without waiting for its interval.
    delivering = asyncio.create_task(streamer.run())
    try:
        await streamer.put(item(URLS[2]), streaming.BATCH_BYTES)
        while streamer.leftover():
            await asyncio.sleep(0.05)
    finally:
        delivering.cancel()
    assert (streamer.taken, await items_done(leased)) == (3, 3)


async def test_at_most_max_held_bytes_wait_and_the_workload_waits_beyond(leased: Leased) -> None:
    streamer = ItemStreamer(leased.client, leased.lease, lambda _: None)
    await streamer.put(item(URLS[0]), streaming.MAX_HELD)
    beyond = asyncio.create_task(streamer.put(item(URLS[1]), 1))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not beyond.done()
    assert await streamer.deliver() is None
    await beyond
    assert streamer.leftover() == [item(URLS[1])]


async def test_records_wait_while_the_coordinator_is_away() -> None:
    lease = wire.Lease(unit_id=1, token=1, job_id=1, workload="linkcheck", payload={}, expires_at=0.0)
    async with aiohttp.ClientSession() as session:
        away = CoordinatorClient(f"http://127.0.0.1:{free_port()}", Identity.generate(), session)
        streamer = ItemStreamer(away, lease, lambda _: None)
        await streamer.put(item(URLS[0]), 100)
        assert isinstance(await streamer.deliver(), Exception)
    assert (streamer.leftover(), streamer.taken, streamer.gone) == ([item(URLS[0])], 0, None)


async def test_a_refused_batch_ends_the_unit_with_the_reason(leased: Leased) -> None:
    lost: list[str] = []
    streamer = ItemStreamer(leased.client, leased.lease, lost.append)
    await streamer.put(item(URLS[0]) | {"status": "200"}, 100)
    assert await streamer.deliver() is None
    reason = "streamed items refused: report refused: payload.items[0].status must be int or nil"
    assert (lost, streamer.gone, await items_done(leased)) == ([reason], reason, 0)
    # The lease went with it: what a stale lease streams is refused too.
    again = ItemStreamer(leased.client, leased.lease, lost.append)
    await again.put(item(URLS[1]), 100)
    await again.deliver()
    assert again.gone is not None and again.gone.startswith("streamed items refused:")
    assert "is not the current lease" in again.gone
