"""A real peer behind an overloaded front: 503 and 429 with Retry-After on every endpoint
before the coordinator answers. The peer backs off at least as long as it was asked to, keeps
its finished reports until they are accepted, and the job completes with every URL once; the
reports that piled up meanwhile go to the coordinator in one batch."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from osaas import owner
from overlay import wire
from tests.processes import operator_key
from tests.sites import RequestLog, generated_site_app, generated_site_urls, serve
from tests.sites import coordinator as coordinator_at

pytestmark = pytest.mark.timeout(120)

REFUSALS_PER_PATH = 2
RETRY_AFTER = 2


Refusal = Callable[[web.Request, bytes], web.Response | None]


def front(upstream: str, refuse: Refusal) -> web.Application:
    """Forwards every request to `upstream` unless `refuse` answers it first."""
    session: aiohttp.ClientSession | None = None

    async def forward(request: web.Request) -> web.Response:
        nonlocal session
        body = await request.read()
        refusal = refuse(request, body)
        if refusal is not None:
            return refusal
        session = session or aiohttp.ClientSession()
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith(("x-osaas", "content-type"))}
        async with session.request(request.method, upstream + request.path_qs, data=body, headers=headers) as answer:
            return web.Response(status=answer.status, body=await answer.read(), content_type=answer.content_type)

    async def close_session(app: web.Application) -> None:
        if session is not None:
            await session.close()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_cleanup.append(close_session)
    return app


def overloaded(refused: Counter[str]) -> Refusal:
    """Answers the first requests to each path with 503 or 429."""

    def refuse(request: web.Request, body: bytes) -> web.Response | None:
        if refused[request.path] >= REFUSALS_PER_PATH:
            return None
        refused[request.path] += 1
        status = 503 if refused[request.path] == 1 else 429
        return web.Response(status=status, headers={"Retry-After": str(RETRY_AFTER)})

    return refuse


async def peer_until_done(
    tmp_path: Path, front_url: str, session: aiohttp.ClientSession, coordinator: str, job_id: int
) -> tuple[wire.JobStatus, list[dict[str, Any]]]:
    """Run a real `osaas peer run` through `front_url` until the job is done (or 60 s passed)."""
    with open(tmp_path / "peer.log", "wb") as log_file:
        peer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "osaas",
            "peer",
            "run",
            "--coordinator",
            front_url,
            "--status-port",
            "off",
            "--data-dir",
            str(tmp_path / "peer"),
            "--allow-private",
            stdout=log_file,
            stderr=log_file,
        )
    try:
        for _ in range(600):
            status = await owner.status(session, coordinator, operator_key(), job_id)
            if status.state == "done":
                break
            await asyncio.sleep(0.1)
        return status, await owner.results(session, coordinator, operator_key(), job_id)
    finally:
        peer.terminate()
        await peer.wait()


async def test_peer_honours_retry_after_and_keeps_reports_until_accepted(tmp_path: Path) -> None:
    refused: Counter[str] = Counter()
    async with (
        coordinator_at(tmp_path / "c.sqlite", unit_size=10, lease_seconds=30.0) as coordinator,
        serve(front(coordinator, overloaded(refused))) as front_url,
    ):
        async with serve(generated_site_app(RequestLog(), pages=30)) as site, aiohttp.ClientSession() as session:
            job_id = await owner.submit(
                session, coordinator, operator_key(), "linkcheck", {"urls": [f"{site}/"], "depth": None}
            )
            status, items = await peer_until_done(tmp_path, front_url, session, coordinator, job_id)

    assert status.state == "done"
    ok, broken = generated_site_urls(site, 30)
    assert sorted(item["url"] for item in items) == sorted(ok | broken)
    assert {item["url"] for item in items if item["result"] == "broken"} == broken
    assert all(refused[path] == REFUSALS_PER_PATH for path in ("/v1/peers/register", "/v1/leases", "/v1/reports"))

    log = (tmp_path / "peer.log").read_text()
    assert "HTTP 503" in log and "HTTP 429" in log
    delays = [float(d) for d in re.findall(r"retrying in ([0-9.]+) s", log)]
    assert len(delays) >= 4 and all(d >= RETRY_AFTER for d in delays), delays
    assert "kept for later" in log  # a finished report refused with 503 stayed in the outbox
    assert not list((tmp_path / "peer" / "outbox").glob("*.report"))


def reports_held_back(seen: list[tuple[str, int]], hold: float) -> Refusal:
    """Answers report requests with 503 for `hold` seconds after the first one, so that finished
    reports pile up in the peer's outbox; notes the later ones (path, reports in it)."""
    first_report: float | None = None

    def refuse(request: web.Request, body: bytes) -> web.Response | None:
        nonlocal first_report
        if not request.path.startswith("/v1/reports"):
            return None
        now = asyncio.get_running_loop().time()
        first_report = first_report or now
        if now - first_report < hold:
            return web.Response(status=503, headers={"Retry-After": "1"})
        seen.append((request.path, len(wire.decode(body)["reports"]) if request.path.endswith("/batch") else 1))
        return None

    return refuse


async def test_reports_that_piled_up_go_in_one_batch(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    async with contextlib.AsyncExitStack() as stack:
        coordinator = await stack.enter_async_context(coordinator_at(tmp_path / "c.sqlite", unit_size=5))
        front_url = await stack.enter_async_context(serve(front(coordinator, reports_held_back(seen, hold=4.0))))
        # Four websites: their first units run at once (one unit per host at a time), so their
        # reports pile up while the front holds them back.
        sites = [await stack.enter_async_context(serve(generated_site_app(RequestLog(), pages=10))) for _ in range(4)]
        session = await stack.enter_async_context(aiohttp.ClientSession())
        job_id = await owner.submit(
            session, coordinator, operator_key(), "linkcheck", {"urls": [f"{s}/" for s in sites], "depth": None}
        )
        status, items = await peer_until_done(tmp_path, front_url, session, coordinator, job_id)

    assert status.state == "done"
    expected = set()
    for site in sites:
        ok, broken = generated_site_urls(site, 10)
        expected |= ok | broken
    assert sorted(item["url"] for item in items) == sorted(expected)  # every URL once
    batches = [count for path, count in seen if path == "/v1/reports/batch"]
    assert batches and max(batches) > 1, seen  # what piled up went together
    assert "reports delivered in one batch" in (tmp_path / "peer.log").read_text()
