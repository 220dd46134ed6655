"""Leases, as the SQLite store grants, renews and releases them.

`lease` walks the asking peer's hosts, longest-rested first; each gives at most one unit,
chosen by `coordinator.host_leasing` (reclaimed, straggling or new) and granted by
`coordinator.leases`. A host's units hold ranges of its queue's items (`schema.UNIT_ITEMS`).
Then the hosts with work of vantage jobs and of re-check jobs that the plan gave to other
peers: such a job's units go to any peer that may take them, a vantage job's to a network its
website has not had yet (`coordinator.vantage`), a re-check job's to a peer that did not answer
its items, preferably of another network (`coordinator.sql.rechecks`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from coordinator import (
    host_leasing,
    item_jobs,
    leases,
    rollout,
    unit_sizing,
    url_jobs,
    vantage,
)
from coordinator.host_leasing import OpenUnit, TakenBack, WaitingItem
from coordinator.host_pacing import HostPace
from coordinator.leases import UnitLease, UnitState
from coordinator.sql import bundles, jobs, known_answers, peers, planning, rechecks, schema
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database, JobFacts, placeholders
from coordinator.store import NotFound, StaleLease
from overlay.wire import ANY_WORKLOAD, BundleRef, Lease, PeerUsage, decode

log = logging.getLogger(__name__)


class Span(NamedTuple):
    """Where a unit's items are: its host's items of its job with ids from first to last
    (those not done are its open items; `schema.UNIT_ITEMS`). None for an empty range."""

    key: str
    job_id: int
    first: int | None
    last: int | None


@dataclass(frozen=True, slots=True)
class StoredUnit:
    job_id: int
    unit_key: str
    leased_at: float | None
    lease: UnitLease


@dataclass(slots=True)
class Asking:
    """One lease call: who asks, for what, and what the call has looked up so far."""

    peer_id: str
    now: float
    lease_seconds: float
    throughput: float | None
    names: tuple[str, ...] | None  # the bundle names the peer runs; None: any
    network: str  # where its request came from (`vantage.network_of`)
    bundles: dict[tuple[str, str | None], BundleRef | None] = field(default_factory=dict)
    about: set[str] | None = None  # the networks of the peers about, once a re-check asked

    def networks_about(self, conn: Connection) -> set[str]:
        if self.about is None:
            self.about = rechecks.networks_about(conn, self.now)
        return self.about

    def runs(self, job: JobFacts) -> bool:
        return self.names is None or job.workload in self.names


class Granted(NamedTuple):
    """A lease as the store's thread (or process) hands it over: plain values, cheap to pass
    on; the caller's side builds the `Lease` and its payload (`lease`)."""

    unit_id: int
    token: int
    job_id: int
    workload: str
    items: list[tuple[str, bool]]  # (url, crawl) in the unit's order
    expires_at: float
    bundle: BundleRef | None
    host: str | None
    kind: str = "urls"  # its job model's input (`JobModel.input`)
    records: list[bytes] | None = None  # a records job's: each item's record, msgpack

    def lease(self) -> Lease:
        if self.kind == "urls":
            payload = url_jobs.unit_payload(self.job_id, ((url, bool(crawl)) for url, crawl in self.items))
        else:
            records = None if self.records is None else [decode(record) for record in self.records]
            payload = item_jobs.unit_payload(self.job_id, (item for item, _ in self.items), records)
        return Lease(
            unit_id=self.unit_id,
            token=self.token,
            job_id=self.job_id,
            workload=self.workload,
            payload=payload,
            expires_at=self.expires_at,
            bundle=self.bundle,
            host=self.host,
        )


# ---- rows ------------------------------------------------------------------------------------


def unit_lease(row: Sequence[Any]) -> UnitLease:
    state, token, peer_id, expires_at, attempts, last_error = row
    return UnitLease(UnitState(state), token, peer_id, expires_at, attempts, last_error)


def save_unit(conn: Connection, unit_id: int, unit: UnitLease) -> None:
    conn.execute(
        "UPDATE units SET state = ?, token = ?, peer_id = ?, expires_at = ?, attempts = ?, last_error = ? WHERE id = ?",
        (unit.state.value, unit.token, unit.peer_id, unit.expires_at, unit.attempts, unit.last_error, unit_id),
    )


def load_unit(conn: Connection, unit_id: int) -> StoredUnit:
    row = None
    if 0 <= unit_id <= schema.MAX_ID:
        row = conn.execute(
            "SELECT job_id, unit_key, leased_at, state, token, peer_id, expires_at, attempts, last_error"
            " FROM units WHERE id = ?",
            (unit_id,),
        ).fetchone()
    if row is None:
        raise NotFound(f"no unit {unit_id}")
    return StoredUnit(row[0], row[1], row[2], unit_lease(row[3:]))


def stale_lease(conn: Connection, unit_id: int, token: int, job_id: int) -> StaleLease:
    """The refusal of a renewal, release or report that names a lease the unit no longer has: saying
    so when its job was cancelled (the holder then knows why it stops)."""
    (cancelled,) = conn.execute("SELECT cancelled_at IS NOT NULL FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if cancelled:
        return StaleLease(f"unit {unit_id}: its job {job_id} was cancelled")
    return StaleLease(f"unit {unit_id} token {token} is not the current lease")


def finish_items_with_error(conn: Connection, span: Span, message: str, now: float) -> None:
    finished = conn.execute(
        f"UPDATE items SET result = 'error', failed = ?, done = 1 WHERE {schema.UNIT_ITEMS}",
        (message[: url_jobs.MAX_TEXT], *span),
    ).rowcount
    jobs.items_closed(conn, span.job_id, finished, now)


def load_pace(conn: Connection, key: str) -> HostPace:
    row = conn.execute("SELECT next_allowed_at, crawl_delay, backoff FROM hosts WHERE key = ?", (key,)).fetchone()
    return HostPace() if row is None else HostPace(*row)


def save_pace(conn: Connection, key: str, pace: HostPace) -> None:
    values = (pace.next_allowed_at, pace.crawl_delay, pace.backoff, key)
    if not conn.execute(
        "UPDATE hosts SET next_allowed_at = ?, crawl_delay = ?, backoff = ? WHERE key = ?", values
    ).rowcount:
        conn.execute("INSERT INTO hosts (next_allowed_at, crawl_delay, backoff, key) VALUES (?, ?, ?, ?)", values)


def pace_host(conn: Connection, key: str, change: Callable[[HostPace], HostPace]) -> None:
    """Apply a pacing rule to a host. A key that is no website (items that are not http(s)
    URLs, a part of an items job) has nothing to pace."""
    if not url_jobs.is_website(key):
        return
    before = load_pace(conn, key)
    after = change(before)
    if after != before:
        save_pace(conn, key, after)


# ---- leasing ---------------------------------------------------------------------------------


def lease(
    db: Database,
    peer_id: str,
    max_units: int,
    workloads: list[str],
    now: float,
    lease_seconds: float,
    usage: PeerUsage | None,
    address: str | None = None,
) -> list[Granted]:
    """`address`: where the request came from, as the coordinator saw the connection (a
    vantage job's units go by it: `coordinator.vantage`)."""
    granted: list[Granted] = []
    with db.transaction() as conn:
        peers.touch(conn, peer_id, now)
        peers.heard(db, now)  # after a restart, peers lease without registering again
        if usage is not None:
            peers.record_usage(db, conn, peer_id, usage, now)
        if planning.plan_is_due(db, conn, peer_id, now):
            planning.plan(db, conn, now)
        if not workloads or peers.quarantined(conn, peer_id) is not None:
            return granted  # a quarantined key gets no more work
        ask = Asking(
            peer_id,
            now,
            lease_seconds,
            peers.throughput(conn, peer_id),
            None if ANY_WORKLOAD in workloads else tuple(workloads),
            vantage.network_of(address, db.settings.vantage),
        )
        # Re-checks prefer a network no answer came from: where each peer is, as seen here.
        conn.execute(
            "UPDATE peers SET network = ? WHERE id = ? AND network IS DISTINCT FROM ?",
            (ask.network, peer_id, ask.network),
        )
        # Only hosts with something to lease: waiting items or a unit not done. A host keeps
        # its peer until the next plan after its work ran out; asking for its items on
        # every lease until then cost a statement per host.
        hosts = conn.execute(
            "SELECT key, next_allowed_at, crawl_delay, backoff FROM hosts"
            " WHERE peer_id = ? AND next_allowed_at <= ?"
            f" AND (EXISTS (SELECT 1 FROM queues q WHERE q.unit_key = hosts.key AND {schema.WAITING})"
            " OR EXISTS (SELECT 1 FROM units WHERE unit_key = hosts.key AND state != 'done'))"
            # Until the next plan hands it on, not to the peer that stepped aside from it.
            " AND NOT EXISTS (SELECT 1 FROM stepped_aside s WHERE s.unit_key = hosts.key AND s.peer_id = ?"
            " AND s.until > ?)"
            " ORDER BY next_allowed_at, rowid",
            (peer_id, now, peer_id, now),
        ).fetchall()
        # The open units of all those hosts in one query, not one per host.
        open_units: dict[str, list[tuple[Any, ...]]] = {}
        for key, *unit_row in conn.execute(
            f"SELECT units.unit_key, {_OPEN_UNIT_COLUMNS}"
            " FROM hosts JOIN units ON units.unit_key = hosts.key AND units.state != 'done'"
            " WHERE hosts.peer_id = ? AND hosts.next_allowed_at <= ? ORDER BY units.id",
            (peer_id, now),
        ):
            open_units.setdefault(key, []).append(tuple(unit_row))
        records_bytes = 0  # what units of records weigh: an answer stays within a peer's cap
        for key, *pace in hosts:
            if len(granted) >= max_units or records_bytes >= item_jobs.LEASE_RECORD_BYTES:
                break
            one = _lease_host(db, conn, key, HostPace(*pace), ask, open_units.get(key, []), None)
            if one is not None:
                granted.append(one)
                records_bytes += sum(map(len, one.records or ()))
        if len(granted) < max_units:
            granted += _lease_open(db, conn, ask, max_units - len(granted))
    return granted


_OPEN_UNIT_COLUMNS = (
    "units.id, units.job_id, units.first_item, units.last_item, units.leased_at, units.renewed_at, units.replica,"
    " units.state, units.token, units.peer_id, units.expires_at, units.attempts, units.last_error"
)


def _lease_open(db: Database, conn: Connection, ask: Asking, room: int) -> list[Granted]:
    """Units of vantage and re-check jobs on hosts the plan gave to other peers (or to none),
    for a peer that may take them (`vantage.may_serve`, `rechecks.allowed`)."""
    open_jobs = [
        job_id
        for (job_id,) in conn.execute(
            "SELECT id FROM jobs WHERE state = 'running' AND vantage IS NOT NULL"
            " UNION ALL SELECT id FROM jobs WHERE state = 'running' AND recheck_of IS NOT NULL"
        )
    ]
    if not open_jobs:
        return []
    marks = placeholders(open_jobs)
    hosts = conn.execute(
        "SELECT key, next_allowed_at, crawl_delay, backoff FROM hosts"
        " WHERE (peer_id IS NULL OR peer_id != ?) AND next_allowed_at <= ?"
        f" AND (EXISTS (SELECT 1 FROM queues q WHERE q.unit_key = hosts.key AND q.job_id IN ({marks})"
        f" AND {schema.WAITING})"
        f" OR EXISTS (SELECT 1 FROM units WHERE unit_key = hosts.key AND state != 'done' AND job_id IN ({marks})))"
        # Not to a peer that stepped aside from the host lately (its bundle would not run there).
        " AND NOT EXISTS (SELECT 1 FROM stepped_aside s WHERE s.unit_key = hosts.key AND s.peer_id = ?"
        " AND s.until > ?)"
        " ORDER BY next_allowed_at, rowid",
        (ask.peer_id, ask.now, *open_jobs, *open_jobs, ask.peer_id, ask.now),
    ).fetchall()
    granted: list[Granted] = []
    for key, *pace in hosts:
        if len(granted) >= room:
            break
        rows = conn.execute(
            f"SELECT {_OPEN_UNIT_COLUMNS} FROM units WHERE unit_key = ? AND state != 'done' ORDER BY id", (key,)
        ).fetchall()
        one = _lease_host(db, conn, key, HostPace(*pace), ask, rows, frozenset(open_jobs))
        if one is not None:
            granted.append(one)
    return granted


def _networks_used(conn: Connection, job_id: int, key: str) -> dict[int, set[str]]:
    """Which networks and peers (`vantage.peer_label`) took units of each replica of a vantage
    job on one host."""
    used: dict[int, set[str]] = {}
    for replica, network, peer_id in conn.execute(
        "SELECT replica, network, peer_id FROM units WHERE job_id = ? AND unit_key = ? AND network IS NOT NULL",
        (job_id, key),
    ):
        used.setdefault(replica, set()).add(network)
        if peer_id is not None:
            used[replica].add(vantage.peer_label(peer_id))
    return used


def _lease_host(
    db: Database,
    conn: Connection,
    key: str,
    pace: HostPace,
    ask: Asking,
    rows: list[tuple[Any, ...]],
    only_jobs: frozenset[int] | None,
) -> Granted | None:
    """At most one unit of host `key` for the asking peer (`host_leasing`). `rows`: the
    host's units that are not done (`_OPEN_UNIT_COLUMNS`); `only_jobs`: the jobs whose units
    it may take (a host the plan gave to another peer: vantage jobs'), None: any. A vantage
    job's unit goes only to a network its website has not had for another replica."""
    spans: dict[int, Span] = {}
    replicas: dict[int, int] = {}
    units: list[OpenUnit] = []
    for unit_id, job_id, first, last, leased_at, renewed_at, replica, *lease_row in rows:
        spans[unit_id] = Span(key, job_id, first, last)
        replicas[unit_id] = replica
        units.append(OpenUnit(unit_id, job_id, unit_lease(lease_row), leased_at, renewed_at))
    used: dict[int, dict[int, set[str]]] = {}

    def may_serve(job_id: int, replica: int) -> bool:
        if only_jobs is not None and job_id not in only_jobs:
            return False
        if jobs.job(db, conn, job_id).vantage is None:
            return True  # a re-check job's items are looked at one by one (`_rechecks_allowed`)
        if job_id not in used:
            used[job_id] = _networks_used(conn, job_id, key)
        return vantage.may_serve(ask.network, replica, used[job_id]) and vantage.may_serve(
            vantage.peer_label(ask.peer_id), replica, used[job_id]
        )

    reclaimed = host_leasing.reclaim(
        key,
        pace,
        units,
        ask.now,
        db.settings.min_delay,
        lambda unit: _straggler(conn, unit, spans[unit.unit_id], ask),
    )
    if reclaimed is None:
        return None  # a live lease: never two peers on one host
    if reclaimed.pace != pace:
        save_pace(conn, key, reclaimed.pace)
    if not reclaimed.may_lease:
        return None
    for unit in reclaimed.units:
        span = spans[unit.unit_id]
        if not ask.runs(jobs.job(db, conn, span.job_id)) or not may_serve(span.job_id, replicas[unit.unit_id]):
            continue
        if jobs.job(db, conn, span.job_id).recheck_of is not None and not _may_recheck_unit(db, conn, ask, span):
            continue
        granted = leases.grant(unit.lease, ask.peer_id, ask.now, ask.lease_seconds, db.settings.max_attempts)
        save_unit(conn, unit.unit_id, granted)
        if granted.state is UnitState.DONE:
            log.warning("unit %d of job %d: %s", unit.unit_id, span.job_id, leases.give_up_message(granted))
            finish_items_with_error(conn, span, leases.give_up_message(granted), ask.now)
            continue
        conn.execute(
            "UPDATE units SET leased_at = ?, renewed_at = ?, network = ?, version = ? WHERE id = ?",
            (
                ask.now,
                ask.now,
                _network_kept(db, conn, ask, span.job_id),
                _version_of(db, conn, ask, span.job_id),
                unit.unit_id,
            ),
        )
        items = conn.execute(f"SELECT url, crawl FROM items WHERE {schema.UNIT_ITEMS} ORDER BY id", span).fetchall()
        return _lease_of(db, conn, ask, span, unit.unit_id, granted, items)
    return _form_unit(db, conn, key, ask, may_serve)


def _network_kept(db: Database, conn: Connection, ask: Asking, job_id: int) -> str | None:
    """The network a unit keeps of the peer it is granted to: its items' answers come from
    there (a vantage point; where a re-checked answer came from)."""
    return ask.network


def _may_recheck_unit(db: Database, conn: Connection, ask: Asking, span: Span) -> bool:
    """May the asking peer take a re-check job's unit granted before? Only if it may answer
    every item the unit holds open."""
    waiting = [
        rechecks.Waiting(item_id, span.job_id, url, asked_at)
        for item_id, url, asked_at in conn.execute(
            f"SELECT id, url, asked_at FROM items WHERE {schema.UNIT_ITEMS}", span
        )
    ]
    allowed = rechecks.allowed(db, conn, ask.peer_id, ask.network, waiting, ask.networks_about(conn), ask.now)
    return len(allowed) == len(waiting)


def _form_unit(
    db: Database, conn: Connection, key: str, ask: Asking, may_serve: Callable[[int, int], bool]
) -> Granted | None:
    """A new unit of the host's waiting items (`host_leasing.form_unit`), of its oldest job
    the peer runs and may serve, sized for the peer: about unit_sizing.TARGET_SECONDS of its
    work."""
    # The waiting items of the host's queues, oldest job first, in one statement.
    only = ""
    if ask.names is not None:
        only = f" AND q.job_id IN (SELECT id FROM jobs WHERE workload IN ({placeholders(list(ask.names))}))"
    waiting = [
        WaitingItem(job_id, item_id, url, bool(crawl), replica)
        for job_id, item_id, url, crawl, replica in conn.execute(
            f"SELECT q.job_id, items.id, items.url, items.crawl, items.replica FROM {schema.QUEUED_ITEMS}"
            f" WHERE q.unit_key = ?{only} ORDER BY q.job_id, items.id LIMIT ?",
            (key, *(ask.names or ()), unit_sizing.unit_size(ask.throughput)),
        )
    ]
    checks = _rechecks_allowed(db, conn, ask, waiting)
    formed = host_leasing.form_unit(
        waiting,
        lambda job_id: jobs.job(db, conn, job_id).unit_size,
        may_serve,
        lambda item: checks is None or jobs.job(db, conn, item.job_id).recheck_of is None or item.item_id in checks,
    )
    if formed is None:
        return None
    unit = leases.grant(UnitLease(UnitState.QUEUED), ask.peer_id, ask.now, ask.lease_seconds, db.settings.max_attempts)
    unit_id = conn.execute(
        "INSERT INTO units (job_id, unit_key, state, token, peer_id, expires_at, leased_at, renewed_at,"
        " first_item, last_item, replica, network, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            formed.job_id,
            key,
            unit.state.value,
            unit.token,
            unit.peer_id,
            unit.expires_at,
            ask.now,
            ask.now,
            formed.first_item,
            formed.last_item,
            formed.replica,
            _network_kept(db, conn, ask, formed.job_id),
            _version_of(db, conn, ask, formed.job_id),
        ),
    ).fetchone()[0]
    assert unit_id is not None
    conn.execute(
        "UPDATE queues SET taken_through = ? WHERE unit_key = ? AND job_id = ?", (formed.last_item, key, formed.job_id)
    )
    span = Span(key, formed.job_id, formed.first_item, formed.last_item)
    return _lease_of(db, conn, ask, span, unit_id, unit, formed.items)


def _rechecks_allowed(db: Database, conn: Connection, ask: Asking, waiting: list[WaitingItem]) -> set[int] | None:
    """Which waiting items of re-check jobs the asking peer may answer; None without any."""
    of_rechecks = [item for item in waiting if jobs.job(db, conn, item.job_id).recheck_of is not None]
    if not of_rechecks:
        return None
    asked_at = dict(
        conn.execute(
            f"SELECT id, asked_at FROM items WHERE id IN ({placeholders(of_rechecks)})",
            [item.item_id for item in of_rechecks],
        ).fetchall()
    )
    return rechecks.allowed(
        db,
        conn,
        ask.peer_id,
        ask.network,
        [rechecks.Waiting(item.item_id, item.job_id, item.url, asked_at.get(item.item_id)) for item in of_rechecks],
        ask.networks_about(conn),
        ask.now,
    )


def _lease_of(
    db: Database,
    conn: Connection,
    ask: Asking,
    span: Span,
    unit_id: int,
    unit: UnitLease,
    items: list[tuple[str, bool]],
) -> Granted:
    """The grant of a unit of `span` holding `items` (its open items, in id order)."""
    key, job_id = span.key, span.job_id
    job = jobs.job(db, conn, job_id)
    assert unit.expires_at is not None
    workload = job.workload
    bundle = _bundle_of(db, conn, ask, job_id)
    host = key if url_jobs.is_website(key) else None
    kind = jobs.checker(db, conn, job_id).model.input
    if kind == "urls":
        items = known_answers.plant(db, conn, ask.peer_id, unit_id, job_id, key, items, ask.now)
    records = None
    if kind == "records":
        records = [
            data for (data,) in conn.execute(f"SELECT data FROM items WHERE {schema.UNIT_ITEMS} ORDER BY id", span)
        ]
    granted = Granted(unit_id, unit.token, job_id, workload, items, unit.expires_at, bundle, host)
    return granted._replace(kind=kind, records=records) if kind != "urls" else granted


def _bundle_of(db: Database, conn: Connection, ask: Asking, job_id: int) -> BundleRef | None:
    """The bundle version the asking peer runs a unit of this job with (looked up once a call)."""
    job = jobs.job(db, conn, job_id)
    if (job.workload, job.pinned) not in ask.bundles:
        ask.bundles[job.workload, job.pinned] = bundle_ref(conn, job.workload, job.pinned, ask.peer_id)
    return ask.bundles[job.workload, job.pinned]


def _version_of(db: Database, conn: Connection, ask: Asking, job_id: int) -> str | None:
    """The version a granted unit keeps: its report must name it, so that a peer cannot charge
    another version's rollout."""
    bundle = _bundle_of(db, conn, ask, job_id)
    return None if bundle is None else bundle.version


def _straggler(conn: Connection, unit: OpenUnit, span: Span, ask: Asking) -> TakenBack | None:
    """Is this live lease a straggler's, to take back (`host_leasing.taken_back`)? Its items,
    its holder's throughput and its job's waiting work are looked up only once its holder
    went silent."""
    if not host_leasing.silent(unit, ask.now, ask.lease_seconds):
        return None  # its holder renews: it is alive and may still be fetching
    (items,) = conn.execute(f"SELECT COUNT(*) FROM items WHERE {schema.UNIT_ITEMS}", span).fetchone()
    waiting = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM queues q WHERE job_id = ? AND {schema.WAITING})"
        " OR EXISTS (SELECT 1 FROM units WHERE job_id = ? AND state = 'queued')",
        (span.job_id, span.job_id),
    ).fetchone()[0]
    back = host_leasing.taken_back(
        unit, ask.now, ask.lease_seconds, items, peers.throughput(conn, unit.lease.peer_id), bool(waiting)
    )
    if back is not None:
        assert unit.leased_at is not None and unit.renewed_at is not None
        log.info(
            "unit %d of job %d: holder %s… silent for %.0f s, %.0f s into an expected %.0f s; granting it again",
            unit.unit_id,
            span.job_id,
            (unit.lease.peer_id or "")[:12],
            ask.now - unit.renewed_at,
            ask.now - unit.leased_at,
            back.expected_seconds,
        )
    return back


def bundle_ref(conn: Connection, name: str, pinned: str | None, peer_id: str) -> BundleRef | None:
    """The version a peer runs a job's unit with: the job's pin, else the rollout's choice.
    None only for a job stored before bundles existed whose bundle was never published."""
    version = pinned
    if version is None:
        the_rollout = bundles.load_rollout(conn, name)
        if the_rollout is None:
            return None
        version = rollout.version_for(the_rollout, peer_id)
    row = conn.execute("SELECT info_hash FROM bundles WHERE name = ? AND version = ?", (name, version)).fetchone()
    return None if row is None else BundleRef(name, version, row[0])
