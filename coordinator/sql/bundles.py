"""Bundles and each bundle name's rollout, as the SQLite store keeps them.

Only a key with the owner (or operator) role publishes; it may publish only under names it holds; a version, once published, never
changes. The rules of rollouts are `coordinator.rollout`'s; this loads and saves them.
"""

from __future__ import annotations

import logging

from coordinator import rollout
from coordinator.roles import Role
from coordinator.rollout import Rollout, RolloutState, Tally
from coordinator.sql import access
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database
from coordinator.store import Conflict, NotFound, NotOwner, PublishedBundle, unknown_owner
from overlay.wire import BundleStatus, VersionStats

log = logging.getLogger(__name__)

_BUNDLE_COLUMNS = "name, version, owner_key, info_hash, archive_sha256, manifest, published_at"


def add_bundle(db: Database, bundle: PublishedBundle, stable: bool) -> bool:
    name, version = bundle.name, bundle.version
    with db.transaction() as conn:
        if access.role(conn, bundle.owner_key) not in (Role.OWNER, Role.OPERATOR):
            raise unknown_owner(bundle.owner_key)
        current = load_rollout(conn, name)
        if current is not None and current.owner_key != bundle.owner_key:
            raise NotOwner(
                f"bundle name {name!r} belongs to owner key {current.owner_key[:16]}…; "
                f"key {bundle.owner_key[:16]}… cannot publish it: choose another name"
            )
        row = conn.execute("SELECT manifest FROM bundles WHERE name = ? AND version = ?", (name, version)).fetchone()
        if row is not None and row[0] != bundle.manifest:
            raise Conflict(
                f"{name} {version} is already published with different content; "
                "versions never change: publish it as a new version"
            )
        if row is None:
            conn.execute(
                "INSERT INTO bundles (name, version, owner_key, info_hash, archive_sha256, manifest, published_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    version,
                    bundle.owner_key,
                    bundle.info_hash,
                    bundle.archive_sha256,
                    bundle.manifest,
                    bundle.published_at,
                ),
            )
        if row is None:
            access.audit(conn, bundle.published_at, bundle.owner_key, "publish", f"bundle {name} {version}")
        if current is None:
            save_rollout(conn, rollout.first(name, bundle.owner_key, version))
        elif stable and current.stable != version:
            save_rollout(conn, rollout.made_stable(current, version, f"{name} {version} is the stable version"))
    if row is None:
        log.info("bundle %s %s published by %s…", name, version, bundle.owner_key[:16])
    return row is None


def keep_archive(db: Database, name: str, version: str, archive: bytes) -> None:
    """Kept by a store several coordinators may share (PostgreSQL), for those that lack it; a
    SQLite file has one coordinator, whose bundle dir holds every archive already."""
    if not db.shared:
        return
    with db.transaction() as conn:
        if conn.execute("SELECT 1 FROM bundles WHERE name = ? AND version = ?", (name, version)).fetchone() is None:
            raise NotFound(f"bundle {name!r} has no version {version!r} on this coordinator")
        conn.execute(
            "INSERT INTO archives (name, version, archive) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (name, version, archive),
        )


def bundle_archive(db: Database, name: str, version: str) -> bytes | None:
    with db.transaction(write=False) as conn:
        row = conn.execute("SELECT archive FROM archives WHERE name = ? AND version = ?", (name, version)).fetchone()
    return None if row is None else bytes(row[0])


def bundle_info(db: Database, name: str, version: str) -> PublishedBundle:
    with db.transaction(write=False) as conn:
        row = conn.execute(
            f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
    if row is None:
        raise NotFound(f"bundle {name!r} has no version {version!r} on this coordinator")
    return PublishedBundle(*row)


def published_bundles(db: Database) -> list[PublishedBundle]:
    with db.transaction(write=False) as conn:
        rows = conn.execute(f"SELECT {_BUNDLE_COLUMNS} FROM bundles ORDER BY published_at, rowid").fetchall()
    return [PublishedBundle(*row) for row in rows]


def bundle_status(db: Database, name: str) -> BundleStatus:
    with db.transaction(write=False) as conn:
        return status_of_bundle(conn, name)


def list_bundles(db: Database) -> list[BundleStatus]:
    with db.transaction(write=False) as conn:
        names = [name for (name,) in conn.execute("SELECT name FROM rollouts ORDER BY name")]
        return [status_of_bundle(conn, name) for name in names]


def set_rollout(
    db: Database, name: str, version: str, percent: int, signer_key: str, now: float, force: bool = False
) -> BundleStatus:
    with db.transaction() as conn:
        current = load_rollout(conn, name)
        if current is None:
            raise NotFound(f"no bundle named {name!r} is published on this coordinator")
        if signer_key != current.owner_key:
            raise NotOwner(
                f"only the owner key {current.owner_key[:16]}… of {name!r} may roll it out; "
                f"this request is signed by {signer_key[:16]}…"
            )
        if not conn.execute("SELECT 1 FROM bundles WHERE name = ? AND version = ?", (name, version)).fetchone():
            raise NotFound(f"bundle {name!r} has no version {version!r}; publish it first")
        updated = rollout.started(current, version, percent, force)
        save_rollout(conn, updated)
        forced = ", forced after a rollback" if version in current.rolled_back else ""
        access.audit(conn, now, signer_key, "rollout", f"bundle {name} {version}", f"{percent}%{forced}")
        status = status_of_bundle(conn, name)
    log.info("%s", updated.message)
    return status


def load_rollout(conn: Connection, name: str) -> Rollout | None:
    row = conn.execute(
        "SELECT owner_key, stable, candidate, percent, state, message, candidate_ok, candidate_failed"
        " FROM rollouts WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        return None
    owner_key, stable, candidate, percent, state, message, ok, failed = row
    rolled_back = frozenset(
        version
        for (version,) in conn.execute("SELECT version FROM bundles WHERE name = ? AND rolled_back = 1", (name,))
    )
    return Rollout(
        name, owner_key, stable, candidate, percent, RolloutState(state), message, Tally(ok, failed), rolled_back
    )


def save_rollout(conn: Connection, r: Rollout) -> None:
    conn.execute(
        "INSERT INTO rollouts (name, owner_key, stable, candidate, percent, state, message, candidate_ok,"
        " candidate_failed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET owner_key = excluded.owner_key, stable = excluded.stable,"
        " candidate = excluded.candidate, percent = excluded.percent, state = excluded.state,"
        " message = excluded.message, candidate_ok = excluded.candidate_ok,"
        " candidate_failed = excluded.candidate_failed",
        (
            r.name,
            r.owner_key,
            r.stable,
            r.candidate,
            r.percent,
            r.state.value,
            r.message,
            r.since_started.ok,
            r.since_started.failed,
        ),
    )
    # Which versions stay marked as rolled back: set where judged, cleared where forced.
    versions = sorted(r.rolled_back)
    marked = f"CASE WHEN version IN ({', '.join('?' * len(versions)) or 'NULL'}) THEN 1 ELSE 0 END"
    conn.execute(
        f"UPDATE bundles SET rolled_back = {marked} WHERE name = ? AND rolled_back != {marked}",
        (*versions, r.name, *versions),
    )


def tally(conn: Connection, name: str, version: str) -> Tally:
    row = conn.execute(
        "SELECT units_ok, units_failed FROM bundles WHERE name = ? AND version = ?", (name, version)
    ).fetchone()
    return Tally() if row is None else Tally(*row)


def status_of_bundle(conn: Connection, name: str) -> BundleStatus:
    r = load_rollout(conn, name)
    if r is None:
        raise NotFound(f"no bundle named {name!r} is published on this coordinator")
    rows = conn.execute(
        "SELECT version, info_hash, published_at, units_ok, units_failed, rolled_back FROM bundles WHERE name = ?"
        " ORDER BY published_at, rowid",
        (name,),
    ).fetchall()
    return BundleStatus(
        name=name,
        owner_key=r.owner_key,
        stable=r.stable,
        candidate=r.candidate,
        percent=r.percent,
        state=r.state.value,
        message=r.message,
        versions=[
            VersionStats(v, info_hash, at, ok, failed, bool(back)) for v, info_hash, at, ok, failed, back in rows
        ],
    )
