"""`osaas peer run --only-when-idle`, end to end on a virtual X display: the peer works while
nobody touches the computer, pauses (giving its units back) within seconds of input, fetches
nothing while the person is there, and goes on once they leave; the job still completes.
Without X, the peer works while the osaas screensaver shows, and only then."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.processes import (
    job_results,
    osaas,
    start_coordinator,
    start_peer,
    stopped_on_exit,
    wait_until_done,
)
from tests.sites import RequestLog, free_port, generated_site_app, serve
from tests.xdisplay import xvfb

pytestmark = pytest.mark.timeout(240)

PAGES = 60


async def peer_status(port: int) -> dict:
    code, out, err = await osaas("peer", "status", "--status-port", str(port), "--json")
    return json.loads(out) if code == 0 else {}


async def until(check, what: str, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.2)):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"never: {what}")


async def coordinator_and_idle_peer(
    processes: list[asyncio.subprocess.Process], tmp_path: Path, status_port: int, env: dict[str, str], *peer_args: str
) -> str:
    """A coordinator and an `osaas peer run --only-when-idle` working for it; the coordinator's URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    await start_coordinator(processes, tmp_path, port, "--unit-size", "3", "--host-min-delay", "0.1")
    await start_peer(
        processes,
        url,
        tmp_path / "peer",
        "--only-when-idle",
        *peer_args,
        "--status-port",
        str(status_port),
        config=tmp_path / "none.toml",
        log=tmp_path / "peer.log",
        env=env,
    )
    return url


async def test_the_peer_works_only_while_the_computer_is_idle(tmp_path: Path) -> None:
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (make test installs it)")
    log = RequestLog()
    status_port = free_port()
    processes: list[asyncio.subprocess.Process] = []
    with xvfb() as display:

        async def touch() -> None:  # the person moves the mouse
            mover = await asyncio.create_subprocess_exec(
                "xdotool", "mousemove_relative", "--", "3", "2", env={**os.environ, "DISPLAY": display}
            )
            assert await mover.wait() == 0

        async with serve(generated_site_app(log, pages=PAGES, delay=0.2)) as site, stopped_on_exit(processes):
            session = {"DISPLAY": display, "XDG_RUNTIME_DIR": str(tmp_path / "run")}
            url = await coordinator_and_idle_peer(processes, tmp_path, status_port, session, "--idle-after", "2s")
            code, out, err = await osaas("job", "submit", f"{site}/", "--coordinator", url)
            assert code == 0, err
            job_id = int(out)

            # Nobody at the computer: it works.
            async def fetched() -> bool:
                return len(log.requests) >= 5

            await until(fetched, "the idle peer fetches pages")

            # Someone moves the mouse, and keeps using the computer: it pauses within seconds.
            seen: dict = {}

            async def paused() -> bool:
                await touch()
                seen.update(await peer_status(status_port))
                return seen.get("state") == "paused" and seen.get("units") == []

            await until(paused, "the peer pauses on input", seconds=10)
            # Why, as the same status said: asked again, a loaded machine may already be idle 2 s.
            assert seen["paused"].startswith("the computer is in use")
            await touch()
            await asyncio.sleep(1.0)  # a fetch under way when the pause came may end
            while_used = len(log.requests)
            for _ in range(8):
                await touch()
                await asyncio.sleep(0.5)
            assert len(log.requests) == while_used, "the peer fetched while the computer was in use"
            assert "pausing work: the computer is in use" in (tmp_path / "peer.log").read_text()

            # The person leaves: after 2 s without input it works again and finishes the job.
            final = await wait_until_done(url, job_id)
            assert final["state"] == "done", final
            assert len(log.requests) > while_used
            urls = [r["url"] for r in await job_results(url, job_id)]
            assert len(urls) == len(set(urls)) == final["items_total"]


async def test_without_x_the_peer_works_while_the_screensaver_shows(tmp_path: Path) -> None:
    """No X display, so no idle time: the peer works while `osaas screensaver --fullscreen`
    shows, and stops within seconds of its end (SIGTERM, as XScreenSaver ends a hack)."""
    log = RequestLog()
    status_port = free_port()
    # The same user's runtime dir for both, and no display: DISPLAY set empty counts as unset.
    session = {"XDG_RUNTIME_DIR": str(tmp_path / "run"), "DISPLAY": ""}
    processes: list[asyncio.subprocess.Process] = []
    async with serve(generated_site_app(log, pages=30, delay=0.1)) as site, stopped_on_exit(processes):
        url = await coordinator_and_idle_peer(processes, tmp_path, status_port, session)
        code, out, err = await osaas("job", "submit", f"{site}/", "--coordinator", url)
        assert code == 0, err

        async def paused() -> bool:
            return (await peer_status(status_port)).get("state") == "paused"

        await until(paused, "the peer waits for the screensaver")
        assert (await peer_status(status_port))["paused"] == (
            "the osaas screensaver is not showing (no X idle time here: working only while it shows)"
        )
        await asyncio.sleep(2.0)
        assert log.requests == [], "the peer fetched while nobody showed the screensaver"
        assert "working only while the osaas screensaver shows" in (tmp_path / "peer.log").read_text()

        saver = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "osaas",
            "screensaver",
            "--fullscreen",
            "--status-port",
            str(status_port),
            env={**os.environ, **session, "SDL_VIDEODRIVER": "dummy"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        processes.append(saver)

        async def fetched() -> bool:
            return len(log.requests) >= 10

        await until(fetched, "the peer works while the screensaver shows")

        saver.terminate()
        assert await saver.wait() == 0
        assert not (tmp_path / "run" / "osaas" / "screensaver-showing").exists()
        await until(paused, "the peer pauses when the screensaver ends", seconds=10)
        await asyncio.sleep(1.0)  # a fetch under way when the pause came may end
        after = len(log.requests)
        await asyncio.sleep(3.0)
        assert len(log.requests) == after, "the peer fetched after the screensaver ended"
        assert (await peer_status(status_port))["state"] == "paused"
