"""The store in a process of its own (SqlStore(own_process=True), as `serve` runs it): the
same work and refusals as on a thread, answers only once on disk, and clear failures when
either side dies."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from coordinator.sql import SqlStore
from coordinator.store import InvalidInput, StaleLease, StoreError
from overlay.wire import Report
from tests.coordinator.conftest import Linkcheck, add_linkcheck, version_of
from tests.coordinator.test_sqlite_store import SITE, T0, assert_site_checked_once, finish, register

PEER = "a" * 64


def _store_processes() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "sqlite-store"]


async def test_a_crawl_through_a_store_in_its_own_process(tmp_path: Path, linkcheck: Linkcheck) -> None:
    path = tmp_path / "c.sqlite"
    async with SqlStore(path, own_process=True) as store:
        (child,) = _store_processes()
        assert child.pid != os.getpid() and child.is_alive()
        await add_linkcheck(store, linkcheck)
        job_id = await store.create_job("linkcheck", {"urls": ["http://a.test/"], "depth": 3}, T0)
        await register(store, PEER)
        await finish(store, PEER, T0)
        await assert_site_checked_once(store, job_id)
        # Concurrent calls (group commits in the child) each get their own answer.
        statuses = await asyncio.gather(*(store.job_status(job_id) for _ in range(50)))
        assert {s.items_done for s in statuses} == {len(SITE)}
    assert not child.is_alive() and child.exitcode == 0
    assert _store_processes() == []
    async with SqlStore(path) as again:  # on disk: a store on a thread reads the same
        await assert_site_checked_once(again, job_id)


async def test_refusals_cross_over_as_the_same_errors(tmp_path: Path, linkcheck: Linkcheck) -> None:
    async with SqlStore(tmp_path / "c.sqlite", own_process=True) as store:
        await add_linkcheck(store, linkcheck)
        with pytest.raises(InvalidInput, match=r"input.urls\[0\] is not an absolute http\(s\) URL"):
            await store.create_job("linkcheck", {"urls": ["not a url"], "depth": 0}, T0)
        await store.create_job("linkcheck", {"urls": ["http://a.test/"], "depth": 0}, T0)
        await register(store, PEER)
        await store.rebalance(T0)
        (lease,) = await store.lease(PEER, 1, ["linkcheck"], T0, 60.0)
        with pytest.raises(StaleLease):
            await store.report(
                PEER, Report(lease.unit_id, lease.token + 1, 0, {"items": []}, bundle_version=version_of(lease)), T0
            )
        (verdict,) = await store.report_batch(
            PEER,
            [Report(lease.unit_id, lease.token, 0, "garbage", bundle_version=version_of(lease))],  # type: ignore[arg-type]
            T0,
        )
        assert not verdict.accepted and "payload must be a map" in verdict.reason


async def test_a_call_that_cannot_cross_over_fails_alone(tmp_path: Path, linkcheck: Linkcheck) -> None:
    async with SqlStore(tmp_path / "c.sqlite", own_process=True) as store:
        await add_linkcheck(store, linkcheck)
        # Sent together: the one whose input cannot be pickled fails, the others go on.
        outcomes = await asyncio.gather(
            store.create_job("linkcheck", {"urls": ["http://a.test/"], "depth": 0}, T0),
            store.create_job("linkcheck", {"urls": [lambda: None], "depth": 0}, T0),
            store.list_jobs(),
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], int)
        assert isinstance(outcomes[1], StoreError) and "store call create_job" in str(outcomes[1])
        assert isinstance(outcomes[2], list)
        assert [job.job_id for job in await store.list_jobs()] == [outcomes[0]]


async def test_a_killed_store_process_fails_every_call_clearly(tmp_path: Path, linkcheck: Linkcheck) -> None:
    store = SqlStore(tmp_path / "c.sqlite", own_process=True)
    await store.open()
    await add_linkcheck(store, linkcheck)
    (child,) = _store_processes()
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(StoreError, match=r"the store process ended \(exit code -9\)"):
        await store.list_jobs()
    with pytest.raises(StoreError, match="store process ended"):
        await store.job_status(1)
    with pytest.raises(StoreError, match="store process ended"):
        await store.close()
    assert _store_processes() == []
    with pytest.raises(RuntimeError, match="store is not open"):
        await store.list_jobs()
    async with SqlStore(tmp_path / "c.sqlite") as again:  # what was committed is there
        assert [o.name for o in await again.owners()] == ["linkcheck-owner"]


_OWNER = """
import asyncio, sys
from coordinator.sql import SqlStore
import multiprocessing

async def main():
    store = SqlStore(sys.argv[1], own_process=True)
    await store.open()
    await store.list_jobs()
    (child,) = [p for p in multiprocessing.active_children() if p.name == "sqlite-store"]
    print(child.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_the_store_process_ends_when_its_coordinator_is_killed(tmp_path: Path) -> None:
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OWNER,
        str(tmp_path / "c.sqlite"),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert owner.stdout is not None
    child_pid = int(await asyncio.wait_for(owner.stdout.readline(), 60))
    os.kill(child_pid, 0)  # alive
    owner.kill()
    await owner.wait()
    deadline = time.monotonic() + 30
    while _alive(child_pid):
        assert time.monotonic() < deadline, "the store process outlived its coordinator"
        await asyncio.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead: its parent (the killed coordinator) is gone, init reaps it soon.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
