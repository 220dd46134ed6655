"""Peers trust only admitted coordinators (docs/security.md "Admitting coordinators"). Real parts
on loopback: kademlia nodes (ours, and a plain one that stores whatever it is sent), coordinator
servers, and servers that answer as hostile coordinators would.

Each hole the issue names is a test here:
- anyone could announce a coordinator under a network: 50 unadmitted keys announce, with every
  kind of wrong certificate, and peers find and register with the admitted coordinators only;
- a peer posted to whatever URL an announcement named, loopback included: it now contacts only
  URLs that pass the address policy unless private addresses are allowed;
- a peer read a coordinator's answer whole, however large: answers are now read with a cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from kademlia.network import Server as PlainKademlia
from kademlia.utils import digest

from coordinator.announcer import Announcer
from coordinator.api import make_app
from coordinator.sql import SqlStore
from overlay import http, records, wire
from overlay.announcements import NONCE_SIZE, CoordinatorAnnouncement, coordinators_key, hello_message
from overlay.certificates import COORDINATOR, DELEGATE, Admission, Certificate, issue
from overlay.dht import DhtNode
from overlay.identity import Identity
from peer.client import CoordinatorClient
from peer.discovery import find_coordinators
from peer.egress import policy_resolver
from tests.sites import serve

pytestmark = pytest.mark.timeout(120)

NETWORK = "sybilnet"
SYBILS = 50


class HostileServer:
    """One HTTP server answering as many coordinators at once, each under /s/I: it proves key
    I (so only the certificate can keep a peer away) and counts every request it gets."""

    def __init__(self, keys: list[Identity]) -> None:
        self.keys = keys
        self.requests = 0

    def app(self) -> web.Application:
        async def anything(request: web.Request) -> web.Response:
            self.requests += 1
            index, _, rest = request.match_info["tail"].partition("/")
            if rest == "v1/hello" and index.isdigit() and int(index) < len(self.keys):
                nonce = wire.decode(await request.read())["nonce"]
                signed = {"signature": self.keys[int(index)].sign(hello_message(nonce)), "load": 10**6, "peers": 0}
                return web.Response(body=wire.encode(signed), content_type=wire.CONTENT_TYPE)
            return web.Response(body=wire.encode({"lease_seconds": 60.0}), content_type=wire.CONTENT_TYPE)

        app = web.Application()
        app.router.add_route("*", "/s/{tail:.*}", anything)
        return app


def sybil_chain(i: int, sybil: Identity, network_key: Identity, admitted: Admission, now: float):
    """A different wrong certificate chain for each sybil, in turn."""
    fake_network = Identity.generate()
    kinds = [
        (),  # none at all
        (issue(sybil, sybil.public_key, NETWORK, COORDINATOR, now + 600, now),),  # self-signed
        (issue(fake_network, sybil.public_key, NETWORK, COORDINATOR, now + 600, now),),  # another network key
        (issue(network_key, sybil.public_key, "othernet", COORDINATOR, now + 600, now),),  # another network
        admitted.chain,  # an admitted coordinator's certificate, copied
        (issue(network_key, sybil.public_key, NETWORK, COORDINATOR, now - 1, now - 100),),  # expired
        (issue(network_key, sybil.public_key, NETWORK, DELEGATE, now + 600, now),),  # a delegate, not a coordinator
        (  # a chain through a delegate the network never certified
            issue(sybil, fake_network.public_key, NETWORK, DELEGATE, now + 600, now),
            issue(fake_network, sybil.public_key, NETWORK, COORDINATOR, now + 600, now),
        ),
    ]
    return kinds[i % len(kinds)]


def sybil_record(i: int, sybil: Identity, key: str, url: str, chain: tuple[Certificate, ...], now: float):
    announcement = CoordinatorAnnouncement(sybil.public_hex, url, NETWORK, 10**6, 0, ("linkcheck",), now, chain)
    return records.sign(sybil, key, announcement.payload(), now + i * 0.001, 120)  # newer than the admitted ones


@contextlib.asynccontextmanager
async def admitted_coordinator(
    tmp_path: Path, name: str, identity: Identity, admission: Admission, bootstrap
) -> AsyncIterator[tuple[str, DhtNode]]:
    """A real coordinator app on loopback, announced by the real Announcer from a DHT node of its own."""
    store = SqlStore(tmp_path / f"{name}.sqlite")
    async with serve(make_app(store, identity=identity)) as url, DhtNode(("127.0.0.1", 0), [bootstrap]) as dht:
        assert await Announcer(dht, identity, store, url=url, admission=admission).announce_once() >= 1
        yield url, dht


async def test_fifty_unadmitted_coordinators_cannot_draw_peers_away(tmp_path: Path) -> None:
    network_key, delegate = Identity.generate(), Identity.generate()
    coordinators = [Identity.generate(), Identity.generate()]
    now = time.time()
    direct = Admission(
        NETWORK,
        network_key.public_key,
        (issue(network_key, coordinators[0].public_key, NETWORK, COORDINATOR, now + 3600, now),),
    )
    delegation = issue(network_key, delegate.public_key, NETWORK, DELEGATE, now + 3600, now)
    through_delegate = Admission(
        NETWORK,
        network_key.public_key,
        (delegation, issue(delegate, coordinators[1].public_key, NETWORK, COORDINATOR, now + 3600, now)),
    )
    key = coordinators_key(NETWORK, network_key.public_key)
    sybils = [Identity.generate() for _ in range(SYBILS)]
    hostile = HostileServer(sybils)
    async with contextlib.AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(DhtNode(("127.0.0.1", 0)))]
        for _ in range(4):
            nodes.append(await stack.enter_async_context(DhtNode(("127.0.0.1", 0), [nodes[0].address])))
        bootstrap = nodes[0].address
        admitted_urls = set()
        for i, (identity, admission) in enumerate(zip(coordinators, (direct, through_delegate), strict=True)):
            url, _ = await stack.enter_async_context(
                admitted_coordinator(tmp_path, f"c{i}", identity, admission, bootstrap)
            )
            admitted_urls.add(url)
        hostile_url = await stack.enter_async_context(serve(hostile.app()))
        sybil_records = [
            sybil_record(i, sybil, key, f"{hostile_url}/s/{i}", sybil_chain(i, sybil, network_key, direct, now), now)
            for i, sybil in enumerate(sybils)
        ]
        # The sybils announce after the admitted coordinators, each with a newer record, through
        # our nodes (which refuse them) ...
        attacker = await stack.enter_async_context(DhtNode(("127.0.0.1", 0), [bootstrap]))
        for record in sybil_records:
            assert await attacker.publish(key, record) == 0
        # ... and through a plain kademlia node, which stores and hands out whatever it is sent.
        plain = PlainKademlia()
        await plain.listen(0, interface="127.0.0.1")
        stack.callback(plain.stop)
        await plain.bootstrap([bootstrap])
        value = records.encode_set(key, sybil_records[:12])
        await plain.set_digest(digest(key), value)
        # kademlia keeps a value itself only when its own id is among the key's closest (random
        # ids: not always); a hostile node keeps it whatever.
        plain.storage[digest(key)] = value
        assert plain.storage.get(digest(key)) is not None  # it holds them, and answers lookups with them

        peers = []
        for _ in range(3):
            peers.append(await stack.enter_async_context(DhtNode(("127.0.0.1", 0), [bootstrap])))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        for peer_node in peers:
            found = await find_coordinators(
                peer_node, session, NETWORK, network_key.public_key, workloads=(wire.ANY_WORKLOAD,), allow_private=True
            )
            assert {c.announcement.url for c in found} == admitted_urls
            peer = Identity.generate()
            client = CoordinatorClient(found[0].announcement.url, peer, session)
            answer = await client.register(wire.RegisterRequest(name="peer", slots=1, workloads=["linkcheck"]))
            assert answer.lease_seconds > 0
        # What the DHT holds under the key: the admitted coordinators' records only.
        held = await nodes[-1].lookup(key)
        assert {r.signer for r in held} == {c.public_key for c in coordinators}
    assert hostile.requests == 0  # no peer sent a sybil anything: not a proof, not a registration


async def test_an_admitted_coordinator_at_a_private_address_is_not_contacted(tmp_path: Path) -> None:
    network_key, coordinator = Identity.generate(), Identity.generate()
    now = time.time()
    admission = Admission(
        NETWORK,
        network_key.public_key,
        (issue(network_key, coordinator.public_key, NETWORK, COORDINATOR, now + 3600, now),),
    )
    seen = []

    @web.middleware
    async def count(request: web.Request, handler):
        seen.append(request.path)
        return await handler(request)

    app = make_app(SqlStore(tmp_path / "c.sqlite"), identity=coordinator)
    app.middlewares.insert(0, count)
    key = coordinators_key(NETWORK, network_key.public_key)
    async with (
        serve(app) as url,
        DhtNode(("127.0.0.1", 0)) as first,
        DhtNode(("127.0.0.1", 0), [first.address]) as peer,
    ):
        port = url.rsplit(":", 1)[1]
        connector = aiohttp.TCPConnector(resolver=policy_resolver(allow_private=False))
        async with aiohttp.ClientSession(connector=connector) as session:
            # Announced by its IP address (127.0.0.1), and by a name that resolves to it.
            for announced in (url, f"http://localhost:{port}"):
                announcement = CoordinatorAnnouncement(
                    coordinator.public_hex, announced, NETWORK, 1, 0, ("linkcheck",), time.time(), admission.chain
                )
                record = records.sign(coordinator, key, announcement.payload(), time.time(), 60)
                await first.publish(key, record)
                found = await find_coordinators(
                    peer, session, NETWORK, network_key.public_key, workloads=(wire.ANY_WORKLOAD,)
                )
                assert found == []
            assert seen == []  # nothing reached the server
            # The volunteer who allows private addresses (a network on their own machine) gets it.
            async with aiohttp.ClientSession() as open_session:
                found = await find_coordinators(
                    peer,
                    open_session,
                    NETWORK,
                    network_key.public_key,
                    workloads=(wire.ANY_WORKLOAD,),
                    allow_private=True,
                )
            assert [c.announcement.public_key for c in found] == [coordinator.public_hex]


def streaming_app(total: int, *, declare_length: bool, sent: list[int]) -> web.Application:
    """Answers every request with `total` bytes of a msgpack binary, streamed (never held)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": wire.CONTENT_TYPE})
        if declare_length:
            response.content_length = total + 5
        await response.prepare(request)
        chunk = b"\0" * 2**16
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await response.write(b"\xc6" + total.to_bytes(4, "big"))  # bin 32 of `total` bytes
            while sent[0] < total:
                await response.write(chunk)
                sent[0] += len(chunk)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_a_huge_answer_is_refused_not_read_whole(declare_length: bool) -> None:
    total = 2**30 if declare_length else 128 * 2**20  # a GiB declared; 128 MiB streamed without a length
    sent = [0]
    async with serve(streaming_app(total, declare_length=declare_length, sent=sent)) as url:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(http.Unavailable, match="over 16777216 bytes") as refused:
                await http.call(session, "POST", url, "/v1/hello", {"nonce": b"\0" * NONCE_SIZE})
            assert "\n" not in str(refused.value)
    # Read up to the cap and no further (what the server got written is bounded by socket buffers).
    assert sent[0] < 48 * 2**20
