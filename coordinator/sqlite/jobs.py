"""Jobs: an owner's bundle name and input, split into items that wait per host (their unit
key) in a queue per host and job; a job is done when none of its items is open.

Link checking is the only job splitter there is (`coordinator.linkcheck_jobs`), so whatever
bundle a job names, its input is split as a link-check job; a bundle with another kind of job
needs its own splitter here first.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from coordinator import linkcheck_jobs
from coordinator.linkcheck_jobs import JobInput, NewItem
from coordinator.sqlite.database import Database, JobFacts, chunks, placeholders
from coordinator.store import InvalidInput
from overlay.wire import decode, encode

log = logging.getLogger(__name__)

_JOB_INPUTS_KEPT = 64  # parsed job inputs kept in memory: they never change
_JOBS_KEPT = 4096  # (bundle name, pinned version, unit size) of jobs kept in memory: same


def create_job(db: Database, workload: str, input: dict[str, Any], now: float, version: str | None) -> int:
    with db.transaction() as conn:
        check_job_bundle(conn, workload, version)
        job = linkcheck_jobs.parse_job_input(input)
        job_id = conn.execute(
            "INSERT INTO jobs (workload, input, state, created_at, unit_size, bundle_version)"
            " VALUES (?, ?, 'running', ?, ?, ?)",
            (workload, encode(job.to_obj()), now, db.settings.unit_size, version),
        ).lastrowid
        assert job_id is not None
        insert_items(db, conn, job_id, linkcheck_jobs.seed_items(job))
    log.info(
        "job %d created: %s %s, %d seeds, depth %s",
        job_id,
        workload,
        version or "(rollout)",
        len(job.urls),
        job.depth,
    )
    return job_id


def check_job_bundle(conn: sqlite3.Connection, name: str, version: str | None) -> None:
    if conn.execute("SELECT 1 FROM rollouts WHERE name = ?", (name,)).fetchone() is None:
        raise InvalidInput(
            f"no bundle named {name!r} is published on this coordinator; publish it with `osaas bundle publish`"
        )
    if (
        version is not None
        and not conn.execute("SELECT 1 FROM bundles WHERE name = ? AND version = ?", (name, version)).fetchone()
    ):
        raise InvalidInput(f"bundle {name!r} has no version {version!r} on this coordinator")


def insert_items(db: Database, conn: sqlite3.Connection, job_id: int, items: list[NewItem]) -> None:
    """Add items, waiting for a lease to form their units; a host without a peer that now
    has work calls for a replan."""
    if not items:
        return
    added = conn.executemany(
        "INSERT OR IGNORE INTO items (job_id, url, unit_key, depth, crawl) VALUES (?, ?, ?, ?, ?)",
        [(job_id, i.url, i.unit_key, i.depth, i.crawl) for i in items],
    ).rowcount
    conn.execute(
        "INSERT INTO job_progress (job_id, open_items) VALUES (?, ?)"
        " ON CONFLICT (job_id) DO UPDATE SET open_items = open_items + excluded.open_items",
        (job_id, added),
    )
    keys = sorted({i.unit_key for i in items})
    conn.executemany("INSERT OR IGNORE INTO hosts (key) VALUES (?)", [(key,) for key in keys])
    conn.executemany("INSERT OR IGNORE INTO queues (unit_key, job_id) VALUES (?, ?)", [(key, job_id) for key in keys])
    for chunk in chunks(keys):
        if db.replan:
            break
        db.replan = (
            conn.execute(
                f"SELECT 1 FROM hosts WHERE peer_id IS NULL AND key IN ({placeholders(chunk)}) LIMIT 1",
                chunk,
            ).fetchone()
            is not None
        )


def job_input(db: Database, conn: sqlite3.Connection, job_id: int) -> JobInput:
    job = db.job_inputs.get(job_id)
    if job is None:
        (raw,) = conn.execute("SELECT input FROM jobs WHERE id = ?", (job_id,)).fetchone()
        job = linkcheck_jobs.parse_job_input(decode(raw))
        if len(db.job_inputs) >= _JOB_INPUTS_KEPT:
            db.job_inputs.pop(next(iter(db.job_inputs)))
        db.job_inputs[job_id] = job
    return job


def job(db: Database, conn: sqlite3.Connection, job_id: int) -> JobFacts:
    job = db.jobs.get(job_id)
    if job is None:
        row = conn.execute("SELECT workload, bundle_version, unit_size FROM jobs WHERE id = ?", (job_id,)).fetchone()
        job = JobFacts(*row)
        if len(db.jobs) >= _JOBS_KEPT:
            db.jobs.pop(next(iter(db.jobs)))
        db.jobs[job_id] = job
    return job


def items_closed(conn: sqlite3.Connection, job_id: int, count: int, now: float) -> None:
    """`count` items of the job were just finished; the job is done when none is open."""
    if count <= 0:
        return
    (left,) = conn.execute(
        "UPDATE job_progress SET open_items = open_items - ? WHERE job_id = ? RETURNING open_items", (count, job_id)
    ).fetchone()
    if (
        left <= 0
        and conn.execute(
            "UPDATE jobs SET state = 'done', finished_at = ? WHERE id = ? AND state = 'running'", (now, job_id)
        ).rowcount
    ):
        conn.execute("DELETE FROM queues WHERE job_id = ?", (job_id,))  # nothing waits in them
        log.info("job %d done", job_id)
