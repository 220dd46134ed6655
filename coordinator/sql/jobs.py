"""Jobs: an owner's bundle name and input, split into items that wait per host (their unit
key) in a queue per host and job; a job is done when none of its items is open.

A job follows the job model its bundle's manifest declares (`workloads.bundle.job_model`),
fixed when it is submitted: the pinned version's, else the stable version's of its rollout,
kept in the job's row. Its input is split by the model's kind: seed URLs by website
(`coordinator.url_jobs`), items and records by count (`coordinator.item_jobs`: parts of the
job, each a unit key of its own; a records job keeps each record beside its item).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from coordinator import item_jobs, owner_limits, url_jobs, vantage
from coordinator.item_jobs import ListInput
from coordinator.sql import access
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database, JobFacts, chunks, placeholders
from coordinator.sql.schema import MAX_REFERRERS
from coordinator.store import Conflict, InvalidInput, LimitReached, NotFound
from coordinator.url_jobs import JobInput, NewItem
from overlay.wire import decode, encode
from workloads import bundle
from workloads.bundle import BundleError, JobModel, model_from_obj
from workloads.records import Checker

log = logging.getLogger(__name__)

_JOB_INPUTS_KEPT = 64  # parsed job inputs kept in memory: they never change
_JOBS_KEPT = 4096  # (bundle name, pinned version, unit size) of jobs kept in memory: same
_MODELS_KEPT = 256  # jobs' record checkers kept in memory: their models never change


def create_job(
    db: Database, workload: str, input: dict[str, Any], now: float, version: str | None, owner_key: str | None
) -> int:
    with db.transaction() as conn:
        model = job_bundle_model(conn, workload, version)
        vantage: int | None = None
        listed: ListInput | None = None
        if model.input == "urls":
            job = url_jobs.parse_job_input(input)
            if job.vantage is not None and not model.vantage:
                raise InvalidInput(f"bundle {workload!r} does not ask for vantage points; leave input.vantage out")
            vantage = (job.vantage or url_jobs.DEFAULT_VANTAGE) if model.vantage else None
            seeds = url_jobs.seed_items(job, crawl=model.crawl, vantage=vantage or 1)
            stored, count, what = job.to_obj(), len(seeds), "URLs"
        else:
            listed = item_jobs.parse_input(model.input, input)
            stored, count, what = listed.summary(), len(listed.items), model.input
        limits = access.limits(conn, owner_key)
        if owner_key is not None:
            (running,) = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE owner_key = ? AND state = 'running'", (owner_key,)
            ).fetchone()
            today = access.urls_today(conn, owner_key, now)
            refused = owner_limits.submit_refusal(limits, running, count, today, now, what)
            if refused is not None:
                raise LimitReached(refused)
        job_id = conn.execute(
            "INSERT INTO jobs (workload, input, state, created_at, unit_size, bundle_version, owner_key, max_urls,"
            " model, vantage) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                workload,
                encode(stored),
                now,
                db.settings.unit_size,
                version,
                owner_key,
                limits.urls_per_job,
                encode(model.to_obj()),
                vantage,
            ),
        ).fetchone()[0]
        assert job_id is not None
        if listed is not None:
            seeds = item_jobs.seed_items(job_id, listed)
        insert_items(db, conn, job_id, seeds, now, None if listed is None else listed.records)
        access.audit(conn, now, owner_key or "operator", "submit", f"job {job_id}", f"{workload}, {count} {what}")
    log.info("job %d created: %s %s, %d %s", job_id, workload, version or "(rollout)", count, what)
    return job_id


def job_bundle_model(conn: Connection, name: str, version: str | None) -> JobModel:
    """The job model a new job of bundle `name` follows: its pinned `version`'s, else its
    stable version's. A version rolled out later with another model has its reports refused,
    which rolls it back (`coordinator.rollout`)."""
    rollout = conn.execute("SELECT stable FROM rollouts WHERE name = ?", (name,)).fetchone()
    if rollout is None:
        raise InvalidInput(
            f"no bundle named {name!r} is published on this coordinator; publish it with `osaas bundle publish`"
        )
    row = conn.execute(
        "SELECT manifest FROM bundles WHERE name = ? AND version = ?", (name, version or rollout[0])
    ).fetchone()
    if row is None:
        raise InvalidInput(f"bundle {name!r} has no version {version!r} on this coordinator")
    try:
        return bundle.decode(row[0]).manifest.model
    except BundleError as exc:  # checked when published: a manifest that no longer parses is ours
        raise InvalidInput(f"bundle {name!r}'s manifest cannot be read here ({exc})") from exc


def checker(db: Database, conn: Connection, job_id: int) -> Checker:
    """The record check of a job's model."""
    found = db.checkers.get(job_id)
    if found is None:
        (raw,) = conn.execute("SELECT model FROM jobs WHERE id = ?", (job_id,)).fetchone()
        found = Checker(model_from_obj(decode(raw)))
        if len(db.checkers) >= _MODELS_KEPT:
            db.checkers.pop(next(iter(db.checkers)))
        db.checkers[job_id] = found
    return found


def within_limits(db: Database, conn: Connection, job_id: int, found: list[NewItem], now: float) -> list[NewItem]:
    """The links a crawled page found that its job may still add: its owner's URL limits
    (per job, per day) hold; a job that reaches one stops adding links and says so."""
    owner_key = job(db, conn, job_id).owner_key
    urls, max_urls = conn.execute("SELECT urls, max_urls FROM jobs WHERE id = ?", (job_id,)).fetchone()
    limits = access.limits(conn, owner_key)
    if max_urls is not None:
        limits = dataclasses.replace(limits, urls_per_job=min(limits.urls_per_job, max_urls))
    today = 0 if owner_key is None else access.urls_today(conn, owner_key, now)
    room = owner_limits.links_allowed(limits, urls, today)
    if len(found) <= room:
        return found
    # Near a limit: links the job already has cost nothing, so count only the new ones.
    known: set[str] = set()
    for chunk in chunks([item.url for item in found]):
        known.update(
            url
            for (url,) in conn.execute(
                f"SELECT url FROM items WHERE job_id = ? AND url IN ({placeholders(chunk)})", (job_id, *chunk)
            )
        )
    new = [item for item in found if item.url not in known]
    if len(new) > room:
        conn.execute(
            "UPDATE jobs SET limited = ? WHERE id = ? AND limited IS NULL",
            (owner_limits.links_limited(limits, urls, today, now), job_id),
        )
    return new[:room]


def insert_items(
    db: Database,
    conn: Connection,
    job_id: int,
    items: list[NewItem],
    now: float,
    records: Sequence[Any] | None = None,
) -> None:
    """Add items, waiting for a lease to form their units, counted for the job and its owner's
    day; a host without a peer that now has work calls for a replan. `records`: a records
    job's, one per item, kept beside it (`items.data`) for its unit's payload."""
    if not items:
        return
    if records is None:
        added = conn.executemany(
            "INSERT INTO items (job_id, url, unit_key, depth, crawl, replica) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [(job_id, i.url, i.unit_key, i.depth, i.crawl, i.replica) for i in items],
        ).rowcount
    else:
        added = conn.executemany(
            "INSERT INTO items (job_id, url, unit_key, depth, crawl, replica, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (job_id, i.url, i.unit_key, i.depth, i.crawl, i.replica, encode(r))
                for i, r in zip(items, records, strict=True)
            ],
        ).rowcount
    conn.execute("UPDATE jobs SET urls = urls + ? WHERE id = ?", (added, job_id))
    owner_key = job(db, conn, job_id).owner_key
    if owner_key is not None:
        access.count_urls(conn, owner_key, added, now)
    conn.execute(
        "INSERT INTO job_progress (job_id, open_items) VALUES (?, ?)"
        " ON CONFLICT (job_id) DO UPDATE SET open_items = job_progress.open_items + excluded.open_items",
        (job_id, added),
    )
    keys = sorted({i.unit_key for i in items})
    conn.executemany("INSERT INTO hosts (key) VALUES (?) ON CONFLICT DO NOTHING", [(key,) for key in keys])
    conn.executemany(
        "INSERT INTO queues (unit_key, job_id) VALUES (?, ?) ON CONFLICT DO NOTHING", [(key, job_id) for key in keys]
    )
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


def add_links(
    db: Database,
    conn: Connection,
    job_id: int,
    page_id: int,
    links: Sequence[str],
    depth: int,
    now: float,
) -> None:
    """A crawled page's links become the job's items (within its owner's limits), each with
    the page (its item, `page_id`) as a referrer: at most MAX_REFERRERS pages per item are
    kept, the ones beyond counted in its more_referrers."""
    found = within_limits(db, conn, job_id, url_jobs.linked_items(list(links), depth, job_input(db, conn, job_id)), now)
    insert_items(db, conn, job_id, found, now)
    pairs = [(page_id, job_id, item.url) for item in found]
    conn.executemany(
        "INSERT INTO referrers (item_id, page_id) SELECT id, ? FROM items"
        " WHERE job_id = ? AND url = ? AND replica = 0 AND more_referrers = 0"
        f" AND (SELECT COUNT(*) FROM referrers WHERE item_id = items.id) < {MAX_REFERRERS} ON CONFLICT DO NOTHING",
        pairs,
    )
    conn.executemany(
        "UPDATE items SET more_referrers = more_referrers + 1"
        " WHERE job_id = ? AND url = ? AND replica = 0"
        " AND NOT EXISTS (SELECT 1 FROM referrers WHERE item_id = items.id AND page_id = ?)",
        [(job_id, url, page_id) for page_id, job_id, url in pairs],
    )


def job_input(db: Database, conn: Connection, job_id: int) -> JobInput:
    job = db.job_inputs.get(job_id)
    if job is None:
        (raw,) = conn.execute("SELECT input FROM jobs WHERE id = ?", (job_id,)).fetchone()
        job = url_jobs.parse_job_input(decode(raw))
        if len(db.job_inputs) >= _JOB_INPUTS_KEPT:
            db.job_inputs.pop(next(iter(db.job_inputs)))
        db.job_inputs[job_id] = job
    return job


def job(db: Database, conn: Connection, job_id: int) -> JobFacts:
    job = db.jobs.get(job_id)
    if job is None:
        row = conn.execute(
            "SELECT workload, bundle_version, unit_size, owner_key, vantage, recheck_of FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        job = JobFacts(*row)
        if len(db.jobs) >= _JOBS_KEPT:
            db.jobs.pop(next(iter(db.jobs)))
        db.jobs[job_id] = job
    return job


def cancel_job(db: Database, job_id: int, actor: str, now: float) -> None:
    """Stop a running job: its queues go, its open units are done as they stand and held by
    nobody (a holder's renewal, release or late report is refused as stale, so it stops and
    drops the unit's report; nothing of it is taken), no item is lost."""
    with db.transaction() as conn:
        row = conn.execute(
            "SELECT state, cancelled_at FROM jobs WHERE id = ? AND recheck_of IS NULL", (job_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        if row[0] != "running":
            raise Conflict(f"job {job_id} is already {'cancelled' if row[1] is not None else 'done'}")
        conn.execute(
            "UPDATE jobs SET state = 'done', finished_at = ?, cancelled_at = ? WHERE id = ?", (now, now, job_id)
        )
        conn.execute("DELETE FROM queues WHERE job_id = ?", (job_id,))
        conn.execute(
            "UPDATE units SET state = 'done', peer_id = NULL, expires_at = NULL WHERE job_id = ? AND state != 'done'",
            (job_id,),
        )
        conn.execute("UPDATE job_progress SET open_items = 0 WHERE job_id = ?", (job_id,))
        _end_rechecks(conn, job_id, now, cancelled=True)
        access.audit(conn, now, actor, "cancel", f"job {job_id}")
    db.replan = True  # its hosts may have no work left
    log.info("job %d cancelled by %s", job_id, actor[:16])


def items_closed(conn: Connection, job_id: int, count: int, now: float) -> None:
    """`count` items of the job were just finished; the job is done when none is open."""
    if count <= 0:
        return
    (left,) = conn.execute(
        "UPDATE job_progress SET open_items = open_items - ? WHERE job_id = ? RETURNING open_items", (count, job_id)
    ).fetchone()
    # A job of re-checks ends with its job (whose items wait for them), not when it runs dry.
    if (
        left <= 0
        and conn.execute(
            "UPDATE jobs SET state = 'done', finished_at = ? WHERE id = ? AND state = 'running' AND recheck_of IS NULL",
            (now, job_id),
        ).rowcount
    ):
        conn.execute("DELETE FROM queues WHERE job_id = ?", (job_id,))  # nothing waits in them
        _end_rechecks(conn, job_id, now, cancelled=False)
        log.info("job %d done", job_id)


def _end_rechecks(conn: Connection, job_id: int, now: float, cancelled: bool) -> None:
    """A job's re-checks end with it: done, nothing waiting, no unit open (after a cancel,
    a holder's report is refused as stale)."""
    for (child,) in conn.execute(
        "SELECT id FROM jobs WHERE recheck_of = ? AND state = 'running'", (job_id,)
    ).fetchall():
        conn.execute(
            "UPDATE jobs SET state = 'done', finished_at = ?, cancelled_at = ? WHERE id = ?",
            (now, now if cancelled else None, child),
        )
        conn.execute("DELETE FROM queues WHERE job_id = ?", (child,))
        conn.execute(
            "UPDATE units SET state = 'done', peer_id = NULL, expires_at = NULL WHERE job_id = ? AND state != 'done'",
            (child,),
        )
        conn.execute("UPDATE job_progress SET open_items = 0 WHERE job_id = ?", (child,))


def redo_answers_of(conn: Connection, peer_id: str, now: float) -> int:
    """A quarantined key's answers in running jobs are not believed: their items wait again
    for other peers, each in a queued unit of its own unless an open unit's range holds it
    (so no two open units share an item). How many. The links its answers added stay."""
    # No index on who answered (every finished item would pay for it): the running jobs' items
    # are read, once per quarantine.
    rows = conn.execute(
        "SELECT items.id, items.job_id, items.unit_key, items.replica, items.verdict IS NOT DISTINCT FROM 'pending'"
        " FROM jobs CROSS JOIN items"
        " WHERE items.job_id = jobs.id AND jobs.state = 'running' AND items.answerer = (SELECT id FROM keys WHERE key = ?) AND items.done = 1",
        (peer_id,),
    ).fetchall()
    # An item waiting for a re-check counts as open already; its answer, asked again, is
    # checked again as any first answer is (`rechecks`).
    conn.executemany(
        "UPDATE items SET done = 0, result = NULL, record = NULL, network = NULL, answerer = NULL,"
        " verdict = NULL WHERE id = ?",
        [(item_id,) for item_id, *_ in rows],
    )
    # An item inside the range of a unit still open (what a partial report left out) is that
    # unit's again; any other gets a unit of its own.
    conn.executemany(
        "INSERT INTO units (unit_key, job_id, first_item, last_item, replica, state)"
        " SELECT ?, ?, ?, ?, ?, 'queued' WHERE NOT EXISTS (SELECT 1 FROM units WHERE unit_key = ? AND job_id = ?"
        " AND state != 'done' AND first_item <= ? AND last_item >= ?)",
        [
            (key, job_id, item_id, item_id, replica, key, job_id, item_id, item_id)
            for item_id, job_id, key, replica, _ in rows
        ],
    )
    reopened: dict[int, int] = {}
    for _, job_id, _, _, pending in rows:
        reopened[job_id] = reopened.get(job_id, 0) + (not pending)
    conn.executemany(
        "UPDATE job_progress SET open_items = open_items + ? WHERE job_id = ?",
        [(count, job_id) for job_id, count in reopened.items()],
    )
    return len(rows)


def stop_waiting_for_networks(db: Database, conn: Connection, now: float) -> None:
    """Vantage jobs that went `VantageRules.wait` without a unit granted stop waiting for
    peers of new networks (`vantage.stalled`): on each website without a live lease of the
    job, what is not done is finished with why (`vantage.given_up`: how many networks took
    the website's items) and its units are done."""
    rules = db.settings.vantage
    for job_id, wanted, created_at in conn.execute(
        "SELECT id, vantage, created_at FROM jobs WHERE state = 'running' AND vantage IS NOT NULL"
    ).fetchall():
        (last_grant,) = conn.execute("SELECT MAX(leased_at) FROM units WHERE job_id = ?", (job_id,)).fetchone()
        if not vantage.stalled(max(created_at, last_grant or created_at), now, rules):
            continue
        closed = 0
        for (key,) in conn.execute(
            "SELECT DISTINCT unit_key FROM items WHERE job_id = ? AND done = 0", (job_id,)
        ).fetchall():
            if live_lease(conn, job_id, key, now):
                continue
            (answered,) = conn.execute(
                "SELECT COUNT(DISTINCT network) FROM units WHERE job_id = ? AND unit_key = ? AND network IS NOT NULL",
                (job_id, key),
            ).fetchone()
            message = vantage.given_up(answered, wanted, rules)
            closed += conn.execute(
                "UPDATE items SET result = 'error', failed = ?, done = 1 WHERE job_id = ? AND unit_key = ? AND done = 0",
                (message, job_id, key),
            ).rowcount
            conn.execute(
                "UPDATE units SET state = 'done', peer_id = NULL, expires_at = NULL, last_error = ?"
                " WHERE job_id = ? AND unit_key = ? AND state != 'done'",
                (message, job_id, key),
            )
            conn.execute("DELETE FROM queues WHERE job_id = ? AND unit_key = ?", (job_id, key))
        if closed:
            log.info("job %d: %d vantage items given up, no peer of another network came", job_id, closed)
            items_closed(conn, job_id, closed, now)


def live_lease(conn: Connection, job_id: int, key: str, now: float) -> bool:
    """Is a unit of the job on this host leased now (its holder may still answer)?"""
    return (
        conn.execute(
            "SELECT 1 FROM units WHERE job_id = ? AND unit_key = ? AND state = 'leased' AND expires_at > ?",
            (job_id, key, now),
        ).fetchone()
        is not None
    )
