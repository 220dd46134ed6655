"""The DHT's limits, tried as an attacker on loopback: junk floods, newcomer floods, amplification,
signature-check floods. Real kademlia nodes and raw UDP sockets; no timing assertions."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import msgpack
import pytest

from overlay import records
from overlay.dht import DhtLimits, DhtNode
from overlay.dht.answers import REQUEST_BYTES
from overlay.identity import Identity
from tests.overlay.conftest import HOST, Clock, RawPeer, first_object

KEY = "coordinators/linkcheck"
DEFAULTS = DhtLimits()


def _dkey(key: str) -> bytes:
    return hashlib.sha1(key.encode()).digest()


def _junk_set(signers: list[Identity], key: str, now: float, payload_bytes: int = 16) -> bytes:
    """A valid record set under `key`, one record per signer, as large as fits."""
    signed = [records.sign(s, key, {"junk": "j" * payload_bytes}, now, 600.0) for s in signers]
    value = records.encode_set(key, signed)
    while len(value) > records.MAX_SET_BYTES:
        signed.pop()
        value = records.encode_set(key, signed)
    return value


@pytest.fixture
async def stack(watch_loop: None) -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def _node(stack: AsyncExitStack, clock: Clock, bootstrap: tuple[Any, ...] = (), **options: Any) -> DhtNode:
    return await stack.enter_async_context(DhtNode((HOST, 0), bootstrap, rpc_timeout=0.5, clock=clock, **options))


async def _raw(stack: AsyncExitStack) -> RawPeer:
    transport, peer = await asyncio.get_running_loop().create_datagram_endpoint(RawPeer, local_addr=(HOST, 0))
    stack.callback(transport.close)
    return peer


async def _store_all(raw: RawPeer, node: DhtNode, values: dict[str, bytes]) -> int:
    """Store every value from `raw`, at most 50 datagrams and ~64 kB at a time so that none is
    dropped (a UDP receive buffer holds ~200 kB, counting each datagram's overhead); how many
    were accepted."""
    items = list(values.items())
    batch = max(1, min(50, 64 * 1024 // max(len(v) for v in values.values())))
    accepted = 0
    for start in range(0, len(items), batch):
        answers = await asyncio.gather(
            *(
                asyncio.wait_for(raw.request(node.address, "store", [raw.node_id, _dkey(key), value]), 5)
                for key, value in items[start : start + batch]
            )
        )
        accepted += sum(1 for answer in answers if answer is True)
        raw.answers.clear()  # so that memory measured is the node's, not this socket's
        raw.answer_bytes.clear()
    return accepted


async def _wait_until_quiet(count: Callable[[], int]) -> int:
    """Wait until `count()` has stopped changing (bounded); its last value."""
    last = -1
    for _ in range(50):
        if count() == last:
            break
        last = count()
        await asyncio.sleep(0.2)
    return last


# ---- one sender, thousands of junk keys and big values ---------------------------------------


async def test_a_junk_flood_from_one_sender_stays_under_its_quota(stack, clock):
    victim = await _node(stack, clock)
    honest = await _node(stack, clock, (victim.address,))
    alice = Identity.generate()
    kept = records.sign(alice, KEY, {"addr": "127.0.0.1:7000"}, clock.now, 600.0)
    await honest.publish(KEY, kept)
    mallory = await _raw(stack)
    signers = [Identity.generate() for _ in range(7)]
    small = {f"junk/{n}": _junk_set(signers[:1], f"junk/{n}", clock.now) for n in range(1500)}
    big = {f"big/{n}": _junk_set(signers, f"big/{n}", clock.now, payload_bytes=1000) for n in range(600)}
    assert min(len(v) for v in big.values()) > 7000

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        accepted = await _store_all(mallory, victim, big) + await _store_all(mallory, victim, small)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    usage = victim.usage()
    held_for_honest = 1
    # 2,100 stores, each a valid set: the sender's quota of keys and of bytes, no more.
    assert accepted <= DEFAULTS.sender_keys
    assert usage.keys <= DEFAULTS.sender_keys + held_for_honest
    assert usage.bytes <= DEFAULTS.sender_bytes + len(records.encode_set(KEY, [kept]))
    assert usage.bytes > DEFAULTS.sender_bytes - records.MAX_SET_BYTES  # the quota was used, not more
    assert grown < 4 * DEFAULTS.sender_bytes  # values and their bookkeeping; unbounded was ~14 MB
    # What the honest node stored stays, and it may still store new keys.
    assert await honest.lookup(KEY) == [kept]
    other = "coordinators/other"
    assert await honest.publish(other, records.sign(alice, other, {"addr": "127.0.0.1:7001"}, clock.now, 600.0)) == 1
    assert victim.usage().keys == usage.keys + 1


async def test_many_senders_fill_a_node_to_its_caps_and_nothing_held_is_evicted(stack, clock):
    limits = DhtLimits(max_keys=40, max_bytes=64 * 1024, sender_keys=10, sender_bytes=16 * 1024)
    victim = await _node(stack, clock, limits=limits)
    honest = await _raw(stack)
    alice = Identity.generate()
    honest_sets = {f"honest/{n}": _junk_set([alice], f"honest/{n}", clock.now + 100) for n in range(5)}
    assert await _store_all(honest, victim, honest_sets) == 5
    # Eight senders, each with its own signer, try 20 keys each: a record expiring in 10 minutes.
    accepted = []
    for n in range(8):
        sender, signer = await _raw(stack), Identity.generate()
        junk = {f"junk/{n}/{i}": _junk_set([signer], f"junk/{n}/{i}", clock.now) for i in range(20)}
        accepted.append(await _store_all(sender, victim, junk))
    assert max(accepted) <= limits.sender_keys
    assert sum(accepted) == limits.max_keys - 5
    assert victim.usage().keys == limits.max_keys
    # Full: a new key is refused, even from the honest sender, and nothing held was evicted.
    late = {"honest/late": _junk_set([alice], "honest/late", clock.now + 100)}
    assert await _store_all(honest, victim, late) == 0
    for key in honest_sets:
        answer = await honest.request(
            victim.address, "find_value", [honest.node_id, _dkey(key)], REQUEST_BYTES["find_value"]
        )
        assert records.decode_set(answer["value"]).key == key
    # Once the junk has expired, there is room again.
    clock.now += 650.0
    assert await _store_all(honest, victim, late) == 1
    assert victim.usage().keys == 6


# ---- the handoff to newcomers ----------------------------------------------------------------


async def test_a_newcomer_is_handed_a_bounded_number_of_keys(stack, clock):
    victim = await _node(stack, clock)
    mallory, newcomer = await _raw(stack), await _raw(stack)
    # Ids chosen so that the choice of keys is certain: mallory, the victim's only contact, is as
    # far from the victim as can be, the newcomer as near: the victim should hand it every key
    # on its side of the id space.
    mallory.node_id = bytes([victim.node_id[0] ^ 0x80]) + victim.node_id[1:]
    newcomer.node_id = victim.node_id[:-1] + bytes([victim.node_id[-1] ^ 1])
    signer = Identity.generate()
    junk = {f"junk/{n}": _junk_set([signer], f"junk/{n}", clock.now) for n in range(400)}
    assert await _store_all(mallory, victim, junk) > 2 * DEFAULTS.handoff_keys
    await newcomer.ping(victim.address)  # "never seen before": the victim hands it keys
    pushed = await _wait_until_quiet(lambda: newcomer.stores_received)
    # kademlia sent all it held on its side (~165 of these 400; with no quota it held them all), at once.
    assert pushed == DEFAULTS.handoff_keys
    assert victim.handed_off == pushed


class _Bystander(asyncio.DatagramProtocol):
    """A host that is no DHT node: it answers nothing and notes what it is sent."""

    def __init__(self) -> None:
        self.received: list[str] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        kind = {b"\x00": "request", b"\x01": "answer"}[data[:1]]
        self.received.append(f"{kind} {first_object(data[21:])[0] if kind == 'request' else ''}".strip())


async def test_no_keys_are_handed_to_a_forged_address(stack, clock):
    victim = await _node(stack, clock)
    mallory = await _raw(stack)
    signer = Identity.generate()
    assert await _store_all(mallory, victim, {f"j/{n}": _junk_set([signer], f"j/{n}", clock.now) for n in range(50)})
    loop = asyncio.get_running_loop()
    transport, bystander = await loop.create_datagram_endpoint(_Bystander, local_addr=(HOST, 0))
    stack.callback(transport.close)
    # A ping "from" the bystander, as a forged source address would make it: the victim meets a
    # new node there, asks it whether it is that node, gets no answer and sends it nothing more.
    transport.sendto(b"\x00" + os.urandom(20) + msgpack.packb(["ping", [os.urandom(20)]]), victim.address)
    await _wait_until_quiet(lambda: len(bystander.received))
    assert bystander.received == ["answer", "request ping"]
    assert victim.handed_off == 0


async def test_a_newcomer_bootstraps_through_a_node_full_of_junk(stack, clock):
    victim = await _node(stack, clock)
    honest = await _node(stack, clock, (victim.address,))
    kept = records.sign(Identity.generate(), KEY, {"addr": "127.0.0.1:7000"}, clock.now, 600.0)
    await honest.publish(KEY, kept)
    mallory = await _raw(stack)
    signer = Identity.generate()
    await _store_all(mallory, victim, {f"j/{n}": _junk_set([signer], f"j/{n}", clock.now) for n in range(2000)})
    newcomer = await _node(stack, clock, (victim.address,))
    assert set(newcomer.neighbours()) >= {victim.address, honest.address}
    assert await newcomer.lookup(KEY) == [kept]
    await _wait_until_quiet(lambda: newcomer.usage().keys)
    # From the victim and from the honest node: kademlia's newcomer was sent ~1,000 and kept ~170.
    assert newcomer.usage().keys <= 2 * DEFAULTS.handoff_keys


# ---- answers no larger than three times their request -----------------------------------------


async def test_answers_are_at_most_three_times_their_request(stack, clock):
    first = await _node(stack, clock)
    nodes = [first] + [await _node(stack, clock, (first.address,)) for _ in range(21)]
    signers = [Identity.generate() for _ in range(16)]
    published = [records.sign(s, KEY, {"addr": "x" * 380, "n": n}, clock.now - n, 600.0) for n, s in enumerate(signers)]
    for record in published:
        await nodes[1].publish(KEY, record)
    holder = next(n for n in nodes if n.usage().keys)
    raw = await _raw(stack)
    await raw.ping(holder.address)
    held = await holder.lookup(KEY)
    full_set = records.encode_set(KEY, held)
    assert len(held) == 14  # the newest that fit in a set
    assert len(full_set) > 7000

    # Unpadded, as plain kademlia asks: 78 bytes used to bring the whole ~8 kB set back.
    asked, got, answer = await raw.exchange(holder.address, "find_value", [raw.node_id, _dkey(KEY)])
    assert got <= 3 * asked
    asked, got, contacts = await raw.exchange(holder.address, "find_node", [raw.node_id, bytes(20)])
    assert got <= 3 * asked
    others = len(set(holder.neighbours()) - {raw.address})
    assert 0 < len(contacts) < min(20, others)  # the closest that fit

    # Padded, as our nodes ask: the whole set and k contacts, still within three times.
    pad = REQUEST_BYTES["find_value"]
    asked, got, answer = await raw.exchange(holder.address, "find_value", [raw.node_id, _dkey(KEY)], pad)
    assert got <= 3 * asked
    assert answer == {"value": full_set}
    asked, got, contacts = await raw.exchange(
        holder.address, "find_node", [raw.node_id, bytes(20)], REQUEST_BYTES["find_node"]
    )
    assert got <= 3 * asked
    assert len(contacts) == min(20, others)
    # And a lookup between our nodes finds all sixteen records.
    assert await nodes[-1].lookup(KEY) == held == published[:14]


# ---- signature checks that cannot become a CPU flood -------------------------------------------


async def test_signature_checks_are_rationed_per_sender_and_remembered(stack, clock):
    limits = DhtLimits(sender_check_burst=50.0, sender_checks_per_second=0.01)
    victim = await _node(stack, clock, limits=limits)
    mallory, honest = await _raw(stack), await _raw(stack)
    sets = {f"k/{n}": _junk_set([Identity.generate() for _ in range(10)], f"k/{n}", clock.now) for n in range(20)}
    accepted = [await _store_all(mallory, victim, {key: value}) for key, value in sets.items()]
    # Ten checks a set: five sets use the burst, the rest are refused before any check is made.
    assert accepted == [1] * 5 + [0] * 15
    assert victim.usage().signature_checks == 50
    # Records already checked cost nothing the second time (replication, republishing, replays).
    first_five = dict(list(sets.items())[:5])
    assert await _store_all(mallory, victim, first_five) == 5
    assert victim.usage().signature_checks == 50
    # Forged signatures cost checks too, and are rationed the same way.
    forged = {
        f"f/{n}": records.encode_set(
            f"f/{n}", [records.sign(Identity.generate(), f"other/{n}", {"a": 1}, clock.now, 600.0)]
        )
        for n in range(80)
    }
    assert await _store_all(honest, victim, forged) == 0
    assert victim.usage().signature_checks == 100
    # Another sender has a bucket of its own.
    newcomer = await _raw(stack)
    assert await _store_all(newcomer, victim, dict(list(sets.items())[5:8])) == 3
