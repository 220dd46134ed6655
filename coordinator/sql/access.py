"""Who may do what, as the SQLite store keeps it: grants (a key's role), the operator's
limits per key, URLs counted per key and day, and the audit log of every change to them
(and of jobs and bundles: who, what, when). The rules are `coordinator.roles` and
`coordinator.owner_limits`."""

from __future__ import annotations

import logging
import re

from coordinator import owner_limits
from coordinator.owner_limits import Limits
from coordinator.roles import Role
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database
from coordinator.store import AuditEntry, Grant, InvalidInput, NotFound

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"[0-9a-f]{64}")
_MAX_NAME = 64
_MAX_DETAIL = 500


def _check_key(public_key: str) -> None:
    if not _KEY_RE.fullmatch(public_key):
        raise InvalidInput("a key must be an Ed25519 public key: 64 lowercase hex digits")


def grant(db: Database, name: str, public_key: str, role: str, actor: str, now: float) -> bool:
    """Give key `public_key` the role under `name`; False when it already had just that."""
    if not 0 < len(name) <= _MAX_NAME or not name.isprintable():
        raise InvalidInput(f"a name must be 1..{_MAX_NAME} printable characters")
    _check_key(public_key)
    try:
        the_role = Role(role)
    except ValueError:
        raise InvalidInput(f"no role {role!r}: operator, owner or viewer") from None
    with db.transaction() as conn:
        rows = conn.execute(
            "SELECT name, public_key, role FROM grants WHERE name = ? OR public_key = ?", (name, public_key)
        ).fetchall()
        if rows == [(name, public_key, the_role.value)]:
            return False
        for other_name, other_key, _ in rows:
            if other_key != public_key:
                raise InvalidInput(
                    f"{other_name!r} is already the name of key {other_key[:16]}…; "
                    f"key {public_key[:16]}… needs a name of its own"
                )
        conn.execute(
            "INSERT INTO grants (public_key, name, role, added_at) VALUES (?, ?, ?, ?) ON CONFLICT (public_key)"
            " DO UPDATE SET name = excluded.name, role = excluded.role",
            (public_key, name, the_role.value, now),
        )
        audit(conn, now, actor, "grant", public_key, f"{name}: {the_role.value}")
    log.info("key %s… (%s) is now %s", public_key[:16], name, the_role.value)
    return True


def revoke(db: Database, public_key: str, actor: str, now: float) -> None:
    _check_key(public_key)
    with db.transaction() as conn:
        row = conn.execute("SELECT name, role FROM grants WHERE public_key = ?", (public_key,)).fetchone()
        if row is None:
            raise NotFound(f"key {public_key[:16]}… has no role here")
        conn.execute("DELETE FROM grants WHERE public_key = ?", (public_key,))
        audit(conn, now, actor, "revoke", public_key, f"{row[0]}: was {row[1]}")
    log.info("key %s… (%s) no longer has a role", public_key[:16], row[0])


def grants(db: Database) -> list[Grant]:
    with db.transaction(write=False) as conn:
        rows = conn.execute("SELECT name, public_key, role, added_at FROM grants ORDER BY role, name").fetchall()
    return [Grant(*row) for row in rows]


def role_of(db: Database, public_key: str) -> str | None:
    with db.transaction(write=False) as conn:
        found = role(conn, public_key)
    return None if found is None else found.value


def role(conn: Connection, public_key: str) -> Role | None:
    row = conn.execute("SELECT role FROM grants WHERE public_key = ?", (public_key,)).fetchone()
    return None if row is None else Role(row[0])


# ---- limits --------------------------------------------------------------------------------


def set_limits(db: Database, public_key: str, limits: Limits, actor: str, now: float) -> None:
    _check_key(public_key)
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO limits (public_key, jobs_at_once, urls_per_job, urls_per_day, bundle_bytes)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (public_key) DO UPDATE SET jobs_at_once = excluded.jobs_at_once,"
            " urls_per_job = excluded.urls_per_job, urls_per_day = excluded.urls_per_day,"
            " bundle_bytes = excluded.bundle_bytes",
            (public_key, limits.jobs_at_once, limits.urls_per_job, limits.urls_per_day, limits.bundle_bytes),
        )
        audit(
            conn,
            now,
            actor,
            "limits",
            public_key,
            f"{limits.jobs_at_once} jobs at once, {limits.urls_per_job} URLs per job,"
            f" {limits.urls_per_day} URLs per day, bundles of {limits.bundle_bytes} bytes",
        )


def limits_of(db: Database, public_key: str) -> Limits:
    with db.transaction(write=False) as conn:
        return limits(conn, public_key)


def limits(conn: Connection, public_key: str | None) -> Limits:
    """The key's limits: none for an operator (or a job from before roles), the operator's
    choice if set, else the defaults."""
    if public_key is None or role(conn, public_key) is Role.OPERATOR:
        return owner_limits.NONE
    row = conn.execute(
        "SELECT jobs_at_once, urls_per_job, urls_per_day, bundle_bytes FROM limits WHERE public_key = ?",
        (public_key,),
    ).fetchone()
    return owner_limits.DEFAULT if row is None else Limits(*row)


def urls_today(conn: Connection, public_key: str, now: float) -> int:
    row = conn.execute(
        "SELECT urls FROM daily_urls WHERE public_key = ? AND day = ?", (public_key, owner_limits.day_of(now))
    ).fetchone()
    return 0 if row is None else row[0]


def count_urls(conn: Connection, public_key: str, added: int, now: float) -> None:
    if added:
        conn.execute(
            "INSERT INTO daily_urls (public_key, day, urls) VALUES (?, ?, ?)"
            " ON CONFLICT (public_key, day) DO UPDATE SET urls = daily_urls.urls + excluded.urls",
            (public_key, owner_limits.day_of(now), added),
        )


# ---- the audit log ---------------------------------------------------------------------------


def audit(conn: Connection, now: float, actor: str, action: str, subject: str, detail: str = "") -> None:
    conn.execute(
        "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        (now, actor, action, subject, detail[:_MAX_DETAIL]),
    )


def audit_log(db: Database, limit: int) -> list[AuditEntry]:
    """The newest `limit` entries, oldest first."""
    with db.transaction(write=False) as conn:
        rows = conn.execute(
            "SELECT at, actor, action, subject, detail FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
    return [AuditEntry(*row) for row in reversed(rows)]
