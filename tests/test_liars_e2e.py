"""Lying peers against a real coordinator and two real honest peers, on websites whose truth
is known: the final results equal the truth, each liar that lies about answers or versions is
quarantined, the one that claims a huge capacity gets a bounded share, and a huge crawl delay
does not pin a website.

The liars are peer software of someone else's: keys of their own, speaking the coordinator's
API (register, lease, report) from this process, never running the link checker. One says
"ok" of everything without fetching, one "broken"; one names a bundle version it was not
leased; three fetch honestly but claim 1e15 bytes/s, report a robots.txt Crawl-delay of
1e300 s, or add 50 made-up links to every page.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from coordinator.host_pacing import UNCONFIRMED_CRAWL_DELAY
from osaas import owner
from overlay import wire
from overlay.http import Rejected, Unavailable
from overlay.identity import Identity
from peer.client import CoordinatorClient
from tests.processes import job_results, operator_key, start_peer, stopped_on_exit, wait_until_done
from tests.sites import RequestLog, coordinator, serve

pytestmark = pytest.mark.timeout(240)

SITES = 5
PAGES = 5  # per site: each page links to the next two and to a missing page
_HREF = re.compile(r'href="([^"]+)"')


@dataclass
class Liar:
    name: str
    capacity: float = 0.0
    answer: str = "honest"  # "ok", "broken" or "honest" (it fetches)
    forged: bool = False  # its reports name a version it was not leased
    crawl_delay: float | None = None
    injects: int = 0  # made-up links added to every page it reports
    peer_id: str = ""


LIARS = (
    Liar("fabricates-ok", answer="ok"),
    Liar("fabricates-broken", answer="broken"),
    Liar("forges-version", forged=True),
    Liar("inflates-capacity", capacity=1e15),
    Liar("huge-crawl-delay", crawl_delay=1e300),
    Liar("injects-links", injects=50),
)


async def fetched(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """What an honest link check of `url` says (the test's sites have no redirects)."""
    async with session.get(url) as response:
        body = await response.text()
        ok = response.status == 200
    links = [str(URL(url).join(URL(href))) for href in _HREF.findall(body)] if ok else []
    return {
        "url": url,
        "result": "ok" if ok else "broken",
        "status": response.status,
        "final_url": url,
        "redirects": [],
        "error": None if ok else f"HTTP {response.status}",
        "links": links,
    }


def made_up(url: str, result: str) -> dict[str, Any]:
    return {
        "url": url,
        "result": result,
        "status": 200 if result == "ok" else 404,
        "final_url": url,
        "redirects": [],
        "error": None if result == "ok" else "HTTP 404",
        "links": [],
    }


async def lie(liar: Liar, url: str, stop: asyncio.Event) -> None:
    identity = Identity.generate()
    async with aiohttp.ClientSession() as session:
        client = CoordinatorClient(url, identity, session)
        registered = await client.register(wire.RegisterRequest(liar.name, 2, ["linkcheck"], capacity=liar.capacity))
        liar.peer_id = registered.peer_id
        while not stop.is_set():
            try:
                answer = await client.lease(wire.LeaseRequest(max_units=2, workloads=["linkcheck"]))
            except (Unavailable, Rejected):
                await asyncio.sleep(0.5)
                continue
            for lease in answer.leases:
                await report(client, session, liar, lease)
            if not answer.leases:
                await asyncio.sleep(answer.retry_after or 1.0)


async def report(client: CoordinatorClient, session: aiohttp.ClientSession, liar: Liar, lease: wire.Lease) -> None:
    urls = [item["url"] for item in lease.payload["items"]]
    version = lease.bundle.version if lease.bundle is not None else None
    if liar.forged:
        # A unit that "failed" under a version it was not leased: a rollback, were it believed.
        made = wire.Report(lease.unit_id, lease.token, 2, error="crashed", bundle_version="9.9.9")
    else:
        if liar.answer == "honest":
            records = [await fetched(session, u) for u in urls]
            for record in records:
                site = str(URL(record["url"]).origin())
                record["links"] += [f"{site}/made-up/{n}" for n in range(liar.injects)] if record["links"] else []
        else:
            records = [made_up(u, liar.answer) for u in urls]
        made = wire.Report(
            lease.unit_id, lease.token, 0, {"items": records}, bundle_version=version, crawl_delay=liar.crawl_delay
        )
    try:
        await client.report(made)
    except (Unavailable, Rejected):
        pass  # refused: the coordinator says why; a liar does not care


def broken_links_site(log: RequestLog) -> web.Application:
    """Pages 0..PAGES-1 from "/", each linking to the next two and to a missing page: a website
    as many broken links as good ones, where a liar's "ok" is wrong half the time."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        log.requests.append((request.method, request.raw_path))
        return await handler(request)

    app = web.Application(middlewares=[record])

    async def page(request: web.Request) -> web.Response:
        n = int(request.match_info.get("n", -1))
        if n >= PAGES:
            return web.Response(status=404)
        links = [f"/p/{m}" for m in (n + 1, n + 2) if m < PAGES] + [f"/gone/{n + 1}"]
        return web.Response(text=" ".join(f'<a href="{link}">x</a>' for link in links), content_type="text/html")

    app.router.add_get("/", page)
    app.router.add_get("/p/{n:\\d+}", page)
    return app


def truth_of(site: str) -> dict[str, str]:
    return (
        {f"{site}/": "ok"}
        | {f"{site}/p/{n}": "ok" for n in range(PAGES)}
        | {f"{site}/gone/{n}": "broken" for n in range(PAGES + 1)}
    )


def quarantined_in(db: Path, peer_id: str) -> bool:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT quarantined FROM peers WHERE id = ?", (peer_id,)).fetchone()
    conn.close()
    return row is not None and row[0] is not None


async def test_liars_are_caught_and_the_results_equal_the_truth(tmp_path: Path) -> None:
    logs = [RequestLog() for _ in range(SITES)]
    processes: list = []
    stop = asyncio.Event()
    db = tmp_path / "c.sqlite"
    async with contextlib.AsyncExitStack() as stack:
        sites = [await stack.enter_async_context(serve(broken_links_site(log))) for log in logs]
        url = await stack.enter_async_context(coordinator(db, lease_seconds=10.0, host_min_delay=0.05, rechecks=True))
        await stack.enter_async_context(stopped_on_exit(processes))
        truth = {url: result for site in sites for url, result in truth_of(site).items()}
        for name in ("honest-1", "honest-2"):
            await start_peer(
                processes, url, tmp_path / name, "--slots", "2",
                config=tmp_path / "none.toml", log=tmp_path / f"{name}.log",
            )  # fmt: skip
        liars = [asyncio.create_task(lie(liar, url, stop)) for liar in LIARS]
        caught = {"fabricates-ok", "fabricates-broken", "forges-version", "injects-links"}
        try:
            # The same websites checked again, as a CI job would, until every lying key was
            # caught (a small job may end before a liar met enough known answers): each time,
            # the results equal the truth.
            for _ in range(4):
                async with aiohttp.ClientSession() as session:
                    job_id = await owner.submit(
                        session, url, operator_key(), "linkcheck", {"urls": [f"{s}/" for s in sites], "depth": None}
                    )
                status = await wait_until_done(url, job_id, polls=900)
                assert status["state"] == "done", status
                rows = await job_results(url, job_id)
                wrong = [
                    (row["url"], row["result"], row["verdict"])
                    for row in rows
                    if truth.get(row["url"]) != row["result"]
                ]
                assert {row["url"]: row["result"] for row in rows} == truth, wrong
                if caught <= {liar.name for liar in LIARS if quarantined_in(db, liar.peer_id)}:
                    break
        finally:
            stop.set()
            await asyncio.gather(*liars, return_exceptions=True)

    by_name = {liar.name: liar for liar in LIARS}
    with sqlite3.connect(db) as conn:
        quarantined = dict(conn.execute("SELECT id, quarantined FROM peers").fetchall())
        outvoted = dict(conn.execute("SELECT id, outvoted FROM peers").fetchall())
        delays = [delay for (delay,) in conn.execute("SELECT crawl_delay FROM hosts")]
        # The jobs' own units (first answers; not their re-checks): who held each last.
        held = [
            peer
            for (peer,) in conn.execute(
                "SELECT peer_id FROM units JOIN jobs ON jobs.id = units.job_id WHERE jobs.recheck_of IS NULL"
            )
        ]
    conn.close()
    for name in caught:
        assert quarantined[by_name[name].peer_id] is not None, (name, quarantined)
    for name in ("inflates-capacity", "huge-crawl-delay"):
        assert quarantined[by_name[name].peer_id] is None, name  # their results were true
    # The links it made up were outvoted (no made-up page is in the results, above), and it
    # was caught on the links of known pages.
    assert outvoted[by_name["injects-links"].peer_id] > 0
    # Its claim bought it no more than a share of the work (all of it, were claims believed).
    assert held.count(by_name["inflates-capacity"].peer_id) <= len(held) / 2, held
    # One peer's word never slows a website for more than UNCONFIRMED_CRAWL_DELAY.
    assert all(delay <= UNCONFIRMED_CRAWL_DELAY for delay in delays)
