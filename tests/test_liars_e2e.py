"""Lying peers against a real coordinator and two real honest peers, on websites whose truth
is known: the final results equal the truth, each liar that lies about answers or versions is
quarantined, the one that claims a huge capacity gets a bounded share, and a huge crawl delay
does not pin a website.

The liars are peer software of someone else's: keys of their own, speaking the coordinator's
API (register, lease, report) from this process, never running the link checker. One says
"ok" of everything without fetching, one "broken"; one names a bundle version it was not
leased; two fetch honestly but claim 1e15 bytes/s, or a robots.txt Crawl-delay of 1e300 s.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from coordinator.host_pacing import UNCONFIRMED_CRAWL_DELAY
from osaas import owner
from overlay import wire
from overlay.http import Rejected, Unavailable
from overlay.identity import Identity
from peer.client import CoordinatorClient
from tests.processes import job_results, operator_key, start_peer, stopped_on_exit, wait_until_done
from tests.sites import RequestLog, coordinator, generated_site_app, generated_site_urls, serve

pytestmark = pytest.mark.timeout(240)

SITES = 4
PAGES = 12  # per site: pages 0 and 10 link to a missing page
_HREF = re.compile(r'href="([^"]+)"')


@dataclass
class Liar:
    name: str
    capacity: float = 0.0
    answer: str = "honest"  # "ok", "broken" or "honest" (it fetches)
    forged: bool = False  # its reports name a version it was not leased
    crawl_delay: float | None = None
    peer_id: str = ""


LIARS = (
    Liar("fabricates-ok", answer="ok"),
    Liar("fabricates-broken", answer="broken"),
    Liar("forges-version", forged=True),
    Liar("inflates-capacity", capacity=1e15),
    Liar("huge-crawl-delay", crawl_delay=1e300),
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
                await asyncio.sleep(0.3)


async def report(client: CoordinatorClient, session: aiohttp.ClientSession, liar: Liar, lease: wire.Lease) -> None:
    urls = [item["url"] for item in lease.payload["items"]]
    version = lease.bundle.version if lease.bundle is not None else None
    if liar.forged:
        # A unit that "failed" under a version it was not leased: a rollback, were it believed.
        made = wire.Report(lease.unit_id, lease.token, 2, error="crashed", bundle_version="9.9.9")
    else:
        if liar.answer == "honest":
            records = [await fetched(session, u) for u in urls]
        else:
            records = [made_up(u, liar.answer) for u in urls]
        made = wire.Report(
            lease.unit_id, lease.token, 0, {"items": records}, bundle_version=version, crawl_delay=liar.crawl_delay
        )
    try:
        await client.report(made)
    except (Unavailable, Rejected):
        pass  # refused: the coordinator says why; a liar does not care


async def test_liars_are_caught_and_the_results_equal_the_truth(tmp_path: Path) -> None:
    logs = [RequestLog() for _ in range(SITES)]
    processes: list = []
    stop = asyncio.Event()
    db = tmp_path / "c.sqlite"
    async with (
        serve(generated_site_app(logs[0], PAGES)) as site0,
        serve(generated_site_app(logs[1], PAGES)) as site1,
        serve(generated_site_app(logs[2], PAGES)) as site2,
        serve(generated_site_app(logs[3], PAGES)) as site3,
        coordinator(db, lease_seconds=10.0, host_min_delay=0.05) as url,
        stopped_on_exit(processes),
    ):
        sites = (site0, site1, site2, site3)
        truth: dict[str, str] = {}
        for site in sites:
            good, broken = generated_site_urls(site, PAGES)
            truth |= dict.fromkeys(good, "ok") | dict.fromkeys(broken, "broken")
        for name in ("honest-1", "honest-2"):
            await start_peer(
                processes, url, tmp_path / name, "--slots", "2",
                config=tmp_path / "none.toml", log=tmp_path / f"{name}.log",
            )  # fmt: skip
        liars = [asyncio.create_task(lie(liar, url, stop)) for liar in LIARS]
        try:
            async with aiohttp.ClientSession() as session:
                job_id = await owner.submit(
                    session, url, operator_key(), "linkcheck", {"urls": [f"{s}/" for s in sites], "depth": None}
                )
            status = await wait_until_done(url, job_id, polls=900)
        finally:
            stop.set()
            await asyncio.gather(*liars, return_exceptions=True)
        assert status["state"] == "done", status
        rows = await job_results(url, job_id)
        results = {row["url"]: row["result"] for row in rows}
        wrong = [
            (row["url"], row["result"], row["verdict"], row["answers"])
            for row in rows
            if truth.get(row["url"]) != row["result"]
        ]
        assert results == truth, (wrong, {liar.name: liar.peer_id[:12] for liar in LIARS})

    by_name = {liar.name: liar for liar in LIARS}
    with sqlite3.connect(db) as conn:
        quarantined = dict(conn.execute("SELECT id, quarantined FROM peers").fetchall())
        delays = [delay for (delay,) in conn.execute("SELECT crawl_delay FROM hosts")]
        # The job's own units (first answers; not its re-checks): who held each last.
        held = [peer for (peer,) in conn.execute("SELECT peer_id FROM units WHERE job_id = ?", (job_id,))]
    conn.close()
    for name in ("fabricates-ok", "fabricates-broken", "forges-version"):
        assert quarantined[by_name[name].peer_id] is not None, (name, quarantined)
    for name in ("inflates-capacity", "huge-crawl-delay"):
        assert quarantined[by_name[name].peer_id] is None, name  # their answers were true
    # Its claim bought it no more than a share of the work (all of it, were claims believed).
    assert held.count(by_name["inflates-capacity"].peer_id) <= len(held) / 2, held
    # One peer's word never slows a website for more than UNCONFIRMED_CRAWL_DELAY.
    assert all(delay <= UNCONFIRMED_CRAWL_DELAY for delay in delays)
