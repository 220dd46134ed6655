"""A volunteer's transfer cap, end to end: real `osaas peer run` processes and a coordinator.

The peer stops leasing when its cap is used up, gives its running units back, says so in its
log, remembers its usage across a restart, and another peer finishes the job."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.processes import (
    job_results,
    job_status,
    osaas,
    start,
    start_coordinator,
    stopped_on_exit,
    wait_until_done,
)
from tests.sites import free_port, serve

pytestmark = pytest.mark.timeout(240)

PAGES = 200
PADDING = "x" * 3000  # bytes per page, so that the cap runs out mid-job


def padded_site(requests: list[str]) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        requests.append(request.path)
        n = int(request.match_info["n"])
        if n >= PAGES:
            return web.Response(status=404)
        await asyncio.sleep(0.05)
        links = " ".join(f'<a href="/p/{m}">{m}</a>' for m in range(n + 1, min(n + 11, PAGES)))
        return web.Response(text=f"<html><body>{links}<p>{PADDING}</p></body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/p/{n:\\d+}", page)
    return app


async def wait_for_line(log: Path, text: str, process: asyncio.subprocess.Process) -> str:
    for _ in range(600):
        content = log.read_text() if log.exists() else ""
        if text in content:
            return content
        assert process.returncode is None, content[-2000:]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {log}: " + content[-2000:])


async def test_a_used_up_cap_stops_the_peer_across_restarts_and_another_peer_finishes(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    requests: list[str] = []
    processes: list[asyncio.subprocess.Process] = []
    status_port = str(free_port())
    capped = (
        "peer",
        "run",
        "--coordinator",
        url,
        "--data-dir",
        str(tmp_path / "capped"),
        "--allow-private",
        "--config",
        str(tmp_path / "none.toml"),
        "--daily-cap",
        "300KB",
        "--status-port",
        status_port,
    )
    async with serve(padded_site(requests)) as site, stopped_on_exit(processes):
        await start_coordinator(processes, tmp_path, port, "--unit-size", "10", "--host-min-delay", "0.1")
        peer = await start(*capped, log=tmp_path / "capped.log")
        processes.append(peer)
        code, out, err = await osaas("job", "submit", f"{site}/p/0", "--coordinator", url)
        assert code == 0, err
        job_id = int(out)

        log = await wait_for_line(tmp_path / "capped.log", "pausing work: transfer cap of 300 kB/day used up", peer)
        assert "unit" in log and (await job_status(url, job_id))["state"] == "running"
        fetched_while_capped = len(requests)
        assert 0 < fetched_while_capped < PAGES

        # Restarted, it is still paused: the period's usage was kept on disk.
        peer.terminate()
        assert await asyncio.wait_for(peer.wait(), timeout=30) == 0
        peer = await start(*capped, log=tmp_path / "capped-again.log")
        processes.append(peer)
        log = await wait_for_line(tmp_path / "capped-again.log", "pausing work: transfer cap", peer)
        assert "leased" not in log and "unit " not in log
        # Its status says so too (peer.status, on 127.0.0.1), and when it resumes at the latest.
        code, out, err = await osaas("peer", "status", "--status-port", status_port, "--json")
        assert code == 0, err
        status = json.loads(out)
        assert status["state"] == "paused" and status["paused"].startswith("transfer cap of 300 kB/day used up")
        assert status["resume_at"] == status["usage"]["period_ends"] > time.time()
        assert status["usage"]["used"] >= 300_000 and status["budget"]["cap"] == 300_000 and status["units"] == []
        code, out, err = await osaas("peer", "status", "--status-port", status_port)
        assert code == 0 and out.startswith(f"{status['name']}: paused: transfer cap of 300 kB/day"), (out, err)

        # Another peer finishes the job: every page checked once, none lost.
        helper = await start(
            "peer",
            "run",
            "--coordinator",
            url,
            "--data-dir",
            str(tmp_path / "free"),
            "--allow-private",
            "--config",
            str(tmp_path / "none.toml"),
            log=tmp_path / "free.log",
        )
        processes.append(helper)
        status = await wait_until_done(url, job_id)
        assert status["state"] == "done", status
        urls = [item["url"] for item in await job_results(url, job_id)]
        assert sorted(urls) == sorted(f"{site}/p/{n}" for n in range(PAGES))
        assert "unit " not in (tmp_path / "capped-again.log").read_text()
