"""Retention in the SQLite store: finished jobs' results deleted after the operator's time,
an owner's delete, in batches, leaving the job's status and nothing else of it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from coordinator.sql import SqlStore, retention
from coordinator.store import NotFound
from overlay.wire import RegisterRequest, Report
from tests.coordinator.conftest import Linkcheck, add_linkcheck, version_of
from tests.coordinator.test_sqlite_store import LEASE, T0, answer, finish, register

DAY = 86400.0
# Every table that holds rows of a job, and how a row names it.
JOB_ROWS = {
    "items": "job_id = ?",
    "units": "job_id = ?",
    "unit_logs": "job_id = ?",
    "queues": "job_id = ?",
    "job_progress": "job_id = ?",
    "referrers": "item_id IN (SELECT id FROM items WHERE job_id = ?)",
}


def rows_of(path: Path, job_id: int) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        counts = {
            t: conn.execute(f"SELECT COUNT(*) FROM {t} WHERE {w}", (job_id,)).fetchone()[0] for t, w in JOB_ROWS.items()
        }
        (orphans,) = conn.execute(
            "SELECT COUNT(*) FROM referrers WHERE item_id NOT IN (SELECT id FROM items)"
        ).fetchone()
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    return counts | {"orphan referrers": orphans}


async def test_finished_jobs_are_deleted_after_the_time_kept_in_batches(
    tmp_path: Path, linkcheck: Linkcheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "PURGE_BATCH", 2)  # items per call: the job's 6 take several
    path = tmp_path / "c.sqlite"
    async with SqlStore(path, unit_size=2) as store:
        await add_linkcheck(store, linkcheck)
        await register(store, "p1")
        old = await store.create_job("linkcheck", {"urls": ["http://a.test/"], "depth": None}, T0)
        # A unit that failed once leaves a log with the job.
        (first,) = await store.lease("p1", 1, ["linkcheck"], T0, LEASE)
        failed = Report(first.unit_id, first.token, 2, error="crashed", log="boom", bundle_version=version_of(first))
        await store.report("p1", failed, T0)
        end = await finish(store, "p1", T0 + 2)
        before = await store.job_status(old)
        assert before.state == "done" and before.items_done == 6
        assert len(await store.job_logs(old)) == 1
        recent = await store.create_job("linkcheck", {"urls": ["http://b.test/"], "depth": 0}, end + 20 * DAY)
        await store.register_peer("p1", RegisterRequest(name="p1", slots=4, workloads=["linkcheck"]), end + 20 * DAY)
        await finish(store, "p1", end + 20 * DAY)
        running = await store.create_job("linkcheck", {"urls": ["http://c.test/"], "depth": 0}, end + 29 * DAY)
        assert all(n > 0 for t, n in rows_of(path, old).items() if t not in ("queues", "orphan referrers"))

        now = end + 31 * DAY  # 31 days after the first finished; the second finished 11 days ago
        calls = []
        while removed := await store.purge(now, 30 * DAY):
            calls.append(removed)
        assert len(calls) >= 4  # three batches of items, then the units, logs and queues
        after = await store.job_status(old)
        assert rows_of(path, old) == dict.fromkeys([*JOB_ROWS, "orphan referrers"], 0)
        # Its status stays as it was, but deleted; its results and logs are gone.
        assert (after.state, after.items_total, after.items_done, after.counts) == (
            "deleted",
            before.items_total,
            before.items_done,
            before.counts,
        )
        with pytest.raises(NotFound, match=f"job {old}'s results and logs were deleted on "):
            await store.job_results(old, 0, 10)
        with pytest.raises(NotFound, match="were deleted"):
            await store.job_logs(old)
        # The others keep theirs.
        assert (await store.job_status(recent)).state == "done" and await store.job_results(recent, 0, 10)
        assert (await store.job_status(running)).state == "running"
        assert [j.job_id for j in await store.list_jobs()] == [old, recent, running]
        assert await store.purge(now, 30 * DAY) == 0
        assert await store.purge(now + 365 * DAY, None) == 0  # kept for ever: nothing goes


async def test_an_owner_deletes_a_running_job_at_once_and_again_harmlessly(
    tmp_path: Path, linkcheck: Linkcheck
) -> None:
    path = tmp_path / "c.sqlite"
    async with SqlStore(path, unit_size=2) as store:
        await add_linkcheck(store, linkcheck)
        await register(store, "p1")
        job_id = await store.create_job("linkcheck", {"urls": ["http://a.test/"], "depth": None}, T0)
        (lease,) = await store.lease("p1", 1, ["linkcheck"], T0, LEASE)
        await store.report(
            "p1", Report(lease.unit_id, lease.token, 0, answer(lease.payload), bundle_version=version_of(lease)), T0
        )
        deleted = await store.delete_job(job_id, "owner-key", T0 + 1)
        assert deleted.state == "deleted" and deleted.items_done == 1
        assert (await store.delete_job(job_id, "owner-key", T0 + 2)) == deleted
        # Nothing of it is leased any more, and its rows go with the next purges.
        assert await store.lease("p1", 8, ["linkcheck"], T0 + 5, LEASE) == []
        while await store.purge(T0 + 3, None):
            pass
        assert rows_of(path, job_id) == dict.fromkeys([*JOB_ROWS, "orphan referrers"], 0)
        audit = [(e.action, e.subject) for e in await store.audit_log(10)]
        assert ("delete", f"job {job_id}") in audit and ("cancel", f"job {job_id}") in audit
