"""A lease held: renewed by its holder, or given back (released, or as unable to work on it:
then its host goes to other peers a while, and a unit no peer can run uses an attempt)."""

from __future__ import annotations

import logging

from coordinator import host_pacing, host_planning, leases
from coordinator.sql import peers
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database
from coordinator.sql.leasing import (
    Span,
    StoredUnit,
    finish_items_with_error,
    load_unit,
    pace_host,
    save_unit,
    stale_lease,
)
from coordinator.store import PEER_QUIET_SECONDS
from overlay.wire import decode

log = logging.getLogger(__name__)


def renew(db: Database, peer_id: str, unit_id: int, token: int, now: float, lease_seconds: float) -> float:
    with db.transaction() as conn:
        peers.touch(conn, peer_id, now)
        stored = load_unit(conn, unit_id)
        unit = stored.lease
        if not leases.holds(unit, peer_id, token):
            raise stale_lease(conn, unit_id, token, stored.job_id)
        unit = leases.renewed(unit, now, lease_seconds)
        conn.execute("UPDATE units SET expires_at = ?, renewed_at = ? WHERE id = ?", (unit.expires_at, now, unit_id))
    assert unit.expires_at is not None
    return unit.expires_at


def release(db: Database, peer_id: str, unit_id: int, token: int, now: float, unable: str | None = None) -> None:
    """Give a lease back (no attempt used). `unable`: the peer could not work on the unit (its
    bundle would not download here, say): its host goes to other peers for a while."""
    with db.transaction() as conn:
        peers.touch(conn, peer_id, now)
        stored = load_unit(conn, unit_id)
        if not leases.holds(stored.lease, peer_id, token):
            raise stale_lease(conn, unit_id, token, stored.job_id)
        if unable is None:
            save_unit(conn, unit_id, leases.released(stored.lease))
        else:
            step_aside(conn, [stored.unit_key], peer_id, now)
            log.info("peer %s… stepped aside from %s: %s", peer_id[:12], stored.unit_key, unable)
            _after_unable(db, conn, unit_id, stored, unable, now)
            db.replan = True
        min_delay = db.settings.min_delay
        pace_host(conn, stored.unit_key, lambda pace: host_pacing.after_abandoned(pace, now, min_delay))


def step_aside(conn: Connection, keys: list[str], peer_id: str, now: float) -> None:
    """The peer leaves these hosts to others for `host_planning.STEP_ASIDE_SECONDS`."""
    conn.executemany(
        "INSERT INTO stepped_aside (unit_key, peer_id, until) VALUES (?, ?, ?)"
        " ON CONFLICT (unit_key, peer_id) DO UPDATE SET until = excluded.until",
        [(key, peer_id, now + host_planning.STEP_ASIDE_SECONDS) for key in keys],
    )


def _after_unable(db: Database, conn: Connection, unit_id: int, stored: StoredUnit, reason: str, now: float) -> None:
    """Queue a unit given back as unable again (`leases.after_unable`); when no peer can run
    it, that uses an attempt, and the last one finishes its open items with the reason."""
    (aside,) = conn.execute(
        "SELECT COUNT(*) FROM stepped_aside WHERE unit_key = ? AND until > ?", (stored.unit_key, now)
    ).fetchone()
    (workload,) = conn.execute("SELECT workload FROM jobs WHERE id = ?", (stored.job_id,)).fetchone()
    able = sum(
        host_planning.runs_all(decode(names), (workload,))
        for (names,) in conn.execute("SELECT workloads FROM peers WHERE last_seen >= ?", (now - PEER_QUIET_SECONDS,))
    )
    after = leases.after_unable(stored.lease, reason, leases.nobody_can(aside, able), db.settings.max_attempts)
    save_unit(conn, unit_id, after.lease)
    if after.give_up is not None:
        first, last = conn.execute("SELECT first_item, last_item FROM units WHERE id = ?", (unit_id,)).fetchone()
        log.warning("unit %d of job %d: %s", unit_id, stored.job_id, after.give_up)
        finish_items_with_error(conn, Span(stored.unit_key, stored.job_id, first, last), after.give_up, now)
