"""How long a job's results are kept, and deleting them: an owner's `osaas job delete`, and
finished jobs older than the operator's retention (`coordinator serve --keep-results DAYS`).

Deleting a job is two steps. At once, in one short transaction: a running job is cancelled,
its status is kept in the jobs row (`summary`), and the row is marked deleted: from then on
its results and logs are gone for everyone (NotFound), and its status says "deleted". Then
`purge` removes its rows in batches of at most `budget` items per call (referrers, answers,
planted known answers, items; then units, logs and queues), so the store thread is never held
for long, whatever the job's size. The jobs row stays: ids are never reused, and the owner can
still see that the job was there, when it ran and what it found.
"""

from __future__ import annotations

import logging

from coordinator.sql import access, jobs, queries
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database, placeholders
from overlay.wire import JobStatus, encode

log = logging.getLogger(__name__)

PURGE_BATCH = 2000  # items deleted per purge call at most


def delete_job(db: Database, job_id: int, actor: str, now: float) -> JobStatus:
    """Mark the job deleted (cancelling it first if it runs) and say how it stood. Deleting a
    deleted job again changes nothing."""
    with db.transaction(write=False) as conn:
        state = queries.job_status_of(db, conn, job_id).state
    if state == "running":
        jobs.cancel_job(db, job_id, actor, now)
    with db.transaction() as conn:
        (deleted_at,) = conn.execute("SELECT deleted_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if deleted_at is None:
            _mark_deleted(conn, job_id, queries.job_status_of(db, conn, job_id), now)
            access.audit(conn, now, actor, "delete", f"job {job_id}")
            log.info("job %d deleted by %s", job_id, actor[:16])
        return queries.job_status_of(db, conn, job_id)


def _mark_deleted(conn: Connection, job_id: int, status: JobStatus, now: float) -> None:
    summary = [status.units_total, status.units_done, status.items_total, status.items_done, status.counts]
    conn.execute("UPDATE jobs SET deleted_at = ?, summary = ? WHERE id = ?", (now, encode(summary), job_id))
    # Its re-checks go with it.
    conn.execute("UPDATE jobs SET deleted_at = ? WHERE recheck_of = ? AND deleted_at IS NULL", (now, job_id))


def purge(db: Database, now: float, keep_seconds: float | None) -> int:
    """Mark finished jobs older than `keep_seconds` (None: keep for ever) deleted, and delete
    the rows of deleted jobs, at most PURGE_BATCH items' worth. Rows deleted; 0 when none is
    left."""
    budget = PURGE_BATCH
    with db.transaction() as conn:
        if keep_seconds is not None:
            expired = conn.execute(
                "SELECT id FROM jobs WHERE state = 'done' AND deleted_at IS NULL AND recheck_of IS NULL"
                " AND finished_at < ? ORDER BY id LIMIT 100",
                (now - keep_seconds,),
            ).fetchall()
            for (job_id,) in expired:
                _mark_deleted(conn, job_id, queries.job_status_of(db, conn, job_id), now)
                log.info(
                    "job %d: results kept %.0f days after it finished; deleting them", job_id, keep_seconds / 86400
                )
        removed = 0
        for (job_id,) in conn.execute(
            "SELECT id FROM jobs WHERE deleted_at IS NOT NULL AND (EXISTS (SELECT 1 FROM items WHERE job_id = jobs.id)"
            " OR EXISTS (SELECT 1 FROM units WHERE job_id = jobs.id)"
            " OR EXISTS (SELECT 1 FROM unit_logs WHERE job_id = jobs.id)"
            " OR EXISTS (SELECT 1 FROM job_progress WHERE job_id = jobs.id)) ORDER BY id"
        ).fetchall():
            removed += _purge_job(conn, job_id, budget - removed)
            if removed >= budget:
                break
    return removed


def _purge_job(conn: Connection, job_id: int, budget: int) -> int:
    """Delete up to `budget` of the job's items with what hangs on them; its units, logs and
    queues once no item is left."""
    ids = [item_id for (item_id,) in conn.execute("SELECT id FROM items WHERE job_id = ? LIMIT ?", (job_id, budget))]
    if ids:
        marks = placeholders(ids)
        removed = 0
        for table, column in (("referrers", "item_id"), ("answers", "item_id"), ("plants", "item_id")):
            removed += conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids).rowcount
        return removed + conn.execute(f"DELETE FROM items WHERE id IN ({marks})", ids).rowcount
    removed = conn.execute(
        "DELETE FROM plants WHERE unit_id IN (SELECT id FROM units WHERE job_id = ?)", (job_id,)
    ).rowcount
    for table in ("units", "unit_logs", "queues", "job_progress"):
        removed += conn.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,)).rowcount
    return removed
