"""Who may ask how much, and how much it may say: rate limits (429 with Retry-After) on
register, lease, report and submit, per key and per address, and a cap on every string field.

Each hole these close was open before: ten signed registrations carrying 128 KB strings grew a
database from 13 MB to 120 MB in 3.5 s, and new keys cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator.api import make_app
from coordinator.edge import LIMITER, NONCES, STORE
from coordinator.owner_limits import Limits
from coordinator.rate_limits import DEFAULT_PER_ADDRESS, DEFAULT_PER_KEY, Rate, RateLimiter, RateLimits, Route
from coordinator.sql import SqlStore
from overlay import http
from overlay.identity import Identity
from overlay.wire import KEY_HEADER, MAX_NAME, MAX_PEER_NAME, MAX_TEXT, decode, encode, sign_request
from tests.coordinator.conftest import (
    LEASE_SECONDS,
    MSGPACK,
    OPERATOR_KEY,
    Clock,
    Linkcheck,
    Peer,
    add_linkcheck,
    as_operator,
    audience,
    post,
    submit,
)

HUGE = "x" * (128 * 1024)
REGISTRATION = {"name": "peer", "slots": 4, "workloads": ["*"]}
Serve = Callable[..., Awaitable[TestClient]]


def limits(
    per_key: dict[Route, Rate] | None = None, per_address: dict[Route, Rate] | None = None, **kw: Any
) -> RateLimits:
    """The defaults, but for the rates given."""
    return RateLimits({**DEFAULT_PER_KEY, **(per_key or {})}, {**DEFAULT_PER_ADDRESS, **(per_address or {})}, **kw)


@pytest.fixture
async def serve(tmp_path: Path, clock: Clock, linkcheck: Linkcheck) -> AsyncIterator[Serve]:
    """Start a coordinator with the rate limits a test asks for (one per test). On SQLite only:
    the limits are the door's, before any store is asked."""
    db_path = tmp_path / "coordinator.sqlite"
    async with contextlib.AsyncExitStack() as stack:

        async def start(rate_limits: RateLimits | None = None, app_clock: Callable[[], float] = clock) -> TestClient:
            store = SqlStore(db_path, unit_size=3, max_attempts=3)
            app = make_app(store, lease_seconds=LEASE_SECONDS, clock=app_clock, rate_limits=rate_limits)
            client = await stack.enter_async_context(TestClient(TestServer(app, host="127.0.0.1")))
            await add_linkcheck(store, linkcheck, app_clock())
            await as_operator(store, app_clock())
            return client

        yield start


def limiter(client: TestClient) -> RateLimiter:
    assert client.app is not None
    return client.app[LIMITER]


async def peers_known(client: TestClient) -> int:
    assert client.app is not None
    return await client.app[STORE].peer_count()


# ---- string caps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "where", "cap"),
    [
        ("version", HUGE, "body.version", MAX_NAME),
        ("workloads", [HUGE], "body.workloads[0]", MAX_NAME),
        ("name", HUGE, "body.name", MAX_PEER_NAME),
    ],
)
async def test_a_registration_with_a_128_kb_string_is_refused(
    serve: Serve, clock: Clock, field: str, value: Any, where: str, cap: int
) -> None:
    client = await serve()
    status, answer = await Peer(client, clock).post("/v1/peers/register", REGISTRATION | {field: value})
    assert (status, answer["error"]["code"]) == (400, "bad_request")
    assert answer["error"]["message"] == f"{where} is {128 * 1024} characters long; at most {cap} are allowed"
    assert await peers_known(client) == 0


async def test_every_string_a_peer_or_owner_sends_is_capped(serve: Serve, clock: Clock) -> None:
    client = await serve()
    peer = Peer(client, clock)
    await peer.register()
    await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    refusals = [
        await peer.post("/v1/leases", {"max_units": 1, "workloads": ["linkcheck"] * 10_000}),
        await peer.post("/v1/leases", {"max_units": 1, "workloads": [HUGE]}),
        await peer.report(lease, exit_code=2, error=HUGE),
        await peer.post("/v1/reports", {"unit_id": 1, "token": 1, "exit_code": 2, "bundle_version": HUGE}),
        await post(client, "/v1/jobs", {"workload": HUGE, "input": {"urls": ["http://a.test/"]}}),
        await post(
            client, "/v1/jobs", {"workload": "linkcheck", "input": {"urls": ["http://a.test/"]}, "version": HUGE}
        ),
        await post(client, "/v1/bundles/linkcheck/rollout", {"version": HUGE, "percent": 50}),
    ]
    for status, answer in refusals:
        assert status == 400, answer
        assert "\n" not in answer["error"]["message"]
    status, answer = await peer.report(lease, exit_code=2, error="e" * MAX_TEXT)  # at the cap: taken
    assert (status, answer["accepted"]) == (200, True)


# ---- rate limits ---------------------------------------------------------------------------


async def test_registrations_beyond_the_rate_get_429_with_retry_after(serve: Serve, clock: Clock) -> None:
    client = await serve(limits(per_key={Route.REGISTER: Rate(per_second=1 / 60, burst=2)}))
    peer = Peer(client, clock)
    for _ in range(2):
        await peer.register()
    body = encode(REGISTRATION)
    path = "/v1/peers/register"
    async with client.post(
        path, data=body, headers=sign_request(peer.identity, "POST", path, body, clock(), audience(client)) | MSGPACK
    ) as resp:
        status, retry_after, answer = resp.status, resp.headers.get("Retry-After"), decode(await resp.read())
    assert (status, retry_after, answer["error"]["code"]) == (429, "60", "rate_limited")
    assert answer["error"]["message"] == (
        "too many register requests from this key (limit 1 a minute, bursts of 2); try again in 60 s"
    )
    clock.advance(60)
    await peer.register()


async def test_leases_renewals_and_releases_share_one_rate(serve: Serve, clock: Clock) -> None:
    client = await serve(limits(per_key={Route.LEASE: Rate(per_second=1, burst=3)}))
    peer = Peer(client, clock)
    await peer.register()
    await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    ref = {"unit_id": lease["unit_id"], "token": lease["token"]}
    assert (await peer.post("/v1/leases/renew", ref))[0] == 200
    assert await peer.lease() == []
    status, answer = await peer.post("/v1/leases/release", ref)
    assert (status, answer["error"]["code"]) == (429, "rate_limited")
    assert "lease requests from this key" in answer["error"]["message"]
    clock.advance(1)
    assert (await peer.post("/v1/leases/release", ref))[0] == 200
    # Reports have their own bucket: a peer out of lease requests still delivers its results.
    assert (await peer.report(lease, exit_code=2, error="late"))[0] == 409


async def test_forged_headers_cannot_spend_an_honest_keys_requests(serve: Serve, clock: Clock) -> None:
    client = await serve(limits(per_key={Route.LEASE: Rate(per_second=1 / 60, burst=2)}))
    honest, forger = Peer(client, clock), Peer(client, clock)
    await honest.register()
    body = encode({"max_units": 1, "workloads": ["linkcheck"]})
    for _ in range(5):  # signed by the forger, naming the honest peer's key
        headers = sign_request(forger.identity, "POST", "/v1/leases", body, clock(), audience(client)) | MSGPACK
        headers[KEY_HEADER] = honest.identity.public_hex
        async with client.post("/v1/leases", data=body, headers=headers) as resp:
            assert resp.status == 401
    assert await honest.lease() == [] and await honest.lease() == []


async def test_fresh_keys_from_one_address_meet_the_address_limit(serve: Serve, clock: Clock) -> None:
    client = await serve(limits(per_address={Route.REGISTER: Rate(per_second=1 / 60, burst=5)}))
    answers = [await Peer(client, clock).post("/v1/peers/register", REGISTRATION) for _ in range(8)]
    assert [status for status, _ in answers] == [200] * 5 + [429] * 3
    assert "register requests from this address" in answers[-1][1]["error"]["message"]
    assert await peers_known(client) == 5


async def test_an_owner_is_told_the_coordinators_reason_for_a_429(serve: Serve) -> None:
    # Real time: the owner's client signs with the wall clock.
    client = await serve(limits(per_key={Route.SUBMIT: Rate(per_second=1 / 60, burst=1)}), app_clock=time.time)
    base = str(client.make_url("/")).rstrip("/")
    job = {"workload": "linkcheck", "input": {"urls": ["http://a.test/"]}}
    async with aiohttp.ClientSession() as session:
        await http.call(session, "POST", base, "/v1/jobs", job, identity=OPERATOR_KEY)
        with pytest.raises(http.Unavailable) as refused:
            await http.call(session, "POST", base, "/v1/jobs", job, identity=OPERATOR_KEY)
    assert str(refused.value).startswith(
        "coordinator answered HTTP 429: too many submit requests from this key (limit 1 a minute, bursts of 1)"
    )
    assert refused.value.retry_after is not None and 55 <= refused.value.retry_after <= 60


async def test_an_owner_is_told_which_of_its_limits_it_reached(serve: Serve) -> None:
    client = await serve(app_clock=time.time)
    assert client.app is not None
    owner = Identity.generate()  # an operator's own requests have no limits
    await client.app[STORE].grant("alice", owner.public_hex, "owner", "operator", time.time())
    await client.app[STORE].set_limits(owner.public_hex, Limits(urls_per_job=1), "operator", time.time())
    base = str(client.make_url("/")).rstrip("/")
    job = {"workload": "linkcheck", "input": {"urls": ["http://a.test/1", "http://a.test/2"]}}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(http.Unavailable) as refused:
            await http.call(session, "POST", base, "/v1/jobs", job, identity=owner)
    # It used to say only "coordinator answered HTTP 429".
    assert str(refused.value) == (
        "coordinator answered HTTP 429: limit reached: 1 URLs per job, this job has 2 to start with"
    )


# ---- floods --------------------------------------------------------------------------------


async def _register_all(client: TestClient, clock: Clock, keys: list[Identity], connections: int = 32) -> list[int]:
    """Register every key, `connections` at a time, each with the largest strings allowed;
    their statuses. Through a session of its own: a TestClient keeps every response."""
    body = encode({"name": "n" * MAX_PEER_NAME, "slots": 256, "workloads": [f"w{i:063}" for i in range(64)]})
    url = client.make_url("/v1/peers/register")
    gate = asyncio.Semaphore(connections)

    async def one(session: aiohttp.ClientSession, key: Identity) -> int:
        async with gate:
            headers = sign_request(key, "POST", url.path, body, clock(), audience(client)) | MSGPACK
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        return list(await asyncio.gather(*(one(session, key) for key in keys)))


async def test_a_flood_of_fresh_keys_leaves_the_coordinator_bounded(serve: Serve, clock: Clock) -> None:
    client = await serve()  # the defaults
    keys = [Identity.generate() for _ in range(3000)]
    burst = DEFAULT_PER_ADDRESS[Route.REGISTER].burst
    assert set(await _register_all(client, clock, keys[:200])) == {200, 429}  # the address's burst
    # A first wave grows what any traffic grows once (connections, buffers, task sets); a
    # second as large must grow nothing that stays: without the limits, its nonces alone
    # would stay (~250 bytes each).
    tracemalloc.start()
    try:
        statuses = await _register_all(client, clock, keys[200:1600])
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        statuses += await _register_all(client, clock, keys[1600:])
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert set(statuses) == {429}
    assert await peers_known(client) == burst
    assert client.app is not None and len(client.app[NONCES]) == burst
    tracked = limiter(client).tracked()
    assert tracked["register/address"] == 1 and tracked["register/key"] == burst
    assert grown < 200_000, f"{grown} bytes more after 1,400 refused registrations"  # ~1.2 MB unlimited


async def test_a_flood_from_many_addresses_leaves_the_tables_bounded(serve: Serve, clock: Clock) -> None:
    client = await serve(limits(per_address={Route.REGISTER: Rate(per_second=1 / 60, burst=2)}, max_tracked=16))
    url = client.make_url("/v1/peers/register")
    body = encode(REGISTRATION)
    statuses = []
    for n in range(2, 66):  # 64 loopback addresses, 4 fresh keys each
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.0.{n}", 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(4):
                key = Identity.generate()
                headers = sign_request(key, "POST", url.path, body, clock(), audience(client)) | MSGPACK
                async with session.post(url, data=body, headers=headers) as resp:
                    statuses.append(resp.status)
    # Each table holds at most 16: 16 addresses with 2 registrations each, of which the first
    # 16 keys fill the key table; later newcomers wait until a bucket is full again.
    tracked = limiter(client).tracked()
    assert tracked["register/address"] == 16 and tracked["register/key"] == 16
    assert statuses.count(200) == 16 == await peers_known(client)
    assert statuses.count(429) == 64 * 4 - 16
