"""What the store answers without changing anything: a job's status and results, peers and
hosts for the dashboard."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from coordinator import unit_sizing
from coordinator.sql import jobs, kept_records, rechecks, schema
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database, chunks, placeholders
from coordinator.store import HostOverview, NotFound, PeerOverview, QueueDepth
from overlay.wire import JobStatus, UnitLog, decode
from workloads.bundle import JobModel


def job_status(db: Database, job_id: int) -> JobStatus:
    with db.transaction(write=False) as conn:
        return job_status_of(db, conn, job_id)


def list_jobs(db: Database, owner_key: str | None = None) -> list[JobStatus]:
    with db.transaction(write=False) as conn:
        if owner_key is None:
            ids = [job_id for (job_id,) in conn.execute("SELECT id FROM jobs WHERE recheck_of IS NULL ORDER BY id")]
        else:
            ids = [
                job_id
                for (job_id,) in conn.execute("SELECT id FROM jobs WHERE owner_key = ? ORDER BY id", (owner_key,))
            ]
        return [job_status_of(db, conn, job_id) for job_id in ids]


def peer_count(db: Database, seen_since: float) -> int:
    with db.transaction(write=False) as conn:
        return conn.execute("SELECT COUNT(*) FROM peers WHERE last_seen >= ?", (seen_since,)).fetchone()[0]


def queue_depth(db: Database) -> QueueDepth:
    with db.transaction(write=False) as conn:
        pending = conn.execute(
            "SELECT COUNT(*) FROM items JOIN jobs ON jobs.id = items.job_id"
            " WHERE items.done = 0 AND jobs.state = 'running'"
        ).fetchone()[0]
        units = dict(conn.execute("SELECT state, COUNT(*) FROM units WHERE state != 'done' GROUP BY state").fetchall())
    return QueueDepth(pending, units.get("queued", 0), units.get("leased", 0))


def peers_overview(db: Database, seen_since: float, limit: int) -> list[PeerOverview]:
    with db.transaction(write=False) as conn:
        rows = conn.execute(
            "SELECT peers.id, name, capacity, used, cap, down_rate, up_rate, last_seen,"
            " (SELECT COUNT(*) FROM hosts WHERE hosts.peer_id = peers.id), throughput, quarantined"
            " FROM peers WHERE last_seen >= ? ORDER BY capacity DESC, peers.id LIMIT ?",
            (seen_since, limit),
        ).fetchall()
    return [PeerOverview(*row) for row in rows]


def hosts_overview(db: Database, now: float, limit: int) -> list[HostOverview]:
    with db.transaction(write=False) as conn:
        rows = conn.execute(
            "SELECT * FROM (SELECT key, peer_id, next_allowed_at, crawl_delay, backoff,"
            " EXISTS (SELECT 1 FROM units WHERE units.unit_key = hosts.key AND units.state = 'leased'"
            "         AND units.expires_at > ?) AS leased FROM hosts) AS h"
            " WHERE next_allowed_at > ? OR backoff > 0 OR leased"
            " ORDER BY next_allowed_at DESC, key LIMIT ?",
            (now, now, limit),
        ).fetchall()
    return [HostOverview(key, peer, at, delay, backoff, bool(leased)) for key, peer, at, delay, backoff, leased in rows]


def check_job(conn: Connection, job_id: int) -> tuple[Any, ...]:
    row = None
    if 0 <= job_id <= schema.MAX_ID:
        row = conn.execute(
            "SELECT workload, state, created_at, finished_at, unit_size, owner_key, cancelled_at, limited"
            " FROM jobs WHERE id = ? AND recheck_of IS NULL",  # a job's re-checks are its own business
            (job_id,),
        ).fetchone()
    if row is None:
        raise NotFound(f"no job {job_id}")
    return row


def check_results(conn: Connection, job_id: int) -> None:
    """NotFound unless the job is there with its results (not deleted: `retention`)."""
    check_job(conn, job_id)
    (deleted_at,) = conn.execute("SELECT deleted_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if deleted_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(deleted_at))
        raise NotFound(f"job {job_id}'s results and logs were deleted on {when}")


def job_status_of(db: Database, conn: Connection, job_id: int) -> JobStatus:
    workload, state, created_at, finished_at, unit_size, owner_key, cancelled_at, limited = check_job(conn, job_id)
    model = jobs.checker(db, conn, job_id).model
    vantage, deleted_at, summary = conn.execute(
        "SELECT vantage, deleted_at, summary FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    if deleted_at is not None and summary is not None:  # its rows are gone: what it said then
        units_total, units_done, items_total, _, counts = decode(summary)
        state = "deleted"
    else:
        units_total, units_done, items_total, counts = _progress(conn, job_id, state, unit_size)
        state = "cancelled" if cancelled_at is not None else state
    return JobStatus(
        job_id=job_id,
        workload=workload,
        state=state,
        units_total=units_total,
        units_done=units_done,
        items_total=items_total,
        items_done=sum(counts.values()),
        counts=counts,
        created_at=created_at,
        finished_at=finished_at,
        owner=owner_key,
        limited=limited,
        input=model.input,
        vantage=vantage,
    )


def _progress(conn: Connection, job_id: int, state: str, unit_size: int) -> tuple[int, int, int, dict]:
    """A job's units (all, done), items and results counted from its rows."""
    units_total, units_done = conn.execute(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE state = 'done') FROM units WHERE job_id = ?", (job_id,)
    ).fetchone()
    if state == "running":
        # Units of the waiting items are formed when leased; count them at a new peer's size.
        size = min(unit_sizing.DEFAULT_UNIT, unit_size)
        (to_form,) = conn.execute(
            "SELECT COALESCE(SUM((n + ? - 1) / ?), 0)"
            f" FROM (SELECT COUNT(*) AS n FROM {schema.QUEUED_ITEMS} WHERE q.job_id = ? GROUP BY q.unit_key) AS per_host",
            (size, size, job_id),
        ).fetchone()
        units_total += to_form
    (items_total,) = conn.execute("SELECT COUNT(*) FROM items WHERE job_id = ?", (job_id,)).fetchone()
    counts = dict(
        conn.execute(
            # An item waiting for its verdict (a re-check) is not done yet.
            "SELECT result, COUNT(*) FROM items WHERE job_id = ? AND done = 1 AND verdict IS DISTINCT FROM 'pending'"
            " GROUP BY result ORDER BY result",
            (job_id,),
        ).fetchall()
    )
    return units_total, units_done, items_total, counts


def job_results(
    db: Database, job_id: int, offset: int, limit: int, counted_as: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """A page of a job's items in id order (new items come last, so pages hold still), each a
    row of its model's columns (`JobModel.columns`) and `done`; only items counted as one of
    `counted_as` when it is given (a dashboard's problems)."""
    with db.transaction(write=False) as conn:
        check_results(conn, job_id)
        model = jobs.checker(db, conn, job_id).model
        where = f" AND done = 1 AND result IN ({placeholders(list(counted_as))})" if counted_as else ""
        rows = conn.execute(
            "SELECT id, url, done, record, failed, depth, network, verdict"
            f" FROM items WHERE job_id = ?{where} ORDER BY id LIMIT ? OFFSET ?",
            (job_id, *counted_as, limit, offset),
        ).fetchall()
        if not rows:
            return []
        referrers: dict[int, tuple[list[str], int]] = {}
        if model.crawl:
            referrers = _referrers(conn, model, [row[0] for row in rows])
        answers: Mapping[int, list[str]] = {}
        if model.checked:
            answers = rechecks.answers_by_item(conn, [row[0] for row in rows if row[7] is not None])
    stored = [f.name for f in model.stored]
    nothing = dict.fromkeys(stored)
    key = model.key  # `url`, or `item` for items and records
    results = []
    for item_id, url, done, record, failed, depth, network, verdict in rows:
        row: dict[str, Any] = {key: url}
        if model.vantage:
            row["network"] = network  # the coordinator's, never the peer's word
        row.update(nothing if record is None else zip(stored, kept_records.unpack(record, url), strict=True))
        if model.crawl:
            row["depth"] = depth
            row["referrers"], row["more_referrers"] = referrers.get(item_id, ([], 0))
        row["failed"] = failed
        if model.checked:
            # How sure the answer is: None when one answer was enough (`rechecks`).
            row["verdict"] = verdict
            row["answers"] = answers.get(item_id, [])
        row["done"] = bool(done)
        results.append(row)
    return results


def _referrers(conn: Connection, model: JobModel, ids: list[int]) -> dict[int, tuple[list[str], int]]:
    """The pages that link to each item (for crawls), sorted, and how many more link to it
    than were kept (`schema.MAX_REFERRERS`). A page is named as its model's `links_at` field
    says (where its redirects ended), else by its URL."""
    at = [f.name for f in model.stored].index(model.links_at) if model.links_at is not None else None
    found: dict[int, list[str]] = {}
    more: dict[int, int] = {}
    for chunk in chunks(ids):
        marks = placeholders(chunk)
        for item_id, url, record in conn.execute(
            "SELECT referrers.item_id, pages.url, pages.record FROM referrers JOIN items pages"
            f" ON pages.id = referrers.page_id WHERE referrers.item_id IN ({marks})",
            chunk,
        ):
            landed = kept_records.unpack(record, url)[at] if at is not None and record is not None else None
            found.setdefault(item_id, []).append(landed if isinstance(landed, str) else url)
        more.update(
            conn.execute(
                f"SELECT id, more_referrers FROM items WHERE id IN ({marks}) AND more_referrers > 0", chunk
            ).fetchall()
        )
    return {item_id: (sorted(found.get(item_id, [])), more.get(item_id, 0)) for item_id in {*found, *more}}


def job_columns(db: Database, job_id: int) -> list[str]:
    """The columns of a job's results rows, in order (its model's)."""
    with db.transaction(write=False) as conn:
        check_job(conn, job_id)
        return list(jobs.checker(db, conn, job_id).model.columns)


def job_logs(db: Database, job_id: int) -> list[UnitLog]:
    """The stderr tails its failed units' peers sent, oldest first (the latest kept)."""
    with db.transaction(write=False) as conn:
        check_results(conn, job_id)
        rows = conn.execute(
            "SELECT unit_id, peer_id, at, exit_code, error, log FROM unit_logs WHERE job_id = ? ORDER BY id",
            (job_id,),
        ).fetchall()
    return [UnitLog(*row) for row in rows]
