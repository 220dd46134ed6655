"""The parts run apart, as an operator, volunteers and an owner would run them.

Real `osaas coordinator serve` and `osaas peer run` processes; the coordinator is killed with
SIGKILL mid-job and restarted on the same database; peers are stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.sites import RequestLog, free_port, generated_site_app, generated_site_urls, serve

pytestmark = pytest.mark.timeout(240)

PAGES = 150


async def start(*args: str, log: Path) -> asyncio.subprocess.Process:
    with open(log, "ab") as f:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "osaas", *args, stdin=asyncio.subprocess.DEVNULL, stdout=f, stderr=f
        )


async def osaas(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "osaas", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def wait_until_serving(url: str, log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/v1/health") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError("coordinator did not start: " + log.read_text()[-2000:])


async def job_status(url: str, job_id: int) -> dict:
    code, out, err = await osaas("job", "status", str(job_id), "--coordinator", url, "--json")
    assert code == 0, err
    return json.loads(out)


@contextlib.asynccontextmanager
async def stopped_on_exit(processes: list[asyncio.subprocess.Process]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for p in processes:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def test_kill_9_coordinator_mid_job_and_every_url_reported_once(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = tmp_path / "coordinator.sqlite"
    processes: list[asyncio.subprocess.Process] = []
    async with serve(generated_site_app(RequestLog(), pages=PAGES, delay=0.02)) as site, stopped_on_exit(processes):
        serve_args = ("coordinator", "serve", "--listen", f"127.0.0.1:{port}", "--db", str(db), "--unit-size", "5")
        coordinator = await start(*serve_args, log=tmp_path / "coordinator.log")
        processes.append(coordinator)
        await wait_until_serving(url, tmp_path / "coordinator.log")
        for i in range(2):
            processes.append(
                await start("peer", "run", "--coordinator", url, "--data-dir", str(tmp_path / f"peer-{i}"),
                            "--allow-private", "--slots", "2", log=tmp_path / f"peer-{i}.log")
            )
        code, out, err = await osaas("job", "submit", f"{site}/", "--coordinator", url)
        assert code == 0, err
        job_id = int(out)

        while (status := await job_status(url, job_id))["items_done"] < 20:
            assert status["state"] == "running", "the job finished before the coordinator could be killed"
            await asyncio.sleep(0.1)
        coordinator.send_signal(signal.SIGKILL)
        await coordinator.wait()
        await asyncio.sleep(1.0)  # peers finish units meanwhile and must keep their reports
        coordinator = await start(*serve_args, log=tmp_path / "coordinator.log")
        processes.append(coordinator)
        await wait_until_serving(url, tmp_path / "coordinator.log")

        for _ in range(900):
            status = await job_status(url, job_id)
            if status["state"] == "done":
                break
            await asyncio.sleep(0.2)
        assert status["state"] == "done", status

        code, out, err = await osaas("job", "results", str(job_id), "--coordinator", url, "--format", "json")
        assert code == 0, err
        items = [json.loads(line) for line in out.splitlines()]
        ok, broken = generated_site_urls(site, PAGES)
        urls = [i["url"] for i in items]
        assert sorted(urls) == sorted(ok | broken)  # every URL, each exactly once
        assert {i["url"] for i in items if i["result"] == "ok"} == ok
        assert {i["url"] for i in items if i["result"] == "broken"} == broken

        # SIGTERM: peers stop cleanly.
        for peer in processes[1:3]:
            peer.send_signal(signal.SIGTERM)
        for peer in processes[1:3]:
            assert await asyncio.wait_for(peer.wait(), timeout=30) == 0


async def test_sigterm_releases_leases_and_another_peer_finishes(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes: list[asyncio.subprocess.Process] = []
    async with serve(generated_site_app(RequestLog(), pages=40, delay=2.0)) as site, stopped_on_exit(processes):
        processes.append(
            await start("coordinator", "serve", "--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / "c.sqlite"),
                        "--unit-size", "10", log=tmp_path / "coordinator.log")
        )
        await wait_until_serving(url, tmp_path / "coordinator.log")
        first = await start("peer", "run", "--coordinator", url, "--data-dir", str(tmp_path / "peer-a"),
                            "--allow-private", "--stop-grace", "0.2", log=tmp_path / "peer-a.log")
        processes.append(first)
        code, out, err = await osaas("job", "submit", f"{site}/", "--coordinator", url)
        job_id = int(out)
        # Units: 1 is "/", 2 is /p/0, 3 holds /p/1../p/3 (2 s each): stop the peer while it runs 3.
        while "unit 3: job" not in (tmp_path / "peer-a.log").read_text():
            await asyncio.sleep(0.1)
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), timeout=40) == 0
        assert "releasing its lease" in (tmp_path / "peer-a.log").read_text()

        second = await start("peer", "run", "--coordinator", url, "--data-dir", str(tmp_path / "peer-b"),
                             "--allow-private", log=tmp_path / "peer-b.log")
        processes.append(second)
        for _ in range(600):
            status = await job_status(url, job_id)
            if status["state"] == "done":
                break
            await asyncio.sleep(0.2)
        ok, broken = generated_site_urls(site, 40)
        assert status["state"] == "done" and status["items_done"] == len(ok | broken), status
