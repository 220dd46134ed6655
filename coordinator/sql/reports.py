"""Reports, as the SQLite store takes them.

A report's records are checked against its job's model (`workloads.records`); a report they
do not follow is refused as the workload's failure: its unit uses an attempt with "report
refused: <reason>", the version that ran it is charged, the peer is told why (not accepted)
and nothing else of it is kept. Failed units' stderr tails are kept for their owner
(`keep_logs`).

A call's reports are taken in two steps: every report is judged against the rows it touches,
loaded for the whole call at once (its unit, the unit's open items, its host's pace), and what
it changes is collected in a `Reported`; the collected changes are then written with one
statement per kind of row. A report is refused before it changes anything, so a refused
report of a batch takes nothing else with it. What a report does to its unit is
`leases.after_report`'s rule; to its host, `host_pacing.after_unit`'s.

Items a version 2 workload streamed while its unit ran were finished already
(`coordinator.sql.streamed`, `streamed_records`): the final report says how many its lease
streamed (`streamed`) and carries those the peer could not hand over yet (`items`), taken
first; a record of an item already finished is dropped (the first record counts), so nothing
is counted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from coordinator import host_pacing, leases, reputation, rollout, unit_sizing, url_jobs
from coordinator.host_pacing import HostPace, UnitSummary
from coordinator.leases import UnitLease, UnitState, Verdict
from coordinator.rollout import Rollout, RolloutState
from coordinator.sql import bundles, holding, jobs, kept_records, known_answers, leasing, peers, rechecks, schema
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database, chunks, placeholders
from coordinator.store import InvalidInput, NotFound, StaleLease, StoreError
from overlay.wire import Report, ReportResponse
from workloads.records import Record, SchemaError, check_unit_items

log = logging.getLogger(__name__)

MAX_LOGS_PER_JOB = 100  # stderr tails kept per job: the latest ones
UNCOUNTED = "done"  # what job status counts a record as when its model names no count field
REFUSED = "report_refused"  # a refused report's code in a batch's verdicts


class Incoming(NamedTuple):
    """A report as the store's thread (or process) takes it: plain values, cheap to hand
    over. Its records are checked there, against its job's model (`jobs.checker`)."""

    unit_id: int
    token: int
    exit_code: int
    payload: dict[str, Any] | None
    error: str | None
    bundle_version: str | None
    crawl_delay: float | None
    throttled: int
    log: str | None
    streamed: int = 0  # items the lease streamed that the coordinator took
    items: list[Any] | None = None  # records the lease streamed not yet taken


def incoming(report: Report) -> Incoming:
    return Incoming(
        report.unit_id,
        report.token,
        report.exit_code,
        report.payload if report.exit_code in (0, 1) else None,
        report.error,
        report.bundle_version,
        report.crawl_delay,
        report.throttled or 0,
        report.log if report.exit_code not in (0, 1) else None,
        report.streamed or 0,
        report.items or None,
    )


@dataclass(slots=True)
class ReportedUnit:
    """A unit a call's reports name, as loaded for the call and changed by its reports."""

    job_id: int
    key: str  # its host (unit_key)
    first: int  # the range of items it holds
    last: int
    leased_at: float | None
    lease: UnitLease
    replica: int = 0  # its vantage point (`coordinator.vantage`)
    network: str | None = None  # a vantage job's: the network of the peer it was granted to
    version: str | None = None  # the bundle version it was granted with (None: before schema 13)
    items: dict[str, tuple[int, int, bool]] = field(default_factory=dict)  # open: url -> (id, depth, crawl)
    planted: dict[str, int | None] = field(default_factory=dict)  # known answers in its lease (`known_answers`)


@dataclass(slots=True)
class Reported:
    """The rows one call's reports touch, loaded once, and what the reports change in them,
    written once at the end of the call (`write_reported`): a batch of a hundred
    reports of one job then updates its progress once, not a hundred times."""

    peer_id: str
    throughput_before: float | None
    throughput: float | None = None  # the peer's items/s estimate after the reports taken so far
    units: dict[int, ReportedUnit] = field(default_factory=dict)
    paces: dict[str, HostPace] = field(default_factory=dict)  # hosts' paces, as changed so far
    stored_paces: dict[str, HostPace] = field(default_factory=dict)  # as loaded
    leases: dict[int, UnitLease] = field(default_factory=dict)  # units changed: id -> lease after
    finished: list[tuple[Any, ...]] = field(default_factory=list)  # (count, record, network, item id)
    logs: list[tuple[Any, ...]] = field(default_factory=list)  # failed units' stderr tails
    failed: list[tuple[str, int]] = field(default_factory=list)  # (error, item id): finished unchecked
    # What partial reports left undone, for new units: (key, job, first, last, replica).
    left_out: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    outcomes: list[tuple[str, str, bool]] = field(default_factory=list)  # (bundle, version, ok) per unit
    closed: dict[int, int] = field(default_factory=dict)  # items finished per job
    rollouts: dict[str, Rollout | None] = field(default_factory=dict)  # as they were when the call began
    misreports: int = 0  # reports refused as the peer's doing (a version it was not leased)
    stepped_aside: list[str] = field(default_factory=list)  # hosts the peer leaves to others a while
    answered: list[rechecks.Answered] = field(default_factory=list)  # items finished, for re-checks
    known: list[tuple[int, int, int, Record]] = field(default_factory=list)  # (unit, job, known item, record)
    lease_ended: list[int] = field(default_factory=list)  # units whose plants go

    def __post_init__(self) -> None:
        self.throughput = self.throughput_before

    def pace(self, key: str, change: Callable[[HostPace], HostPace]) -> None:
        """Apply a pacing rule to a host. A key that is no website (items that are not http(s)
        URLs, a part of an items job) has nothing to pace."""
        if url_jobs.is_website(key):
            self.paces[key] = change(self.paces.get(key, HostPace()))


def report(db: Database, peer_id: str, report: Incoming, now: float) -> ReportResponse:
    with db.transaction() as conn:
        peers.touch(conn, peer_id, now)
        reported = load_reported(conn, peer_id, [report.unit_id])
        response = _take_report(db, conn, report, now, reported)
        write_reported(db, conn, reported, now)
        peers.saw_work(conn, peer_id, len(reported.finished), now)
    return response


def report_batch(db: Database, peer_id: str, reports: list[Incoming], now: float) -> list[tuple[int, bool, str, str]]:
    """The verdicts as plain tuples (unit_id, accepted, reason, code): cheaper to hand over
    than dataclasses, which pickle field by field."""
    verdicts: list[tuple[int, bool, str, str]] = []
    with db.transaction() as conn:
        peers.touch(conn, peer_id, now)
        reported = load_reported(conn, peer_id, [report.unit_id for report in reports])
        for report in reports:
            try:
                response = _take_report(db, conn, report, now, reported)
            except (StaleLease, NotFound, InvalidInput) as exc:
                verdicts.append((report.unit_id, False, str(exc), refusal_code(exc)))
            else:
                verdicts.append(
                    (report.unit_id, response.accepted, response.reason, "" if response.accepted else REFUSED)
                )
        write_reported(db, conn, reported, now)
        peers.saw_work(conn, peer_id, len(reported.finished), now)
    return verdicts


def load_reported(conn: Connection, peer_id: str, unit_ids: list[int]) -> Reported:
    """The rows the reports of these units touch: their units (if any), the units' open items
    and their hosts' paces, in a few queries for the whole call."""
    reported = Reported(peer_id, peers.throughput(conn, peer_id))
    ids = sorted({unit_id for unit_id in unit_ids if 0 <= unit_id <= schema.MAX_ID})
    for chunk in chunks(ids):
        for unit_id, job_id, key, first, last, leased_at, replica, network, version, *lease_row in conn.execute(
            "SELECT id, job_id, unit_key, first_item, last_item, leased_at, replica, network, version, state, token,"
            f" peer_id, expires_at, attempts, last_error FROM units WHERE id IN ({placeholders(chunk)})",
            chunk,
        ):
            reported.units[unit_id] = ReportedUnit(
                job_id, key, first, last, leased_at, leasing.unit_lease(lease_row), replica, network, version
            )
            # A unit done has no open items: what its range holds undone is another unit's
            # (a partial report left it out).
            if reported.units[unit_id].lease.state is not UnitState.DONE:
                reported.units[unit_id].items = {
                    url: (item_id, depth, bool(crawl))
                    for item_id, url, depth, crawl in conn.execute(
                        f"SELECT id, url, depth, crawl FROM items WHERE {schema.UNIT_ITEMS}", (key, job_id, first, last)
                    )
                }
    for unit_id, planted in known_answers.plants_of(conn, peer_id, list(reported.units)).items():
        reported.units[unit_id].planted = planted
    keys = sorted({unit.key for unit in reported.units.values() if url_jobs.is_website(unit.key)})
    for some_keys in chunks(keys):
        for key, *pace in conn.execute(
            "SELECT key, next_allowed_at, crawl_delay, backoff, delay_claim, claimed_by FROM hosts"
            f" WHERE key IN ({placeholders(some_keys)})",
            some_keys,
        ):
            reported.paces[key] = HostPace(*pace)
    reported.stored_paces = dict(reported.paces)
    return reported


def _take_report(db: Database, conn: Connection, report: Incoming, now: float, reported: Reported) -> ReportResponse:
    """Judge one report and collect what it changes in `reported`; raise before changing
    anything if it is stale or names no unit. Records that break the job's schema are the
    workload's failure (`leases.after_refused_report`), answered as not accepted. Only the
    links it found are written at once (new items). What it does to the unit is
    `leases.after_report`'s rule."""
    unit = reported.units.get(report.unit_id)
    if unit is None:
        raise NotFound(f"no unit {report.unit_id}")
    verdict = leases.judge_report(unit.lease, reported.peer_id, report.token)
    if verdict is Verdict.STALE:
        raise leasing.stale_lease(conn, report.unit_id, report.token, unit.job_id)
    if verdict is Verdict.DUPLICATE:
        return ReportResponse(accepted=True, reason="duplicate")
    if unit.version is not None and report.bundle_version != unit.version:
        db.replan = True  # the peer leaves the host to others a while
        reason = misreported(unit, report.unit_id, report.bundle_version, now, reported, db.settings.min_delay)
        return ReportResponse(accepted=False, reason=reason)
    name = jobs.job(db, conn, unit.job_id).workload
    counted = report.bundle_version is not None and report.exit_code != 3
    on_trial = counted and _on_trial(conn, name, report.bundle_version, reported)
    error = report.error[: url_jobs.MAX_TEXT] if report.error else None
    records: list[Record] = []
    streamed: list[Record] = []
    refused = None
    known: list[tuple[int, Record]] = []
    try:
        if report.items:
            streamed, known = streamed_records(db, conn, unit, report.items)
        if report.exit_code in (0, 1):
            checker = jobs.checker(db, conn, unit.job_id)
            records, more_known = known_answers.set_aside(checker.records(report.payload), unit.planted)
            known += more_known
            records = _not_streamed(conn, unit, records, {r.url for r in streamed})
            check_unit_items(records, unit.items, checker.model.key)
    except SchemaError as exc:
        refused = f"report refused: {exc}"[: url_jobs.MAX_TEXT]
        records, streamed, known = [], [], []
    reported.known += [(report.unit_id, unit.job_id, item_id, r) for item_id, r in known]
    reported.lease_ended.append(report.unit_id)
    done_here = len(records) + len(streamed) + report.streamed  # items this lease finished
    if refused is not None:
        after = leases.after_refused_report(unit.lease, refused, db.settings.max_attempts)
    else:
        after = leases.after_report(unit.lease, report.exit_code, done_here, error, on_trial, db.settings.max_attempts)
    if streamed:
        finish_records(db, conn, unit, streamed, reported, now)
    if records or (done_here and refused is None and report.exit_code in (0, 1)):
        _merge_results(db, conn, unit, records, reported, now)
    if after.give_up is not None:
        finish_with_error(unit, after.give_up, reported)
    lease = after.lease
    unit.lease = reported.leases[report.unit_id] = lease
    if done_here and refused is None:
        summary = UnitSummary(throttled=report.throttled, crawl_delay=report.crawl_delay)
        reported.pace(
            unit.key, lambda pace: host_pacing.after_unit(pace, now, summary, db.settings.min_delay, reported.peer_id)
        )
        if unit.leased_at is not None:
            reported.throughput = unit_sizing.observe(reported.throughput, done_here, now - unit.leased_at)
    else:
        # No item came back, so nothing was learned about the host.
        reported.pace(unit.key, lambda pace: host_pacing.after_abandoned(pace, now, db.settings.min_delay))
    if counted:
        assert report.bundle_version is not None
        reported.outcomes.append((name, report.bundle_version, refused is None and report.exit_code in (0, 1)))
    if report.log is not None and report.exit_code not in (0, 1):
        reported.logs.append((unit.job_id, report.unit_id, reported.peer_id, now, report.exit_code, error, report.log))
    if refused is not None:
        return ReportResponse(accepted=False, reason=refused)
    return ReportResponse(accepted=True)


def misreported(
    unit: ReportedUnit, unit_id: int, named: str | None, now: float, reported: Reported, min_delay: float
) -> str:
    """A report naming another bundle version (`named`) than its unit was leased with: refused
    (the reason returned), and the peer's doing, not a version's (issue: trust in results).
    Nothing of it is kept: its unit goes back without using an attempt, no version is charged,
    the host goes to other peers a while, and the peer's record keeps the misreport."""
    what = "no version" if named is None else f"version {named!r}"
    reason = f"report refused: it names {what}; unit {unit_id} was leased with {unit.version!r}"
    unit.lease = reported.leases[unit_id] = leases.released(unit.lease)
    reported.misreports += 1
    reported.stepped_aside.append(unit.key)
    reported.pace(unit.key, lambda pace: host_pacing.after_abandoned(pace, now, min_delay))
    return reason[: url_jobs.MAX_TEXT]


def _merge_results(
    db: Database,
    conn: Connection,
    unit: ReportedUnit,
    records: list[Record],
    reported: Reported,
    now: float,
) -> None:
    """Collect a (partial) result: the items it reports are finished with their records, the
    rest go back to waiting; a crawl's links become new items."""
    finish_records(db, conn, unit, records, reported, now)
    if unit.items:
        left = [item_id for item_id, _, _ in unit.items.values()]
        reported.left_out.append((unit.key, unit.job_id, min(left), max(left), unit.replica))
    unit.items.clear()


def finish_records(
    db: Database, conn: Connection, unit: ReportedUnit, records: list[Record], reported: Reported, now: float
) -> None:
    """Finish the unit's open items these checked records name (each at most once, open: see
    `check_unit_items`), with their records; a crawl's links become new items."""
    asks = rechecks.Asking.of(db, conn, unit.job_id, reported.peer_id, now)
    vantaged = jobs.checker(db, conn, unit.job_id).model.vantage
    for r in records:
        item_id, depth, crawl = unit.items.pop(r.url)
        counted_as = UNCOUNTED if r.counted_as is None else r.counted_as
        # Which network answered is the job's business only when it asked for vantage points.
        network = unit.network if vantaged else None
        reported.finished.append((counted_as, kept_records.pack(r.values, r.url), network, item_id))
        answered = rechecks.Answered(
            unit.job_id, item_id, r.url, r.values, counted_as, unit.network, r.links if crawl else None
        )
        if asks is not None:
            answered = asks.judge(answered)
            reported.answered.append(answered)
        # A page's links join its job now, unless its answer waits for a second look: then
        # the links its answers agree on do, once they settle (`rechecks`).
        if crawl and r.links and (asks is None or not asks.defers(answered)):
            jobs.add_links(db, conn, unit.job_id, item_id, r.links, depth, now)
    reported.closed[unit.job_id] = reported.closed.get(unit.job_id, 0) + len(records)


def streamed_records(
    db: Database, conn: Connection, unit: ReportedUnit, items: list[Any]
) -> tuple[list[Record], list[tuple[int, Record]]]:
    """The records a unit's workload streamed (process API version 2), checked against the
    job's model as a final report's are, without those of items finished already (streamed
    before, sent again): the first record of an item counts. Those of known answers planted
    in its lease come apart, beside their known item (`known_answers.set_aside`). Raise
    `SchemaError` for a record that breaks the model or names no item of the unit."""
    checker = jobs.checker(db, conn, unit.job_id)
    records, known = known_answers.set_aside(checker.records({"items": items}), unit.planted)
    fresh: dict[str, Record] = {}
    for r in records:
        if r.url in unit.items:
            fresh.setdefault(r.url, r)
    if len(fresh) < len(records):
        strays = [(i, r.url) for i, r in enumerate(records) if r.url not in unit.items]
        finished = _finished_of_unit(conn, unit, [url for _, url in strays])
        for i, url in strays:
            if url not in finished:
                raise SchemaError(f"payload.items[{i}].{checker.model.key} is not an item of this unit")
    return list(fresh.values()), known


def _not_streamed(conn: Connection, unit: ReportedUnit, records: list[Record], streamed: set[str]) -> list[Record]:
    """A final report's records without those of items its lease streamed (taken already, or
    in this report's `items`): the streamed record counts. The rest are checked as ever."""
    records = [r for r in records if r.url not in streamed]
    strays = sorted({r.url for r in records if r.url not in unit.items})
    if not strays:
        return records
    finished = _finished_of_unit(conn, unit, strays)
    return [r for r in records if r.url not in finished]


def _finished_of_unit(conn: Connection, unit: ReportedUnit, urls: list[str]) -> set[str]:
    """Which of `urls` are items of the unit's range already finished."""
    found: set[str] = set()
    for chunk in chunks(urls):
        found.update(
            url
            for (url,) in conn.execute(
                "SELECT url FROM items WHERE unit_key = ? AND job_id = ? AND id BETWEEN ? AND ? AND done = 1"
                f" AND url IN ({placeholders(chunk)})",
                (unit.key, unit.job_id, unit.first, unit.last, *chunk),
            )
        )
    return found


def finish_with_error(unit: ReportedUnit, message: str, reported: Reported) -> None:
    """The unit's open items are finished with an error (its work cannot be done)."""
    message = message[: url_jobs.MAX_TEXT]
    reported.failed.extend((message, item_id) for item_id, _, _ in unit.items.values())
    reported.closed[unit.job_id] = reported.closed.get(unit.job_id, 0) + len(unit.items)
    unit.items.clear()


def _on_trial(conn: Connection, name: str, version: str | None, reported: Reported) -> bool:
    """Was `version` the candidate of a rollout in progress (its unit on trial)?"""
    if name not in reported.rollouts:
        reported.rollouts[name] = bundles.load_rollout(conn, name)
    the_rollout = reported.rollouts[name]
    return (
        the_rollout is not None and the_rollout.state is RolloutState.ROLLING_OUT and the_rollout.candidate == version
    )


def write_reported(db: Database, conn: Connection, reported: Reported, now: float) -> None:
    """Write what the call's reports changed: items, units and host paces; then count the
    finished units for the versions that ran them, judge each rollout they touched (rolling
    a failing candidate back) once, close the finished items of each job and keep the
    peer's new throughput estimate."""
    answerer = peers.key_number(conn, reported.peer_id) if reported.finished else None
    conn.executemany(
        "UPDATE items SET result = ?, record = ?, network = ?, answerer = ?, done = 1 WHERE id = ?",
        [(count, record, network, answerer, item_id) for count, record, network, item_id in reported.finished],
    )
    conn.executemany(
        "UPDATE items SET result = 'error', failed = ?, done = 1 WHERE id = ? AND done = 0", reported.failed
    )
    if reported.logs:
        keep_logs(conn, reported.logs)
    conn.executemany(
        "INSERT INTO units (unit_key, job_id, first_item, last_item, replica, state) VALUES (?, ?, ?, ?, ?, 'queued')",
        reported.left_out,
    )
    conn.executemany(
        "UPDATE units SET state = ?, token = ?, peer_id = ?, expires_at = ?, attempts = ?, last_error = ? WHERE id = ?",
        [
            (u.state.value, u.token, u.peer_id, u.expires_at, u.attempts, u.last_error, unit_id)
            for unit_id, u in reported.leases.items()
        ],
    )
    conn.executemany(
        "INSERT INTO hosts (key, next_allowed_at, crawl_delay, backoff, delay_claim, claimed_by)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET next_allowed_at = excluded.next_allowed_at,"
        " crawl_delay = excluded.crawl_delay, backoff = excluded.backoff, delay_claim = excluded.delay_claim,"
        " claimed_by = excluded.claimed_by",
        [
            (key, pace.next_allowed_at, pace.crawl_delay, pace.backoff, pace.delay_claim, pace.claimed_by)
            for key, pace in reported.paces.items()
            if reported.stored_paces.get(key) != pace
        ],
    )
    counts: dict[tuple[str, str, bool], int] = {}
    for outcome in reported.outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    published: set[tuple[str, str]] = set()
    for (name, version, ok), count in counts.items():
        column = "units_ok" if ok else "units_failed"
        if conn.execute(
            f"UPDATE bundles SET {column} = {column} + ? WHERE name = ? AND version = ?", (count, name, version)
        ).rowcount:
            published.add((name, version))  # else never published here: nothing to learn from it
    for name in {name for name, _ in published}:
        before = bundles.load_rollout(conn, name)
        if before is None:
            continue
        after = before
        for of, version, ok in reported.outcomes:
            if of == name and (name, version) in published:
                after = rollout.counted(after, version, ok)
        if after == before:
            continue
        after = rollout.judged(after, bundles.tally(conn, name, after.stable))
        bundles.save_rollout(conn, after)
        if after.state is RolloutState.ROLLED_BACK:
            log.warning("%s", after.message)
    if reported.answered:
        rechecks.after_answers(db, conn, reported.peer_id, reported.answered, reported.closed, now)
    for job_id, count in reported.closed.items():
        jobs.items_closed(conn, job_id, count, now)
    judged = _known_answers(db, conn, reported)
    if reported.misreports or judged.right or judged.wrong:
        was = peers.record_of(conn, reported.peer_id)
        record = was
        for _ in range(reported.misreports):
            record = reputation.after_misreport(record)
        for right in [True] * judged.right + [False] * judged.wrong:
            record = reputation.after_known_answer(record, right)
        peers.save_record(conn, reported.peer_id, record)
        if record.quarantined is not None and was.quarantined is None:
            redone = jobs.redo_answers_of(conn, reported.peer_id, now)
            db.replan = True  # it keeps no website
            log.warning(
                "peer %s… quarantined: %s; its %d answers in running jobs are done again by others",
                reported.peer_id[:12],
                record.quarantined,
                redone,
            )
    if reported.misreports:
        holding.step_aside(conn, reported.stepped_aside, reported.peer_id, now)
        log.warning(
            "peer %s… named a version it was not leased in %d reports", reported.peer_id[:12], reported.misreports
        )
    if reported.throughput != reported.throughput_before:
        conn.execute("UPDATE peers SET throughput = ? WHERE id = ?", (reported.throughput, reported.peer_id))


def _known_answers(db: Database, conn: Connection, reported: Reported) -> known_answers.Judged:
    """Judge the answers to known answers planted in the call's leases; the plants answered,
    and those of units whose lease ended (a final report), go."""
    right = wrong = 0
    by_job: dict[int, list[tuple[int, Record]]] = {}
    for _, job_id, item_id, r in reported.known:
        by_job.setdefault(job_id, []).append((item_id, r))
    for job_id, answers in by_job.items():
        judged = known_answers.judge(db, conn, job_id, reported.peer_id, answers)
        right, wrong = right + judged.right, wrong + judged.wrong
    for unit_id, _, _, r in reported.known:
        known_answers.judged(conn, unit_id, [r.url])
    for unit_id in reported.lease_ended:
        known_answers.forget(conn, unit_id)
    return known_answers.Judged(right, wrong)


def keep_logs(conn: Connection, logs: list[tuple[Any, ...]]) -> None:
    """Keep failed units' stderr tails, the latest MAX_LOGS_PER_JOB of each job."""
    conn.executemany(
        "INSERT INTO unit_logs (job_id, unit_id, peer_id, at, exit_code, error, log) VALUES (?, ?, ?, ?, ?, ?, ?)",
        logs,
    )
    for job_id in {entry[0] for entry in logs}:
        conn.execute(
            "DELETE FROM unit_logs WHERE job_id = ? AND id <= (SELECT id FROM unit_logs WHERE job_id = ?"
            " ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (job_id, job_id, MAX_LOGS_PER_JOB),
        )


def refusal_code(exc: StoreError) -> str:
    """The error code a refused report of a batch gets: the one its own request would get."""
    if isinstance(exc, StaleLease):
        return "stale_lease"
    if isinstance(exc, NotFound):
        return "not_found"
    return "invalid_input"
