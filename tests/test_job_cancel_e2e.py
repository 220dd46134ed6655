"""An owner cancels a running job while a real peer works on it: only the job's owner may; the
peer drops the unit at its next renewal and goes on with other work; no unit of the job is
leased again (its website hears nothing more of it); the job shows as cancelled in `osaas job
list`, and cancelling it again is one clear line."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from tests.processes import start, stopped_on_exit, wait_until_done
from tests.sites import RequestLog, coordinator, generated_site_app, serve
from tests.test_owner_e2e import ok, osaas, refused

pytestmark = pytest.mark.timeout(180)


async def until(predicate, what: str, steps: int = 600) -> None:
    for _ in range(steps):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def hanging_site(log: RequestLog, release: asyncio.Event) -> web.Application:
    """A home page linking to /slow, which answers only once `release` is set, and to more."""
    app = web.Application(middlewares=[_record(log)])

    async def home(_request: web.Request) -> web.Response:
        return web.Response(text=" ".join(f'<a href="/{p}">{p}</a>' for p in PAGES), content_type="text/html")

    async def page(request: web.Request) -> web.Response:
        if request.match_info["page"] == "slow":
            await release.wait()
        return web.Response(text="<p>a page</p>", content_type="text/html")

    app.router.add_get("/", home)
    app.router.add_get("/{page}", page)
    return app


PAGES = ("slow", "a", "b", "c")


def _record(log: RequestLog):
    @web.middleware
    async def record(request: web.Request, handler):
        log.requests.append((request.method, request.raw_path))
        return await handler(request)

    return record


async def test_a_cancelled_job_stops_on_the_peer_and_is_never_leased_again(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    alice, bob = tmp_path / "alice", tmp_path / "bob"

    async def run(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(osaas, *args, config=config)

    for name, config in (("alice", alice), ("bob", bob)):
        key = ok(await run("bundle", "keygen", config=config)).strip()
        ok(await run("coordinator", "owner", "add", name, key, "--db", str(db), config=config))
    slow, quick, release = RequestLog(), RequestLog(), asyncio.Event()
    processes: list = []
    async with (
        coordinator(db, lease_seconds=3.0) as url,  # renewed every second
        serve(hanging_site(slow, release)) as slow_site,
        serve(generated_site_app(quick, pages=3)) as quick_site,
        stopped_on_exit(processes),
    ):
        job_id = ok(await run("job", "submit", f"{slow_site}/", "--coordinator", url, config=alice)).strip()
        listed = ok(await run("job", "list", "--coordinator", url, config=alice)).splitlines()
        assert len(listed) == 1 and listed[0].startswith(f"job {job_id} (linkcheck) running: "), listed
        assert "; created " in listed[0] and "finished" not in listed[0]
        peer_log = tmp_path / "peer.log"
        processes.append(
            await start(
                "peer", "run", "--coordinator", url, "--data-dir", str(tmp_path / "peer"), "--slots", "1",
                "--status-port", "off", "--allow-private", "--torrent-listen", "127.0.0.1:0", log=peer_log,
            )
        )  # fmt: skip
        await until(lambda: "/slow" in slow.paths(), "the peer to work on the job's hanging page")

        out = ok(await run("job", "cancel", job_id, "--coordinator", url, config=alice))
        assert out.startswith(f"job {job_id} (linkcheck) cancelled: ") and ", cancelled " in out, out
        # The peer learns it at its next renewal or its next streamed batch, whichever comes
        # first (under load either may).
        gone = f"its job {job_id} was cancelled (HTTP 409, stale_lease)"

        def dropped() -> bool:
            return any(gone in line and "; stopping it" in line for line in peer_log.read_text().splitlines())

        await until(dropped, "the peer to drop the unit at its renewal or its next streamed batch")
        release.set()
        refused(await run("job", "cancel", job_id, "--coordinator", url, config=bob), "it is not yours")

        # The peer goes on: another job runs to its end; the cancelled one's website hears
        # nothing more once the peer moved on.
        other = int(ok(await run("job", "submit", f"{quick_site}/", "--coordinator", url, config=alice)))
        await until(lambda: len(quick.requests) >= 1, "the peer to work on the next job")
        heard = len(slow.requests)
        status = await wait_until_done(url, other)
        assert status["state"] == "done", peer_log.read_text()[-3000:]
        assert len(slow.requests) == heard

        refused(
            await run("job", "cancel", job_id, "--coordinator", url, config=alice), f"job {job_id} is already cancelled"
        )
        listed = ok(await run("job", "list", "--coordinator", url, config=alice)).splitlines()
    assert [line.split(":")[0] for line in listed] == [
        f"job {job_id} (linkcheck) cancelled",
        f"job {other} (linkcheck) done",
    ]
    assert ", cancelled " in listed[0] and ", finished " in listed[1]
    assert "Traceback" not in peer_log.read_text()
