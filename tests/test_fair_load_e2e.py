"""Fair load, end to end: six real peers with different budgets check a site spread over 24
hostnames (127.0.0.2 .. 127.0.0.25); two of them are killed mid-job.

Each peer sends its workload traffic from its own address (127.0.1.N, `--egress-source`), so
the site can tell the peers apart and judge them by what it served: bytes per peer in every
10 s window against that peer's `--max-down`, never two peers on one host at once, one request
at a time per host (the site's robots.txt asks for a crawl delay), and at least the
coordinator's minimum delay before a host passes from one peer to another.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from coordinator import assignment, reputation
from coordinator.reputation import PeerRecord
from coordinator.url_jobs import unit_key
from overlay.identity import Identity
from tests.processes import (
    job_results,
    job_status,
    osaas,
    start,
    start_coordinator,
    stopped_on_exit,
    wait_until_done,
)
from tests.sites import free_port

pytestmark = pytest.mark.timeout(300)

HOSTS = [f"127.0.0.{i}" for i in range(2, 26)]
PAGES = 40  # per host
PAGE_BYTES = 20_000
CRAWL_DELAY = 0.2
RATES = [100_000, 150_000, 200_000, 250_000, 300_000, 350_000]  # bytes/s, one per peer
WINDOW = 10.0
MIN_HANDOVER = 1.0  # coordinator.host_pacing.DEFAULT_MIN_DELAY
# A peer starts a host's next request at least the crawl delay after the previous one ended
# at the peer, which is after it ended here: so the site sees the full delay between the end of
# one request and the start of the next, whatever the arrival jitter (peer.politeness.next_start).
# The slack is float rounding only.
CRAWL_SLACK = 0.001
# A host passes to another peer at least the minimum delay after the coordinator heard the last
# unit end or its lease expire, both after the site served the last request. The coordinator's
# wall clock against the site's monotonic one, and a cancelled request's handler finishing
# after its peer let go, allow this much less.
HANDOVER_SLACK = 0.05
ROBOTS = f"User-agent: *\nCrawl-delay: {CRAWL_DELAY}\n"


@dataclass(frozen=True)
class Served:
    host: str
    source: str
    path: str
    start: float
    end: float
    size: int


def site_app(host: str, served: list[Served]) -> web.Application:
    filler = ("<p>" + "lorem ipsum dolor sit amet " * 40 + "</p>\n") * (PAGE_BYTES // 1100)

    async def page(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = int(request.match_info["n"])
        links = [f'<a href="/p/{m}">{m}</a>' for m in range(n + 1, min(n + 4, PAGES))]
        body = f"<html><body>{' '.join(links)}\n{filler}</body></html>".encode()
        response = web.Response(body=body, content_type="text/html")
        await asyncio.sleep(0.005)
        served.append(Served(host, request.remote or "?", request.path, start, loop.time(), len(body) + 150))
        return response

    async def robots(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        served.append(Served(host, request.remote or "?", request.path, loop.time(), loop.time(), len(ROBOTS) + 150))
        return web.Response(text=ROBOTS)

    app = web.Application()
    app.router.add_get("/p/{n:\\d+}", page)
    app.router.add_get("/robots.txt", robots)
    return app


@contextlib.asynccontextmanager
async def spread_site(served: list[Served]) -> AsyncIterator[dict[str, str]]:
    """The site on every address of HOSTS; yields host -> base URL."""
    runners = []
    bases = {}
    try:
        for host in HOSTS:
            runner = web.AppRunner(site_app(host, served), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, 0).start()
            runners.append(runner)
            bases[host] = f"http://{host}:{runner.addresses[0][1]}"
        yield bases
    finally:
        for runner in runners:
            await runner.cleanup()


def window_overruns(served: list[Served], rates: dict[str, int]) -> list[str]:
    """Every 10 s window (starting at each response) in which a peer got more than 105% of
    its budget."""
    problems = []
    by_source: dict[str, list[Served]] = defaultdict(list)
    for s in served:
        by_source[s.source].append(s)
    for source, rows in by_source.items():
        rows.sort(key=lambda s: s.end)
        limit = 1.05 * rates[source] * WINDOW
        for i, first in enumerate(rows):
            total = sum(s.size for s in rows[i:] if s.end < first.end + WINDOW)
            if total > limit:
                problems.append(f"{source}: {total} bytes in {WINDOW:g} s from {first.end:.1f} (limit {limit:.0f})")
    return problems


def learned_crawl_delays(db: Path) -> set[float]:
    """The crawl delays the running coordinator keeps for hosts (read-only, beside it)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        # One peer's word, or confirmed by a second (coordinator.host_pacing.delay): under
        # UNCONFIRMED_CRAWL_DELAY both rest a host the same.
        return {delay for (delay,) in conn.execute("SELECT MAX(crawl_delay, delay_claim) FROM hosts")}


def politeness_breaches(served: list[Served]) -> list[str]:
    problems = []
    by_host: dict[str, list[Served]] = defaultdict(list)
    for s in served:
        if s.path != "/robots.txt":
            by_host[s.host].append(s)
    for host, rows in by_host.items():
        rows.sort(key=lambda s: s.start)
        for before, after in itertools.pairwise(rows):
            if after.start < before.end:
                problems.append(f"{host}: {after.path} from {after.source} overlaps {before.path} from {before.source}")
            elif before.source == after.source and after.start - before.end < CRAWL_DELAY - CRAWL_SLACK:
                problems.append(
                    f"{host}: {after.path} started {after.start - before.end:.3f} s after the previous ended"
                )
            elif before.source != after.source and after.start - before.end < MIN_HANDOVER - HANDOVER_SLACK:
                problems.append(
                    f"{host}: passed from {before.source} to {after.source} after {after.start - before.end:.2f} s"
                )
    return problems


def peer_keys_each_with_a_host(data_dirs: list[Path], rates: list[int], bases: list[str]) -> None:
    """Identity keys for the peers' data dirs such that every peer is the first rendezvous
    choice (weighted as the coordinator weighs fresh keys claiming its rate) of at least one
    host, so every peer gets work to be judged on. With keys left to chance a peer of little
    weight can be nobody's first choice, and bounded loads rightly leave it without a host."""
    keys = [unit_key(f"{base}/") for base in bases]
    weights = [reputation.weight(rate, PeerRecord(), 0.0) for rate in rates]
    while True:
        for data_dir in data_dirs:
            (data_dir / "identity.key").unlink(missing_ok=True)
        peers = [Identity.load_or_create(data_dir / "identity.key").public_hex for data_dir in data_dirs]
        firsts = {max(peers, key=lambda peer: assignment.score(key, peer, weights[peers.index(peer)])) for key in keys}
        if len(firsts) == len(peers):
            return


async def test_six_budgeted_peers_two_killed_every_url_once_budgets_and_politeness_kept(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    served: list[Served] = []
    processes: list[asyncio.subprocess.Process] = []
    sources = {f"127.0.1.{i + 1}": rate for i, rate in enumerate(RATES)}
    async with spread_site(served) as bases, stopped_on_exit(processes):
        # Re-checks on: a second look at a website keeps its pace too.
        await start_coordinator(processes, tmp_path, port, "--lease-seconds", "6", "--rechecks", "on")
        peer_keys_each_with_a_host([tmp_path / f"peer-{i}" for i in range(len(RATES))], RATES, list(bases.values()))
        peers = []
        for i, (source, rate) in enumerate(sources.items()):
            peer = await start(
                "peer",
                "run",
                "--coordinator",
                url,
                "--data-dir",
                str(tmp_path / f"peer-{i}"),
                "--allow-private",
                "--config",
                str(tmp_path / "none.toml"),
                "--egress-source",
                source,
                "--max-down",
                str(rate),
                log=tmp_path / f"peer-{i}.log",
            )
            peers.append(peer)
            processes.append(peer)
        code, out, err = await osaas("job", "submit", *(f"{base}/p/0" for base in bases.values()), "--coordinator", url)
        assert code == 0, err
        job_id = int(out)

        total = len(HOSTS) * PAGES
        while (status := await job_status(url, job_id))["items_done"] < total // 3:
            assert status["state"] == "running"
            await asyncio.sleep(0.2)
        # The peers told the coordinator the crawl delay they keep (with their reports), and
        # it paces the hosts by it between units, whichever peer runs the next one.
        assert CRAWL_DELAY in learned_crawl_delays(tmp_path / "c.sqlite")
        for peer in peers[:2]:
            peer.send_signal(signal.SIGKILL)
            await peer.wait()

        status = await wait_until_done(url, job_id, polls=1200)
        assert status["state"] == "done", status
        items = await job_results(url, job_id)
        expected = sorted(f"{base}/p/{n}" for base in bases.values() for n in range(PAGES))
        assert sorted(i["url"] for i in items) == expected  # every URL, each exactly once
        assert {i["result"] for i in items} == {"ok"}

    assert set(s.source for s in served) <= set(sources)
    assert len({s.source for s in served}) == len(sources), "every peer did some of the work"
    assert window_overruns(served, sources) == []
    assert politeness_breaches(served) == []
