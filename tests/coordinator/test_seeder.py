"""Seeding published bundles with real libtorrent sessions and DHT nodes on 127.0.0.1, and the
whole coordinator (`serve`) publishing its built-in link-check bundle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest

from coordinator.api import serve
from coordinator.seeder import BundleSeeder, BundleService
from coordinator.sql import SqlStore
from overlay.announcements import BundleAnnouncement, SwarmMember, bundle_key, swarm_key
from overlay.dht import DhtNode
from overlay.identity import Identity
from overlay.torrent import TorrentSession
from overlay.wire import SwarmAddress, decode
from tests.coordinator.conftest import START, Linkcheck
from workloads.builtin import linkcheck_version

pytestmark = pytest.mark.swarm

HOST = "127.0.0.1"
FETCH_TIMEOUT = 30.0  # a stall fails the test instead of hanging it; never asserted as speed
T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str) -> T:
    """Poll until `done(probe())`; a bound on waiting, not a timing assertion."""
    for _ in range(200):
        value = await probe()
        if done(value):
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def fetch(tmp_path: Path, info_hash: bytes, address: SwarmAddress) -> bytes:
    async with TorrentSession((HOST, 0), state_dir=tmp_path / "fetcher-state") as fetcher:
        path = await fetcher.fetch(
            info_hash, tmp_path / "fetched", [(address.host, address.port)], timeout=FETCH_TIMEOUT
        )
        return path.read_bytes()


def seeder(tmp_path: Path, identity: Identity, dht: DhtNode | None = None, own_origin: bool = False) -> BundleSeeder:
    return BundleSeeder(
        (HOST, 0),
        identity=identity,
        state_dir=tmp_path / "seed-state",
        dht=dht,
        network="test",
        ttl=60.0,
        own_origin=own_origin,
    )


# Each seeding test runs with libtorrent as the origin and with our own (overlay/origin).
origins = pytest.mark.parametrize("own_origin", [False, True], ids=["libtorrent", "own-origin"])


@contextlib.asynccontextmanager
async def published_linkcheck(tmp_path: Path, linkcheck: Linkcheck, seeding: BundleSeeder) -> AsyncIterator[SqlStore]:
    async with SqlStore(tmp_path / "c.sqlite") as store:
        await store.add_owner("owner", linkcheck.owner.public_hex, START)
        await BundleService(tmp_path / "bundles", seeding).publish(store, linkcheck.manifest, linkcheck.archive, START)
        yield store


@origins
async def test_a_published_bundle_is_fetched_from_the_seeder(
    tmp_path: Path, linkcheck: Linkcheck, own_origin: bool
) -> None:
    async with (
        seeder(tmp_path, Identity.generate(), own_origin=own_origin) as seeding,
        published_linkcheck(tmp_path, linkcheck, seeding),
    ):
        assert seeding.is_seeding(linkcheck.info_hash)
        address = seeding.address("ignored.example")
        assert address == SwarmAddress(HOST, seeding.listen_port)
        assert await fetch(tmp_path / "first", linkcheck.info_hash, address) == linkcheck.archive

    # A restart seeds what the store holds, from the files kept in bundle_dir.
    async with (
        seeder(tmp_path, Identity.generate(), own_origin=own_origin) as seeding,
        SqlStore(tmp_path / "c.sqlite") as store,
    ):
        await BundleService(tmp_path / "bundles", seeding).start(store)
        assert seeding.is_seeding(linkcheck.info_hash)
        address = seeding.address(HOST)
        assert await fetch(tmp_path / "again", linkcheck.info_hash, address) == linkcheck.archive


@origins
async def test_seeds_are_announced_in_the_dht_and_withdrawn(
    tmp_path: Path, linkcheck: Linkcheck, own_origin: bool
) -> None:
    identity = Identity.generate()
    async with (
        DhtNode((HOST, 0), rpc_timeout=0.5) as first,
        DhtNode((HOST, 0), [first.address], rpc_timeout=0.5) as other,
    ):
        names, members = bundle_key("test", "linkcheck"), swarm_key(linkcheck.info_hash)
        async with (
            seeder(tmp_path, identity, dht=first, own_origin=own_origin) as seeding,
            published_linkcheck(tmp_path, linkcheck, seeding),
        ):
            records = await eventually(lambda: other.lookup(names), bool, "the bundle announcement arrives")
            assert [BundleAnnouncement.from_record(r) for r in records] == [
                BundleAnnouncement(identity.public_hex, "linkcheck", ((linkcheck.version, linkcheck.info_hash),))
            ]
            records = await eventually(lambda: other.lookup(members), bool, "the swarm member arrives")
            assert [SwarmMember.from_record(r) for r in records] == [
                SwarmMember(identity.public_hex, HOST, seeding.listen_port)
            ]
        assert await other.lookup(names) == []
        assert await other.lookup(members) == []


async def test_serve_publishes_and_seeds_the_builtin_bundle(tmp_path: Path) -> None:
    identity = Identity.generate()
    db = tmp_path / "coordinator.sqlite"

    async def info_once() -> tuple[dict, dict]:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()
        task = asyncio.create_task(serve(HOST, 0, db, identity=identity, ready=ready.set_result))
        try:
            port = await asyncio.wait_for(asyncio.shield(ready), 60)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://{HOST}:{port}/v1/bundles/linkcheck") as resp:
                    status = decode(await resp.read())
                async with session.get(f"http://{HOST}:{port}/v1/bundles/linkcheck/{status['stable']}") as resp:
                    info = decode(await resp.read())
            seed = info["seeds"][0]
            assert await fetch(tmp_path / f"fetch-{port}", info["info_hash"], SwarmAddress(seed["host"], seed["port"]))
            return status, info
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    status, info = await info_once()
    assert (status["owner_key"], status["stable"], status["state"]) == (
        identity.public_hex,
        linkcheck_version(),
        "stable",
    )
    assert info["seeds"][0]["host"] == HOST
    assert (
        tmp_path / "coordinator.bundles" / "linkcheck" / linkcheck_version() / f"linkcheck-{linkcheck_version()}.tar"
    ).is_file()
    again, _ = await info_once()  # a restart publishes the same version again: nothing changes
    assert again == status
    async with SqlStore(db) as store:
        grants = [(g.name, g.public_key, g.role) for g in await store.grants()]
        assert grants == [("coordinator", identity.public_hex, "operator")]


@contextlib.asynccontextmanager
async def port_forward(to_port: int) -> AsyncIterator[int]:
    """A TCP relay on HOST forwarding to `to_port`, as a NAT's port forward would: the port
    outsiders use differs from the one the seeder listens on."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        inner_reader, inner_writer = await asyncio.open_connection(HOST, to_port)
        await asyncio.gather(pipe(reader, inner_writer), pipe(inner_reader, writer))

    server = await asyncio.start_server(relay, HOST, 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@origins
async def test_a_public_address_is_what_peers_are_told_and_what_the_dht_names(
    tmp_path: Path, linkcheck: Linkcheck, own_origin: bool
) -> None:
    # Behind NAT the seeder listens on every address at one port, and the NAT forwards another:
    # peers must be told the forwarded one (--public-address), in answers and in the DHT.
    identity = Identity.generate()
    async with (
        DhtNode((HOST, 0), rpc_timeout=0.5) as first,
        DhtNode((HOST, 0), [first.address], rpc_timeout=0.5) as other,
    ):
        hidden = BundleSeeder(
            ("0.0.0.0", 0),
            identity=identity,
            state_dir=tmp_path / "s",
            dht=first,
            network="test",
            own_origin=own_origin,
        )
        async with hidden as probe:
            listen_port = probe.listen_port  # kept in the state dir: the next start binds it again
        async with port_forward(listen_port) as forwarded:
            seeding = BundleSeeder(
                ("0.0.0.0", 0),
                identity=identity,
                state_dir=tmp_path / "s",
                dht=first,
                network="test",
                public_address=(HOST, forwarded),
                ttl=60.0,
                own_origin=own_origin,
            )
            async with seeding, published_linkcheck(tmp_path, linkcheck, seeding):
                assert seeding.listen_port == listen_port != forwarded
                address = seeding.address("10.9.8.7")  # the host a request came to no longer decides
                assert address == SwarmAddress(HOST, forwarded)
                records = await eventually(
                    lambda: other.lookup(swarm_key(linkcheck.info_hash)), bool, "the swarm member arrives"
                )
                assert [SwarmMember.from_record(r) for r in records] == [
                    SwarmMember(identity.public_hex, HOST, forwarded)
                ]
                assert await fetch(tmp_path / "through", linkcheck.info_hash, address) == linkcheck.archive
