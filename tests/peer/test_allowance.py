"""The volunteer's budget where the bytes flow: the egress against real loopback servers."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import web

from peer.allowance import Allowance, Receipt, WindowPool
from peer.budget import ActiveHours, Budget
from peer.egress import Egress, EgressConfig
from peer.wire_cost import IPV4, IPV6, acks_on_wire, connection_frames, fetch_window, on_wire
from tests.sites import serve
from workloads.process_api import FetchRequest

LOCAL = EgressConfig(allow_private=True, respect_robots=False)
BODY = bytes(range(256)) * 400  # 102,400 bytes
NOON = datetime(2026, 11, 27, 12, 0)


class Clock:
    """The volunteer's local time, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def body_app(concurrency: list[int]) -> web.Application:
    """Serves BODY at /big and a slow small page at /slow, noting the most requests in flight."""
    in_flight = 0

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BODY)

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight
        in_flight += 1
        concurrency.append(in_flight)
        try:
            await asyncio.sleep(0.2)
            return web.Response(text="ok")
        finally:
            in_flight -= 1

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    return app


async def test_every_byte_moved_is_counted_against_rates_and_the_cap(tmp_path: Path) -> None:
    allowance = Allowance(Budget(max_down=10_000_000, max_up=1_000_000, cap_bytes=10**9), tmp_path, clock=Clock(NOON))
    async with serve(body_app([])) as base, Egress(LOCAL, allowance) as egress:
        result = await egress.fetch(FetchRequest(id=1, method="GET", url=f"{base}/big", want_body=True))
        unwanted = await egress.fetch(FetchRequest(id=2, method="GET", url=f"{base}/big", want_body=False))
    assert result.body == BODY and unwanted.status == 200
    # Both bodies were read (the second drained up to its limit) with two response heads,
    # counted with the frames that carried them (as IPv4 frames when the connection was still
    # there to ask, else as the costlier IPv6 ones). The second was abandoned: of its deposit,
    # what may have arrived unread stays paid (what the client held, and the kernel's buffer).
    drained = min(len(BODY), 64 * 1024)
    window = fetch_window(10_000_000, None)
    assert window.receive_buffer is not None
    least = on_wire(len(BODY), IPV4) + on_wire(drained, IPV4) + 2 * window.receive_buffer
    most = on_wire(len(BODY) + 1000, IPV6) + on_wire(drained + 1000, IPV6) + 2 * connection_frames() + window.unread
    assert least < allowance.down.used < most
    # Two request heads, and the acknowledgements of what was read.
    acks = acks_on_wire(len(BODY), IPV4) + acks_on_wire(drained, IPV4)
    most_acks = acks_on_wire(len(BODY) + 1000, IPV6) + acks_on_wire(drained + 1000, IPV6)
    assert acks < allowance.up.used < most_acks + 2 * on_wire(400) + 2 * connection_frames()
    assert allowance.status().used == allowance.down.used + allowance.up.used


async def test_concurrent_fetches_never_exceed_the_volunteers_limit(tmp_path: Path) -> None:
    concurrency: list[int] = []
    allowance = Allowance(Budget(max_fetches=2), tmp_path, clock=Clock(NOON))
    # Three hosts, so the per-host politeness limit is not what holds them back.
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    app = body_app(concurrency)
    async with serve(app, hosts[0]) as a, serve(app, hosts[1]) as b, serve(app, hosts[2]) as c:
        async with Egress(LOCAL, allowance) as egress:
            requests = [FetchRequest(id=i, method="GET", url=f"{base}/slow") for i in range(3) for base in (a, b, c)]
            results = await asyncio.gather(*(egress.fetch(r) for r in requests))
    assert [r.status for r in results] == [200] * 9
    assert max(concurrency) == 2


async def test_a_used_up_cap_pauses_the_peer_until_the_period_ends_even_after_a_restart(tmp_path: Path) -> None:
    clock = Clock(NOON)
    budget = Budget(cap_bytes=100_000, cap_period="day")
    allowance = Allowance(budget, tmp_path, clock=clock)
    assert allowance.pause_reason() is None
    async with serve(body_app([])) as base, Egress(LOCAL, allowance) as egress:
        await egress.fetch(FetchRequest(id=1, method="GET", url=f"{base}/big", want_body=True))
    reason = allowance.pause_reason()
    assert reason == "transfer cap of 100 kB/day used up until 2026-11-28 00:00"
    assert allowance.resume_at() == datetime(2026, 11, 28)
    allowance.flush()

    restarted = Allowance(budget, tmp_path, clock=clock)
    assert restarted.pause_reason() == reason
    assert restarted.status().used == allowance.status().used

    clock.now = NOON + timedelta(days=1)
    assert restarted.pause_reason() is None
    assert restarted.status().used == 0


def test_outside_active_hours_the_peer_pauses_and_says_until_when(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 27, 7, 30))
    allowance = Allowance(Budget(active_hours=ActiveHours.parse(["08:00-18:00"])), tmp_path, clock=clock)
    assert allowance.pause_reason() == "outside active hours (08:00-18:00) until 08:00"
    assert allowance.resume_at() == datetime(2026, 11, 27, 8, 0)
    clock.now = datetime(2026, 11, 27, 8, 0)
    assert allowance.pause_reason() is None


async def test_bundle_traffic_charged_to_the_budget_makes_the_egress_wait_for_it(tmp_path: Path) -> None:
    allowance = Allowance(Budget(max_down=100_000, cap_bytes=10**6), tmp_path, clock=Clock(NOON))
    allowance.charge(down=300_000, up=0)  # what libtorrent moved in the last tick
    assert allowance.status().used == 300_000
    # The bucket (burst 20 kB at 100 kB/s) is 280 kB in debt: the next byte waits ~2.8 s.
    waiting = asyncio.create_task(allowance.down.acquire(1))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    waiting.cancel()


def test_capacity_reported_to_coordinators_is_the_sustainable_rate(tmp_path: Path) -> None:
    budget = Budget(max_down=1_000_000, cap_bytes=864_000_000, cap_period="day")  # 10 kB/s over a day
    assert Allowance(budget, tmp_path, clock=Clock(NOON)).status().capacity == 10_000


def test_a_response_keeps_of_its_deposit_only_what_may_have_arrived_unread(tmp_path: Path) -> None:
    allowance = Allowance(Budget(max_down=1_000_000), tmp_path, clock=Clock(NOON))
    window = fetch_window(1_000_000, 4)
    assert window.receive_buffer is not None
    receipt = Receipt(allowance, window)
    assert receipt.kept_deposit() == 0  # nothing of it arrived (e.g. the connection was refused)
    receipt.started = True
    assert receipt.kept_deposit() == window.unread  # given up midway, how much was left unknown
    receipt.abandon(1000)
    assert receipt.kept_deposit() == 1000 + 2 * window.receive_buffer
    receipt.complete = True
    assert receipt.kept_deposit() == 0


async def test_fetches_wait_until_their_window_fits_beside_those_under_way() -> None:
    pool = WindowPool(100)
    order: list[str] = []

    async def fetch(name: str, window: int, hold: float) -> None:
        async with pool.hold(window):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
        order.append(f"{name} out")

    # a and b fit together; c waits for room; d is larger than the pool and goes in alone.
    await asyncio.gather(fetch("a", 60, 0.05), fetch("b", 40, 0.1), fetch("c", 50, 0.01), fetch("d", 500, 0.01))
    assert order[:2] == ["a in", "b in"]
    assert order.index("c in") > order.index("a out")
    assert order.index("d in") > max(order.index("b out"), order.index("c out"))
    assert pool.held == 0


async def test_without_a_rate_every_window_fits() -> None:
    pool = WindowPool(None)
    async with pool.hold(10**9), pool.hold(10**9):
        assert pool.held == 2 * 10**9


async def test_a_budget_set_while_the_peer_runs_lets_its_fetches_run_side_by_side(tmp_path: Path) -> None:
    # The volunteer sets 300 kB/s and two fetches on the page while the peer runs. The client's
    # read buffer used to stay as the session opened it (unlimited), which made each deposit
    # three times too large: fetches then went one at a time, each waiting on its server.
    in_flight, most = 0, 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.2)
        in_flight -= 1
        return web.Response(text="x" * 3000, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{page:.*}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    allowance = Allowance(Budget(), tmp_path, clock=Clock(NOON))
    try:
        async with Egress(EgressConfig(allow_private=True, respect_robots=False), allowance) as egress:
            allowance.reconfigure(Budget(max_down=300_000, max_fetches=2))
            for round_ in range(3):
                requests = [
                    FetchRequest(id=i, url=f"http://127.0.0.1:{port}/{round_}-{i}", method="GET", want_body=True)
                    for i in range(4)
                ]
                results = await asyncio.gather(*(egress.fetch(r) for r in requests))
                assert all(result.status == 200 for result in results)
    finally:
        await runner.cleanup()
    assert most == 2
