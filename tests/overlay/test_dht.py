"""Real kademlia nodes on 127.0.0.1, in one event loop, and a raw UDP socket for hostile traffic."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

from overlay import records
from overlay.dht import DhtNode
from overlay.dht.answers import REQUEST_BYTES
from overlay.identity import Identity
from overlay.records import SignedRecord
from tests.overlay.conftest import HOST, Clock, first_object

KEY = "coordinators/linkcheck"
NODES = 30
K = 20  # kademlia's ksize: a publish stores on this many nodes
FIND_VALUE_BYTES = REQUEST_BYTES["find_value"]


async def _network(clock: Clock, count: int = NODES, **options: Any) -> list[DhtNode]:
    first = DhtNode((HOST, 0), rpc_timeout=0.5, clock=clock, **options)
    await first.start()
    rest = [DhtNode((HOST, 0), [first.address], rpc_timeout=0.5, clock=clock, **options) for _ in range(count - 1)]
    await asyncio.gather(*(node.start() for node in rest))
    return [first, *rest]


@pytest.fixture
async def network(clock: Clock, watch_loop: None) -> AsyncIterator[list[DhtNode]]:
    nodes = await _network(clock)
    yield nodes
    await asyncio.gather(*(node.close() for node in nodes))


def _sign(who: Identity, clock: Clock, ago: float = 0.0, ttl: float = 600.0, **payload: Any) -> SignedRecord:
    return records.sign(who, KEY, payload or {"addr": f"{HOST}:7000"}, clock.now - ago, ttl)


async def _everyone_finds(nodes: list[DhtNode], key: str = KEY) -> list[list[SignedRecord]]:
    return [await node.lookup(key) for node in nodes]


def _dkey(key: str) -> bytes:
    return hashlib.sha1(key.encode()).digest()


def _forge(who: Identity, key: str, record: SignedRecord, **changes: Any) -> SignedRecord:
    fields = dataclasses.replace(record, **changes)
    signed = records._signed_bytes(key, fields.signer, fields.payload, fields.issued_at, fields.expires_at)
    return dataclasses.replace(fields, signature=who.sign(signed))


# ---- honest use ------------------------------------------------------------------------


async def test_three_signers_every_node_finds_exactly_the_three(network, clock):
    signers = [Identity.generate() for _ in range(3)]
    published = [_sign(s, clock, ago=i, rank=i) for i, s in enumerate(signers)]
    stored = [await network[n].publish(KEY, r) for n, r in zip((3, 10, 20), published, strict=True)]
    assert stored == [K, K, K]
    for found in await _everyone_finds(network):
        assert found == published  # newest first
    detail = await network[29].lookup_detailed(KEY)
    assert detail.records == tuple(published)
    assert detail.holders >= 1
    assert detail.rounds >= 1
    assert detail.rpcs >= detail.holders
    # A key nobody published under holds nothing.
    assert await network[5].lookup("coordinators/nobody") == []
    # Records expire on every node, whatever its copy says.
    clock.now += 600.0
    assert await _everyone_finds(network) == [[]] * NODES


async def test_newer_record_replaces_older_and_withdrawal_hides_it(network, clock):
    alice, bob = Identity.generate(), Identity.generate()
    old = _sign(alice, clock, ago=60, version=1)
    bobs = _sign(bob, clock, ago=30)
    assert await network[1].publish(KEY, old) == K
    assert await network[2].publish(KEY, bobs) == K
    new = _sign(alice, clock, ago=0, version=2)
    assert await network[25].publish(KEY, new) == K
    assert await _everyone_finds(network) == [[new, bobs]] * NODES
    # The old record arriving again, after the new one, changes nothing.
    assert await network[7].publish(KEY, old) == K
    assert await _everyone_finds(network) == [[new, bobs]] * NODES
    clock.now += 1.0
    assert await network[12].publish(KEY, records.withdrawal(alice, KEY, clock.now)) == K
    assert await _everyone_finds(network) == [[bobs]] * NODES


async def test_too_many_signers_are_bounded_to_the_newest(network, clock):
    signers = [Identity.generate() for _ in range(20)]
    published = [_sign(s, clock, ago=i) for i, s in enumerate(signers)]
    for i, record in enumerate(reversed(published)):
        assert await network[i].publish(KEY, record) == K
    assert await _everyone_finds(network) == [published[:16]] * NODES


async def test_restart_from_saved_state_without_bootstrap(network, clock, tmp_path):
    state = tmp_path / "dht" / "state.msgpack"
    published = _sign(Identity.generate(), clock)
    async with DhtNode((HOST, 0), [network[0].address], state_path=state, rpc_timeout=0.5, clock=clock) as node:
        assert await node.publish(KEY, published) == K
        known = set(node.neighbours())
    saved = msgpack.unpackb(state.read_bytes(), raw=False)
    assert set(saved) == {"node_id", "contacts"}
    assert {tuple(c) for c in saved["contacts"]} == known
    async with DhtNode((HOST, 0), state_path=state, rpc_timeout=0.5, clock=clock) as again:
        assert again.neighbours() != []
        assert await again.lookup(KEY) == [published]


async def test_dead_contacts_are_dropped_by_the_periodic_ping(network):
    watcher = network[0]
    dead = network[20:25]
    dead_addresses = {node.address for node in dead}
    known_dead = dead_addresses & set(watcher.neighbours())
    assert known_dead != set()
    for node in dead:
        await node.close()
    assert await watcher.ping_contacts() == len(known_dead)
    assert dead_addresses & set(watcher.neighbours()) == set()
    assert await watcher.ping_contacts() == 0


async def test_lone_node_keeps_what_it_publishes_and_closed_means_closed(clock, watch_loop):
    node = DhtNode((HOST, 0), clock=clock)
    with pytest.raises(RuntimeError, match="DhtNode is new"):
        await node.lookup(KEY)
    async with node:
        assert node.address[0] == HOST
        assert node.address[1] > 0
        record = _sign(Identity.generate(), clock)
        assert await node.publish(KEY, record) == 0  # no other node stored it...
        assert await node.lookup(KEY) == [record]  # ...but the first node of a network keeps it
        assert node.neighbours() == []
        async with DhtNode((HOST, 0), [node.address], clock=clock) as joiner:
            assert await joiner.lookup(KEY) == [record]
        with pytest.raises(records.RecordError, match="expired"):
            await node.publish(KEY, _sign(Identity.generate(), clock, ago=700.0))
    with pytest.raises(RuntimeError, match="DhtNode is closed"):
        await node.lookup(KEY)
    with pytest.raises(RuntimeError, match="DhtNode is closed"):
        node.neighbours()
    with pytest.raises(RuntimeError, match="it can be started once"):
        await node.start()


# ---- hostile traffic -------------------------------------------------------------------


async def test_garbage_oversized_and_mistyped_datagrams_are_dropped(network, raw, caplog):
    target = network[4].address
    node_id = raw.node_id
    refused = [
        raw.request(target, "find_node", [123, "x"]),  # wrong argument types
        raw.request(target, "ping", []),  # wrong arity
        raw.request(target, "store", [node_id, _dkey(KEY)]),  # wrong arity
        raw.request(target, "stun", []),  # callable in kademlia, not served here
        raw.request(target, ["find_value"], [node_id, node_id]),  # name of the wrong type
        raw.request(target, "find_value", {"a": 1}),  # arguments of the wrong type
    ]
    with caplog.at_level(logging.WARNING, logger="overlay.dht"):
        raw.send(target, b"\x00" + os.urandom(20) + b"\xc1\xc1\xc1")  # not msgpack
        raw.send(target, os.urandom(5))  # too short
        raw.send(target, b"\x07" + os.urandom(40))  # unknown message type
        raw.send(target, b"\x00" + os.urandom(20) + msgpack.packb(["store", [node_id, _dkey(KEY), b"x" * 60000]]))
        raw.send(target, b"\x00" + os.urandom(20) + msgpack.packb([1, 2, 3]))  # not a pair
        # Datagrams from one sender are handled in order: once the ping is answered, all of the
        # above have been dealt with.
        node_id_answer = await raw.ping(target)
    assert [f.done() for f in refused] == [False] * len(refused)
    complaints = [r for r in caplog.records if r.name == "overlay.dht"]
    assert len(complaints) == 1  # one line per misbehaving sender, not one per datagram
    assert "misbehaves" in complaints[0].getMessage()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert await raw.ping(target) == node_id_answer
    assert len(node_id_answer) == 20


async def test_forged_stores_are_refused_and_honest_records_survive(network, raw, clock):
    alice, mallory = Identity.generate(), Identity.generate()
    honest = _sign(alice, clock, ago=10)
    assert await network[9].publish(KEY, honest) == K
    newer = dict(issued_at=clock.now, expires_at=clock.now + 600.0)
    forgeries = {
        "tampered": dataclasses.replace(honest, payload=records.wire.encode({"addr": "6.6.6.6:1"}), **newer),
        "signer not the one named": _forge(mallory, KEY, honest, **newer),
        "expired": _forge(
            mallory, KEY, honest, signer=mallory.public_key, issued_at=clock.now - 700.0, expires_at=clock.now - 100.0
        ),
        "far future": _forge(
            mallory, KEY, honest, signer=mallory.public_key, issued_at=clock.now + 3600.0, expires_at=clock.now + 4000.0
        ),
        "signed for another key": _forge(mallory, "other", honest, signer=mallory.public_key, **newer),
    }
    values: dict[str, Any] = {name: records.encode_set(KEY, [r]) for name, r in forgeries.items()}
    values["set naming another key"] = records.encode_set("other", [_sign(mallory, clock)])
    values["not a set"] = b"\x93\x01\x02\x03"
    for name, value in values.items():
        answers = await asyncio.gather(
            *(asyncio.wait_for(raw.request(n.address, "store", [raw.node_id, _dkey(KEY), value]), 5) for n in network)
        )
        assert answers == [False] * NODES, name
    # A plain list is not even a well-typed store request: it gets no answer at all.
    unanswered = [raw.request(n.address, "store", [raw.node_id, _dkey(KEY), [1, 2, 3]]) for n in network]
    pongs = [await raw.ping(n.address) for n in network]
    assert [f.done() for f in unanswered] == [False] * NODES
    assert [len(p) for p in pongs] == [20] * NODES
    # Padded as our nodes pad theirs: an answer is at most three times its request (answers.py).
    asked = [raw.request(n.address, "find_value", [raw.node_id, _dkey(KEY)], pad_to=FIND_VALUE_BYTES) for n in network]
    held = await asyncio.gather(*(asyncio.wait_for(a, 5) for a in asked))
    sets = [records.decode_set(a["value"]) for a in held if isinstance(a, dict)]
    assert len(sets) >= K
    assert {s.records for s in sets} == {(honest,)}
    assert await _everyone_finds(network) == [[honest]] * NODES


class _Liar(asyncio.DatagramProtocol):
    """A node that answers every request promptly, with an answer of the wrong shape."""

    LIES = {
        "ping": "not an id",
        "find_node": [[b"short", "not an ip", -1]],
        "find_value": {"value": [1, 2]},
        "store": True,
    }

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.asked: list[str] = []
        self.pongs = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:1] == b"\x01":
            self.pongs += 1
        elif self.transport is not None:
            name = first_object(data[21:])[0]
            self.asked.append(name)
            self.transport.sendto(b"\x01" + data[1:21] + msgpack.packb(self.LIES[name]), addr)


async def test_malformed_answers_count_as_silence(network, clock):
    honest = _sign(Identity.generate(), clock)
    assert await network[3].publish(KEY, honest) == K
    loop = asyncio.get_running_loop()
    transport, liar = await loop.create_datagram_endpoint(_Liar, local_addr=(HOST, 0))
    try:
        # The liar takes the id closest to the key and introduces itself to everyone, so every
        # lookup asks it first.
        liar_id = _dkey(KEY)[:-1] + bytes([_dkey(KEY)[-1] ^ 1])
        for node in network:
            transport.sendto(b"\x00" + os.urandom(20) + msgpack.packb(["ping", [liar_id]]), node.address)
        liar_address = transport.get_extra_info("sockname")[:2]
        while liar.pongs < NODES:
            await asyncio.sleep(0.01)
        assert any(liar_address in n.neighbours() for n in network)
        assert await _everyone_finds(network) == [[honest]] * NODES
        assert "find_value" in liar.asked
        assert [liar_address in n.neighbours() for n in network] == [False] * NODES
    finally:
        transport.close()


async def test_bootstrap_again_rejoins_after_losing_every_contact(network, clock):
    published = _sign(Identity.generate(), clock)
    assert await network[0].publish(KEY, published) == K
    # The node's only way in is a gateway that knows nobody else, and then goes away.
    gateway = DhtNode((HOST, 0), rpc_timeout=0.5, clock=clock)
    await gateway.start()
    port = gateway.address[1]
    async with DhtNode((HOST, 0), [(HOST, port)], rpc_timeout=0.5, clock=clock) as node:
        assert node.neighbours() == [(HOST, port)]
        await gateway.close()
        assert await node.ping_contacts() == 1
        assert node.neighbours() == []
        assert await node.lookup(KEY) == []
        # The gateway comes back on the same port, this time joined to the network.
        async with DhtNode((HOST, port), [network[5].address], rpc_timeout=0.5, clock=clock):
            assert await node.bootstrap_again() > 0
            assert len(node.neighbours()) > 1
            assert await node.lookup(KEY) == [published]


async def test_state_is_saved_periodically_and_a_corrupt_file_is_ignored(network, clock, tmp_path, caplog):
    state = tmp_path / "state.msgpack"
    corrupt = b"\x81\xa3not a state"
    state.write_bytes(corrupt)
    async with DhtNode((HOST, 0), [network[0].address], state_path=state, clock=clock, save_interval=0.05) as node:
        assert node.neighbours() != []
        assert "ignoring unreadable DHT state" in caplog.text
        for _ in range(200):  # wait for the periodic save, without timing it
            if state.read_bytes() != corrupt:
                break
            await asyncio.sleep(0.05)
        saved = msgpack.unpackb(state.read_bytes(), raw=False)
        assert {tuple(c) for c in saved["contacts"]} == set(node.neighbours())


def test_nearest_contacts_come_from_every_bucket():
    """kademlia's own find_neighbors returned nothing when the buckets next to the key's were empty."""
    from kademlia.node import Node
    from kademlia.routing import RoutingTable

    from overlay.dht.protocol import _RoutingTable

    me = Node(bytes(20))
    contacts = [Node(bytes([0, 0, i]) + bytes(17), HOST, 4000 + i) for i in range(1, 11)]
    target = Node(b"\xff" * 20)
    tables = [RoutingTable(None, 20, me), _RoutingTable(None, 20, me)]
    for table in tables:
        # Four buckets; all contacts sit in the first one, the target's is the last.
        table.split_bucket(0)
        table.split_bucket(1)
        table.split_bucket(2)
        for contact in contacts:
            table.add_contact(contact)
        assert [len(b) for b in table.buckets] == [10, 0, 0, 0]
    assert tables[0].find_neighbors(target) == []  # the kademlia behaviour worked around
    closest = tables[1].find_neighbors(target, k=4)
    assert closest == sorted(contacts, key=target.distance_to)[:4]
    assert tables[1].find_neighbors(target, exclude=contacts[9]) == sorted(contacts[:9], key=target.distance_to)


async def test_a_client_only_node_finds_records_without_joining_anyones_table(network, clock):
    # `osaas dht lookup` asks and leaves: as a full node it was added to every table it touched,
    # pinged for ever after and its departure logged by every node.
    publisher = Identity.generate()
    assert await network[3].publish(KEY, _sign(publisher, clock)) > 0
    async with DhtNode((HOST, 0), [network[0].address], rpc_timeout=0.5, clock=clock, client_only=True) as client:
        found = await client.lookup(KEY)
        address = client.address
    assert [r.signer for r in found] == [publisher.public_key]
    assert all(address not in node.neighbours() for node in network)
    # A full node that does the same is in the tables it touched (the test can tell the two apart).
    async with DhtNode((HOST, 0), [network[0].address], rpc_timeout=0.5, clock=clock) as full:
        await full.lookup(KEY)
        assert any(full.address in node.neighbours() for node in network)
