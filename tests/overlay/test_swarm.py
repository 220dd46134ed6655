"""A holder's swarm records: the pure rules, then real DHT nodes and libtorrent sessions on
127.0.0.1 announcing, finding, fetching from and withdrawing members."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from overlay import records
from overlay.announcements import SwarmMember, swarm_key
from overlay.dht import DhtNode
from overlay.identity import Identity
from overlay.swarm import SwarmMembership, is_unspecified, members_in, next_issue_time, reachable_at
from overlay.torrent import TorrentSession, TorrentTimeout, info_hash_of, make_torrent
from overlay.wire import SwarmAddress

pytestmark = pytest.mark.swarm

HOST = "127.0.0.1"
INFO_HASH = bytes(range(1, 21))
TTL = 60.0
FETCH_TIMEOUT = 30.0  # a stall fails the test instead of hanging it; never asserted as speed


def _member_record(identity: Identity, host: str, port: int, info_hash: bytes = INFO_HASH) -> records.SignedRecord:
    member = SwarmMember(identity.public_hex, host, port)
    return records.sign(identity, swarm_key(info_hash), member.payload(), time.time(), TTL)


# ---- the pure part ------------------------------------------------------------------------


def test_each_record_of_a_key_is_issued_strictly_after_the_last() -> None:
    assert next_issue_time(None, 100.0) == 100.0
    assert next_issue_time(99.0, 100.0) == 100.0
    assert next_issue_time(100.0, 100.0) > 100.0  # the clock stood still
    assert next_issue_time(200.0, 100.0) > 200.0  # the clock stepped back


def test_members_are_others_at_literal_addresses() -> None:
    me, other, named = Identity.generate(), Identity.generate(), Identity.generate()
    found = [
        _member_record(me, HOST, 7000),
        _member_record(other, HOST, 7001),
        _member_record(named, "seed.example", 7002),
        records.withdrawal(other, swarm_key(INFO_HASH), time.time()),
    ]
    assert members_in(found, me.public_key) == [(HOST, 7001)]


def test_an_unspecified_address_is_no_address_to_give_others() -> None:
    assert is_unspecified("0.0.0.0") and is_unspecified("::")
    assert not is_unspecified(HOST) and not is_unspecified("seed.example")


# ---- real nodes and sessions --------------------------------------------------------------


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def _dht_pair(stack: AsyncExitStack) -> tuple[DhtNode, DhtNode]:
    first = await stack.enter_async_context(DhtNode((HOST, 0), rpc_timeout=0.5))
    other = await stack.enter_async_context(DhtNode((HOST, 0), [first.address], rpc_timeout=0.5))
    return first, other


async def _session(stack: AsyncExitStack, tmp_path: Path, name: str) -> TorrentSession:
    return await stack.enter_async_context(TorrentSession((HOST, 0), state_dir=tmp_path / name / "state"))


async def test_a_member_is_announced_found_by_others_and_withdrawn(tmp_path: Path, stack: AsyncExitStack) -> None:
    node_a, node_b = await _dht_pair(stack)
    torrents_a, torrents_b = await _session(stack, tmp_path, "a"), await _session(stack, tmp_path, "b")
    identity = Identity.generate()
    frozen = time.time()  # withdrawing at the very time of announcing must still withdraw
    a = SwarmMembership(torrents_a, identity, dht=node_a, host=HOST, ttl=TTL, clock=lambda: frozen)
    b = SwarmMembership(torrents_b, Identity.generate(), dht=node_b, host=HOST, ttl=TTL)

    assert await a.announce(INFO_HASH) >= 1
    assert a.announced == [INFO_HASH]
    assert await b.members(INFO_HASH) == [(HOST, torrents_a.listen_port)]
    assert await a.members(INFO_HASH) == []  # its own record is not another member

    assert await a.withdraw_all() == 1
    assert a.announced == []
    assert await b.members(INFO_HASH) == []
    assert await node_b.lookup(swarm_key(INFO_HASH)) == []


async def test_a_forwarded_port_is_the_one_announced(tmp_path: Path, stack: AsyncExitStack) -> None:
    # Behind NAT (--public-address ADDR:PORT) others reach the session at the forwarded port.
    node_a, node_b = await _dht_pair(stack)
    torrents = await _session(stack, tmp_path, "a")
    forwarded = torrents.listen_port + 1 if torrents.listen_port < 65535 else 1024
    a = SwarmMembership(torrents, Identity.generate(), dht=node_a, host=HOST, port=forwarded, ttl=TTL)
    assert await a.announce(INFO_HASH) >= 1
    b = SwarmMembership(await _session(stack, tmp_path, "b"), Identity.generate(), dht=node_b, host=HOST, ttl=TTL)
    assert await b.members(INFO_HASH) == [(HOST, forwarded)]
    assert await a.sources(INFO_HASH, [SwarmAddress(HOST, forwarded)]) == []  # itself, not a source


async def test_nothing_is_announced_without_a_dht_or_a_reachable_host(tmp_path: Path, stack: AsyncExitStack) -> None:
    node, other = await _dht_pair(stack)
    torrents = await _session(stack, tmp_path, "a")
    for membership in (
        SwarmMembership(torrents, Identity.generate(), dht=None, host=HOST, ttl=TTL),
        SwarmMembership(torrents, Identity.generate(), dht=node, host=None, ttl=TTL),
        SwarmMembership(torrents, Identity.generate(), dht=node, host="0.0.0.0", ttl=TTL),
    ):
        assert not membership.can_announce
        assert await membership.announce(INFO_HASH) == 0
        assert membership.announced == []
        await membership.withdraw(INFO_HASH)  # nothing announced: nothing to withdraw
    assert await other.lookup(swarm_key(INFO_HASH)) == []
    assert await SwarmMembership(torrents, Identity.generate(), dht=None, host=HOST, ttl=TTL).members(INFO_HASH) == []


async def test_sources_are_the_seeds_then_the_members_without_this_holder(
    tmp_path: Path, stack: AsyncExitStack
) -> None:
    node, other_node = await _dht_pair(stack)
    torrents = await _session(stack, tmp_path, "me")
    me = SwarmMembership(torrents, Identity.generate(), dht=node, host=HOST, ttl=TTL)
    await me.announce(INFO_HASH)
    other = Identity.generate()
    await other_node.publish(swarm_key(INFO_HASH), _member_record(other, HOST, 7001))
    seeds = [SwarmAddress(HOST, 7000), SwarmAddress(HOST, 7000), SwarmAddress(HOST, torrents.listen_port)]

    assert await me.sources(INFO_HASH, seeds) == [(HOST, 7000), (HOST, 7001)]


async def test_a_file_is_fetched_from_a_member_the_dht_names(tmp_path: Path, stack: AsyncExitStack) -> None:
    seeder_node, fetcher_node = await _dht_pair(stack)
    data = tmp_path / "seed" / "data" / "file.bin"
    data.parent.mkdir(parents=True)
    data.write_bytes(os.urandom(256 * 1024))
    torrent_bytes = make_torrent(data)
    info_hash = info_hash_of(torrent_bytes)
    seeding = await _session(stack, tmp_path, "seeder")
    await seeding.seed(torrent_bytes, data.parent)
    await SwarmMembership(seeding, Identity.generate(), dht=seeder_node, host=HOST, ttl=TTL).announce(info_hash)

    fetching = await _session(stack, tmp_path, "fetcher")
    fetcher = SwarmMembership(fetching, Identity.generate(), dht=fetcher_node, host=HOST, ttl=TTL)
    path = await fetcher.fetch(info_hash, tmp_path / "fetched", [], timeout=FETCH_TIMEOUT)

    assert path.read_bytes() == data.read_bytes()
    assert seeding.stats(info_hash).total_upload >= data.stat().st_size


async def test_a_fetcher_is_a_member_while_it_fetches_and_meets_members_that_come_later(
    tmp_path: Path, stack: AsyncExitStack
) -> None:
    seeder_node, fetcher_node = await _dht_pair(stack)
    data = tmp_path / "seed" / "data" / "file.bin"
    data.parent.mkdir(parents=True)
    data.write_bytes(os.urandom(256 * 1024))
    torrent_bytes = make_torrent(data)
    info_hash = info_hash_of(torrent_bytes)
    fetching = await _session(stack, tmp_path, "fetcher")
    fetcher = SwarmMembership(fetching, Identity.generate(), dht=fetcher_node, host=HOST, ttl=TTL)
    seeding = await _session(stack, tmp_path, "seeder")
    seeder = SwarmMembership(seeding, Identity.generate(), dht=seeder_node, host=HOST, ttl=TTL)

    # No seed named and no member yet: the fetch starts knowing nobody.
    fetch = asyncio.create_task(fetcher.fetch(info_hash, tmp_path / "fetched", [], timeout=FETCH_TIMEOUT))
    while not await seeder.members(info_hash):
        assert not fetch.done()
        await asyncio.sleep(0.05)
    assert await seeder.members(info_hash) == [(HOST, fetching.listen_port)]  # announced while fetching
    await seeding.seed(torrent_bytes, data.parent)
    await seeder.announce(info_hash)  # found by the fetcher's next lookup

    path = await fetch
    assert path.read_bytes() == data.read_bytes()


async def test_a_fetch_that_fails_withdraws_the_record_it_made(tmp_path: Path, stack: AsyncExitStack) -> None:
    node, other_node = await _dht_pair(stack)
    fetching = await _session(stack, tmp_path, "fetcher")
    fetcher = SwarmMembership(fetching, Identity.generate(), dht=node, host=HOST, ttl=TTL)
    other = SwarmMembership(
        await _session(stack, tmp_path, "other"), Identity.generate(), dht=other_node, host=HOST, ttl=TTL
    )

    with pytest.raises(TorrentTimeout):
        await fetcher.fetch(INFO_HASH, tmp_path / "fetched", [], timeout=1.0)
    assert fetcher.announced == []
    assert await other.members(INFO_HASH) == []


def test_a_ttl_records_cannot_carry_is_refused(tmp_path: Path) -> None:
    torrents = TorrentSession((HOST, 0), state_dir=tmp_path / "state")
    for ttl, withdrawal_ttl in ((0.0, TTL), (records.MAX_TTL + 1, TTL), (TTL, -1.0)):
        with pytest.raises(ValueError, match="ttl must be in"):
            SwarmMembership(torrents, Identity.generate(), dht=None, host=HOST, ttl=ttl, withdrawal_ttl=withdrawal_ttl)


def test_a_holder_is_reachable_where_it_was_named_else_where_its_router_forwards() -> None:
    # Named by the volunteer (--public-address ADDR:PORT): kept, whatever the router says.
    assert reachable_at("81.2.69.160", 7000, 6881, (40000, "93.184.216.34")) == ("81.2.69.160", 7000)
    # A private address with a port the router forwards (UPnP/NAT-PMP): the router's outside.
    assert reachable_at("192.168.1.20", None, 6881, (40000, "93.184.216.34")) == ("93.184.216.34", 40000)
    # No mapping, or a router that says nothing useful: the address and the listen port.
    assert reachable_at("192.168.1.20", None, 6881) == ("192.168.1.20", 6881)
    assert reachable_at("192.168.1.20", None, 6881, (40000, None)) == ("192.168.1.20", 6881)
    assert reachable_at("192.168.1.20", None, 6881, (40000, "10.0.0.1")) == ("192.168.1.20", 6881)
    # A public address of its own needs no router's help.
    assert reachable_at("81.2.69.160", None, 6881, (40000, "93.184.216.34")) == ("81.2.69.160", 6881)
