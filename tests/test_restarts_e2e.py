"""Failures that belong to a peer, end to end with real processes on 127.0.0.1: they cost the
unit no attempt and its bundle's version no failure.

- The coordinator is killed (SIGKILL) in the middle of a peer's bundle fetch and started again:
  the peer asks again for the seeds while its fetch stalls, finds the coordinator seeding
  again, and the job finishes without a unit given back, retried or failed.
- A peer whose bubblewrap builds its start-up probe but no unit's sandbox gives its unit back
  as unable; another peer finishes the job.
- A peer paused mid-unit by its volunteer gives the unit back as unable, its website goes to
  another peer, which finishes the job.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from tests.processes import job_results, osaas, start_coordinator, start_peer, stopped_on_exit, wait_until_done
from tests.sites import RequestLog, free_port, generated_site_app, generated_site_urls, serve

pytestmark = [pytest.mark.timeout(240), pytest.mark.swarm]

PAGES = 6


async def until(check, what: str, seconds: float = 60.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


async def submit(url: str, site: str) -> int:
    code, out, err = await osaas("job", "submit", f"{site}/", "--coordinator", url)
    assert code == 0, err
    return int(out)


def units_of(db: Path, job_id: int) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT state, attempts FROM units WHERE job_id = ?", (job_id,)).fetchall()


def stepped_aside(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT unit_key, peer_id FROM stepped_aside").fetchall()


async def test_a_coordinator_killed_mid_fetch_costs_the_unit_nothing(tmp_path: Path) -> None:
    processes: list[asyncio.subprocess.Process] = []
    port = free_port()
    # Seeding slowly enough (the link checker is about 50 kB) to be killed part way.
    seeding = ("--bundle-upload-rate", "6KB", "--host-min-delay", "0.1")
    data = tmp_path / "peer"
    peer_log = tmp_path / "peer.log"
    async with serve(generated_site_app(RequestLog(), pages=PAGES)) as site, stopped_on_exit(processes):
        url = await start_coordinator(processes, tmp_path, port, *seeding)
        coordinator = processes[-1]
        job_id = await submit(url, site)
        await start_peer(
            processes, url, data, "--torrent-listen", "127.0.0.1:0", "--status-port", "off",
            config=tmp_path / "none.toml", log=peer_log,
        )  # fmt: skip

        def fetching() -> bool:  # the torrent's metadata is kept and some of its file came
            partial = data / "bundles" / "partial"
            return any(p.stat().st_size > 0 for p in partial.glob("*/data/*")) if partial.is_dir() else False

        await until(fetching, "the peer fetches the bundle")
        assert not list((data / "bundles" / "archives").iterdir())  # mid-fetch
        coordinator.kill()
        await coordinator.wait()
        await start_coordinator(processes, tmp_path, port, *seeding, log="coordinator-again.log")

        final = await wait_until_done(url, job_id)
        assert final["state"] == "done", (final, peer_log.read_text()[-3000:])
        ok, broken = generated_site_urls(site, PAGES)
        items = await job_results(url, job_id)
        assert {i["url"] for i in items if i["result"] == "ok"} == ok
        assert {i["url"] for i in items if i["result"] == "broken"} == broken
    # No unit given back, retried or failed: the stall was waited out by asking again.
    assert all(attempts == 0 for _, attempts in units_of(tmp_path / "c.sqlite", job_id))
    assert stepped_aside(tmp_path / "c.sqlite") == []
    said = peer_log.read_text()
    assert "given back" not in said and "could not fetch bundle" not in said
    assert not list((data / "bundles" / "partial").iterdir())  # kept, so no partial left


BROKEN_BWRAP = """#!/bin/sh
# bubblewrap that builds the peer's start-up probe (which runs `true`) but no unit's sandbox:
# for those, the real bubblewrap is told to bind a directory that is not there.
for arg in "$@"; do last=$arg; done
case "$last" in
    */true) exec {real} "$@" ;;
esac
exec {real} --ro-bind /osaas-test-not-there /not-there "$@"
"""


async def test_a_peer_whose_sandbox_does_not_build_hands_its_unit_on(tmp_path: Path) -> None:
    real = shutil.which("bwrap")
    if real is None:
        if os.environ.get("CI"):
            raise AssertionError("make test installs bubblewrap")
        pytest.skip("bubblewrap is not installed")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bwrap").write_text(BROKEN_BWRAP.format(real=real))
    (fake / "bwrap").chmod(0o755)
    processes: list[asyncio.subprocess.Process] = []
    async with serve(generated_site_app(RequestLog(), pages=PAGES)) as site, stopped_on_exit(processes):
        url = await start_coordinator(processes, tmp_path, free_port(), "--host-min-delay", "0.1")
        job_id = await submit(url, site)
        broken_log = tmp_path / "broken.log"
        await start_peer(
            processes, url, tmp_path / "broken", "--torrent-listen", "127.0.0.1:0", "--status-port", "off",
            config=tmp_path / "none.toml", log=broken_log, env={"PATH": f"{fake}:{os.environ['PATH']}"},
        )  # fmt: skip
        await until(lambda: "given back" in broken_log.read_text(), "the broken peer gives its unit back")
        (line,) = [line for line in broken_log.read_text().splitlines() if "given back" in line][:1]
        assert "the sandbox ended before it was built: bwrap: " in line and "osaas-test-not-there" in line
        # Not run, so not failed: the unit is as it was (once the release the peer logged before
        # sending it is in), and its host goes to another peer.
        await until(lambda: units_of(tmp_path / "c.sqlite", job_id) == [("queued", 0)], "the unit released unspent")
        await start_peer(
            processes, url, tmp_path / "working", "--torrent-listen", "127.0.0.1:0", "--status-port", "off",
            config=tmp_path / "none.toml", log=tmp_path / "working.log",
        )  # fmt: skip

        final = await wait_until_done(url, job_id)
        assert final["state"] == "done", (final, (tmp_path / "working.log").read_text()[-3000:])
        ok, broken = generated_site_urls(site, PAGES)
        items = await job_results(url, job_id)
        assert {i["url"] for i in items if i["result"] == "ok"} == ok
        assert {i["url"] for i in items if i["result"] == "broken"} == broken
    assert "failed (exit" not in broken_log.read_text()  # it reported no failure
    assert all(attempts == 0 for _, attempts in units_of(tmp_path / "c.sqlite", job_id))


async def test_a_peer_paused_mid_unit_hands_its_unit_on(tmp_path: Path) -> None:
    processes: list[asyncio.subprocess.Process] = []
    status_port = free_port()
    paused_log = tmp_path / "paused.log"
    async with serve(generated_site_app(RequestLog(), pages=40, delay=0.5)) as site, stopped_on_exit(processes):
        url = await start_coordinator(processes, tmp_path, free_port(), "--host-min-delay", "0.1")
        job_id = await submit(url, site)
        await start_peer(
            processes, url, tmp_path / "paused", "--torrent-listen", "127.0.0.1:0",
            "--status-port", str(status_port), config=tmp_path / "none.toml", log=paused_log,
        )  # fmt: skip
        async with aiohttp.ClientSession() as session:

            async def status() -> dict:
                try:
                    async with session.get(f"http://127.0.0.1:{status_port}/status") as response:
                        return await response.json()
                except aiohttp.ClientError:
                    return {}

            for _ in range(600):
                if (await status()).get("units"):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the peer never ran a unit: " + paused_log.read_text()[-2000:])
            token = (tmp_path / "paused" / "local-page.token").read_text().strip()
            async with session.post(
                f"http://127.0.0.1:{status_port}/control/pause", headers={"X-Osaas-Token": token}
            ) as response:
                assert response.status == 200, await response.text()
        await until(lambda: "giving back 1 running unit" in paused_log.read_text(), "the pause gives the unit back")
        # The volunteer's pause is the peer's, not the unit's: given back as unable, no attempt
        # used, and the website goes to another peer meanwhile.
        await until(lambda: "stepped aside" in (tmp_path / "coordinator.log").read_text(), "the host is handed on")
        (aside,) = [line for line in (tmp_path / "coordinator.log").read_text().splitlines() if "stepped aside" in line]
        assert aside.endswith(": paused by the volunteer (resume on the local page)"), aside
        await start_peer(
            processes, url, tmp_path / "working", "--torrent-listen", "127.0.0.1:0", "--status-port", "off",
            config=tmp_path / "none.toml", log=tmp_path / "working.log",
        )  # fmt: skip
        final = await wait_until_done(url, job_id)
        assert final["state"] == "done", (final, (tmp_path / "working.log").read_text()[-3000:])
    assert all(attempts == 0 for _, attempts in units_of(tmp_path / "c.sqlite", job_id))
