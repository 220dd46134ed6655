"""Which peer works on which host, as the SQLite store keeps it: the rules are
`coordinator.host_planning`'s; this reads what they need and writes what they decide into
`hosts`, so the assignment survives restarts. A peer's weight is its claim as far as its
agreement record and what the store saw it do (`peers.observed_items`, fed by the reports
it accepted) bear it out (`reputation.weight`). Both are in the store, so every coordinator
of one database makes the same plan from the same rows.

A plan runs every few seconds (the API's background task), when peers registered, and inside
a lease when hosts without a peer got work or the asking peer holds no host.
"""

from __future__ import annotations

import logging

from coordinator import host_planning, reputation
from coordinator.host_planning import ActivePeer
from coordinator.reputation import Observed, PeerRecord
from coordinator.sql import jobs, peers, rechecks, schema
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database
from coordinator.store import PEER_QUIET_SECONDS
from overlay.wire import decode

log = logging.getLogger(__name__)

# A peer's agreement record, as `peers.record_of` reads it: what its weight is allowed.
_RECORD = "agreed, outvoted, known_right, known_wrong, misreports, quarantined"


def rebalance(db: Database, now: float, only_if_needed: bool, paced: bool = False) -> None:
    """Plan now; `only_if_needed`: only when a plan is needed; `paced`: only when the store
    rested from the last one (host_planning.PLAN_SHARE)."""
    if only_if_needed and not db.replan:
        return
    if paced and not host_planning.rested(db.last_plan, db.monotonic()):
        return
    with db.transaction() as conn:
        plan(db, conn, now)


def plan(db: Database, conn: Connection, now: float) -> None:
    """Assign every host with work to an active peer (`host_planning.plan_hosts`), once the
    first plan has settled (`host_planning.settled`)."""
    if not db.planned_once:
        if not host_planning.settled(db.first_peer_at, now, db.settings.settle):
            return  # a plan stays due (db.replan): the next lease or rebalance tries again
        db.planned_once = True
    started = db.monotonic()
    jobs.stop_waiting_for_networks(db, conn, now)
    rechecks.overdue(db, conn, now)
    running = {name for (name,) in conn.execute("SELECT DISTINCT workload FROM jobs WHERE state = 'running'")}
    active = {
        peer_id: ActivePeer(
            capacity,
            decode(workloads),
            PeerRecord(*record),
            reputation.observed_rate(Observed(observed_items, observed_at), now),
        )
        for peer_id, capacity, workloads, observed_items, observed_at, *record in conn.execute(
            # A quarantined key gets no website (`coordinator.reputation`).
            f"SELECT id, capacity, workloads, observed_items, observed_at, {_RECORD} FROM peers WHERE quarantined IS NULL AND (last_seen >= ?"
            " OR id IN (SELECT peer_id FROM units WHERE state != 'done' AND state = 'leased' AND expires_at > ?))",
            (now - PEER_QUIET_SECONDS, now),
        )
    }
    demand: dict[str, int] = dict(
        conn.execute(f"SELECT q.unit_key, COUNT(*) FROM {schema.QUEUED_ITEMS} GROUP BY q.unit_key")
    )
    for key, count in conn.execute(
        "SELECT units.unit_key, COUNT(*) FROM units JOIN items ON items.unit_key = units.unit_key"
        " AND items.job_id = units.job_id AND items.id BETWEEN units.first_item AND units.last_item"
        " WHERE units.state != 'done' AND items.done = 0 GROUP BY units.unit_key"
    ):
        demand[key] = demand.get(key, 0) + count
    previous = dict(conn.execute("SELECT key, peer_id FROM hosts WHERE peer_id IS NOT NULL"))
    conn.execute("DELETE FROM stepped_aside WHERE until <= ?", (now,))
    stepped_aside: dict[str, set[str]] = {}
    for key, peer_id in conn.execute("SELECT unit_key, peer_id FROM stepped_aside"):
        stepped_aside.setdefault(key, set()).add(peer_id)
    decided = host_planning.plan_hosts(previous, active, running, demand, db.settings.epsilon, stepped_aside)
    # A host the plan left with a peer that stepped aside from it (no other peer can take it)
    # is that peer's to try again now, rather than nobody's until the step-aside ends.
    conn.executemany(
        "DELETE FROM stepped_aside WHERE unit_key = ? AND peer_id = ?",
        [(host, peer) for host, peer in decided.chosen.items() if peer in stepped_aside.get(host, ())],
    )
    conn.executemany(
        "INSERT INTO hosts (key, peer_id) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET peer_id = excluded.peer_id",
        decided.changed,
    )
    conn.executemany("UPDATE hosts SET peer_id = NULL WHERE key = ?", [(host,) for host in decided.dropped])
    # Hosts without work and without a pause to remember are forgotten.
    rested = conn.execute(
        "SELECT key FROM hosts WHERE peer_id IS NULL AND backoff = 0 AND next_allowed_at <= ?", (now,)
    ).fetchall()
    conn.executemany("DELETE FROM hosts WHERE key = ?", [row for row in rested if row[0] not in demand])
    db.replan = False
    db.last_plan = host_planning.planned(now, started, db.monotonic(), active)
    forgotten = peers.forget_quiet(db, conn, now)
    if forgotten:
        log.info("forgot %d peers not heard from for %.0f days", forgotten, peers.FORGET_AFTER / 86_400)
    if decided.changed or decided.dropped:
        log.log(
            logging.INFO if decided.changed else logging.DEBUG,
            "hosts assigned: %d with work on %d active peers; %d newly placed, %d moved, %d released,"
            " %d beyond every peer's cap",
            len(decided.chosen),
            decided.eligible,
            len(decided.changed) - decided.moved,
            decided.moved,
            len(decided.dropped),
            decided.overflow,
        )


def plan_is_due(db: Database, conn: Connection, peer_id: str, now: float) -> bool:
    """Should this peer's lease plan first (`host_planning.plan_is_due`)?"""
    return host_planning.plan_is_due(
        db.last_plan,
        db.replan,
        peer_id,
        now,
        db.monotonic(),
        lambda: conn.execute("SELECT 1 FROM hosts WHERE peer_id = ? LIMIT 1", (peer_id,)).fetchone() is not None,
    )
