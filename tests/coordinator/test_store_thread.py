"""Group commit: calls that queue up while the store thread works commit together; one failing
call takes back only its own changes; a failed commit reaches every caller of its group."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from coordinator.sql import SqlStore
from coordinator.sql.database import Database
from coordinator.sql.thread import StoreThread
from coordinator.store import InvalidInput
from tests.coordinator.conftest import Linkcheck, add_linkcheck


def open_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (id INTEGER PRIMARY KEY,"
        " parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
    )
    return conn


async def test_calls_queued_behind_a_busy_thread_share_one_commit(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "t.sqlite")
    commits: list[str] = []
    conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    thread = StoreThread(lambda: conn)
    release = threading.Event()
    try:
        blocker = asyncio.ensure_future(thread.call(release.wait, 30, alone=True))
        inserts = [
            asyncio.ensure_future(thread.call(conn.execute, f"INSERT INTO parent VALUES ({i})")) for i in range(10)
        ]
        await asyncio.sleep(0.1)  # all ten are queued behind the blocker
        release.set()
        await blocker
        await asyncio.gather(*inserts)
        assert conn.execute("SELECT COUNT(*) FROM parent").fetchone()[0] == 10
        assert commits == ["COMMIT"]  # one group, one commit (a lone call would have made its own)
    finally:
        thread.stop()
        conn.close()


async def test_a_failed_group_commit_fails_every_call_of_it(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "t.sqlite")
    rolled_back: list[bool] = []
    thread = StoreThread(lambda: conn, on_rollback=lambda: rolled_back.append(True))
    release = threading.Event()
    try:
        blocker = asyncio.ensure_future(thread.call(release.wait, 30, alone=True))
        good = asyncio.ensure_future(thread.call(conn.execute, "INSERT INTO parent VALUES (1)"))
        # A deferred foreign key is checked at COMMIT: the whole group's commit fails.
        orphan = asyncio.ensure_future(thread.call(conn.execute, "INSERT INTO child VALUES (1, 99)"))
        await asyncio.sleep(0.1)
        release.set()
        await blocker
        for call in (good, orphan):
            with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
                await call
        assert rolled_back == [True]
        assert conn.execute("SELECT COUNT(*) FROM parent").fetchone()[0] == 0  # nothing half-done
        assert await thread.call(conn.execute, "INSERT INTO parent VALUES (2)") is not None  # it goes on
    finally:
        thread.stop()
        conn.close()


async def test_a_refused_call_in_a_group_takes_back_only_its_own_changes(tmp_path: Path, linkcheck: Linkcheck) -> None:
    async with SqlStore(tmp_path / "c.sqlite") as store:
        await add_linkcheck(store, linkcheck)
        jobs = [{"urls": [f"http://h{i}.test/"], "depth": 0} for i in range(6)]
        jobs[3] = {"urls": ["not a url"], "depth": 0}  # refused
        outcomes = await asyncio.gather(
            *(store.create_job("linkcheck", job, 1000.0) for job in jobs), return_exceptions=True
        )
        assert isinstance(outcomes[3], InvalidInput)
        created = [o for o in outcomes if isinstance(o, int)]
        assert len(created) == 5 and len(set(created)) == 5
        listed = await store.list_jobs()
        assert sorted(job.job_id for job in listed) == sorted(created)
        for job_id in created:
            assert (await store.job_status(job_id)).items_total == 1


async def test_the_savepoints_of_a_group_keep_their_undo_journal_in_memory(tmp_path: Path) -> None:
    # Each call of a group is a savepoint; past 64 KiB (a lease touches hundreds of pages) its
    # undo journal would spill to a temporary file unless temporary data stays in memory.
    async with SqlStore(tmp_path / "c.sqlite") as store:
        assert await store._run(_temp_store) == 2  # MEMORY


def _temp_store(db: Database) -> int:
    assert db.conn is not None
    return int(db.conn.execute("PRAGMA temp_store").fetchone()[0])
