"""Peers: who registered, when each was last heard from, what it says of its budget, how
fast it gets through items (its throughput estimate, fed by its reports), and its agreement
record (`coordinator.reputation`: a quarantined key gets no more work)."""

from __future__ import annotations

from coordinator import reputation
from coordinator.reputation import Observed, PeerRecord
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database
from coordinator.store import UnknownPeer
from overlay.wire import PeerUsage, RegisterRequest, encode


def register_peer(db: Database, peer_id: str, request: RegisterRequest, now: float) -> None:
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO peers (id, name, slots, workloads, version, registered_at, last_seen, capacity)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, slots = excluded.slots,"
            " workloads = excluded.workloads, version = excluded.version, last_seen = excluded.last_seen,"
            " capacity = excluded.capacity",
            (
                peer_id,
                request.name,
                request.slots,
                encode(request.workloads),
                request.version,
                now,
                now,
                request.capacity,
            ),
        )
    db.replan = True
    heard(db, now)


def heard(db: Database, now: float) -> None:
    """A peer was heard from: the first one since open starts the settle time of the first plan."""
    if db.first_peer_at is None:
        db.first_peer_at = now


def touch(conn: Connection, peer_id: str, now: float) -> None:
    """The peer was heard from; it must have registered."""
    if conn.execute("UPDATE peers SET last_seen = ? WHERE id = ?", (now, peer_id)).rowcount == 0:
        raise UnknownPeer("register first (POST /v1/peers/register)")


def saw_work(conn: Connection, peer_id: str, items: int, now: float) -> None:
    """The store accepted `items` items of the peer's work at `now`: what it was seen to do
    (`reputation.Observed`), which caps its weight in plans. Kept in its row, in the call's
    transaction: a call taken back counts nothing, and every coordinator of a database plans
    with what any of them saw."""
    if items <= 0:
        return
    row = conn.execute("SELECT observed_items, observed_at FROM peers WHERE id = ?", (peer_id,)).fetchone()
    if row is None:
        return
    seen = reputation.observed_after(Observed(*row), items, now)
    conn.execute("UPDATE peers SET observed_items = ?, observed_at = ? WHERE id = ?", (seen.items, seen.at, peer_id))


def record_usage(db: Database, conn: Connection, peer_id: str, usage: PeerUsage, now: float) -> None:
    """Keep what the peer says of its budget; a new capacity is a new weight: replan."""
    (capacity,) = conn.execute("SELECT capacity FROM peers WHERE id = ?", (peer_id,)).fetchone()
    if usage.capacity > 0 and usage.capacity != capacity:
        capacity = usage.capacity
        db.replan = True
    conn.execute(
        "UPDATE peers SET capacity = ?, used = ?, cap = ?, down_rate = ?, up_rate = ?, usage_at = ? WHERE id = ?",
        (capacity, usage.used, usage.cap, usage.down_rate, usage.up_rate, now, peer_id),
    )


def throughput(conn: Connection, peer_id: str | None) -> float | None:
    """The peer's items/s estimate; None before its first report."""
    row = conn.execute("SELECT throughput FROM peers WHERE id = ?", (peer_id,)).fetchone()
    return None if row is None else row[0]


_RECORD = "agreed, outvoted, known_right, known_wrong, misreports, quarantined"


def record_of(conn: Connection, peer_id: str) -> PeerRecord:
    row = conn.execute(f"SELECT {_RECORD} FROM peers WHERE id = ?", (peer_id,)).fetchone()
    return PeerRecord() if row is None else PeerRecord(*row)


def save_record(conn: Connection, peer_id: str, record: PeerRecord) -> None:
    conn.execute(
        "UPDATE peers SET agreed = ?, outvoted = ?, known_right = ?, known_wrong = ?, misreports = ?,"
        " quarantined = ? WHERE id = ?",
        (
            record.agreed,
            record.outvoted,
            record.known_right,
            record.known_wrong,
            record.misreports,
            record.quarantined,
            peer_id,
        ),
    )


def quarantined(conn: Connection, peer_id: str) -> str | None:
    """Why the peer was quarantined; None while it was not."""
    row = conn.execute("SELECT quarantined FROM peers WHERE id = ?", (peer_id,)).fetchone()
    return None if row is None else row[0]


# A peer quiet this long is forgotten (its row, not its work: units and results keep its id).
FORGET_AFTER = 7 * 86_400.0
FORGET_EVERY = 3_600.0  # seconds between two looks for such peers


def forget_quiet(db: Database, conn: Connection, now: float) -> int:
    """Delete the peers not heard from for FORGET_AFTER that hold no host, at most every
    FORGET_EVERY seconds: keys cost nothing to make, so a table of every key that ever
    registered would only grow. A forgotten peer that comes back registers again. Quarantined
    keys are kept: one coming back must not start clean."""
    if now - db.forgot_at < FORGET_EVERY:
        return 0
    db.forgot_at = now
    return conn.execute(
        "DELETE FROM peers WHERE last_seen < ? AND quarantined IS NULL"
        " AND id NOT IN (SELECT peer_id FROM hosts WHERE peer_id IS NOT NULL)",
        (now - FORGET_AFTER,),
    ).rowcount


def key_number(conn: Connection, peer_id: str) -> int:
    """The number a peer key goes by where every row would otherwise repeat its 64 hex digits
    (who answered an item). Kept for ever: a key forgotten as a peer keeps its number."""
    conn.execute("INSERT INTO keys (key) VALUES (?) ON CONFLICT DO NOTHING", (peer_id,))
    (number,) = conn.execute("SELECT id FROM keys WHERE key = ?", (peer_id,)).fetchone()
    return int(number)
