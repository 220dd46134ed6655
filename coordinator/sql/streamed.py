"""Items a running unit streamed (process API version 2), as the SQLite store takes them.

A peer hands over, in batches, the records its workload streamed while the unit still runs,
under the unit's lease (its fencing token: a stale one is refused). They are checked against
the job's model exactly as a final report's records are (`reports.streamed_records`) and
finish their items at once, as a final report would (`reports.finish_records`): stored,
counted in job status and `job_progress` (the job ends when none is open), a crawl's links
added within the owner's URL limits. The unit stays leased; its final report finishes the
rest, and an item already finished is taken once (the first record counts). Records that
break the model refuse the report whole, as a final report's would be
(`leases.after_refused_report`): nothing of it kept, the unit queued again using an attempt,
the version charged, the peer told why; what earlier reports of the lease finished stays
done.
"""

from __future__ import annotations

from typing import Any

from coordinator import host_pacing, leases, url_jobs
from coordinator.leases import Verdict
from coordinator.sql import jobs, leasing, peers, reports
from coordinator.sql.database import Database
from coordinator.store import NotFound
from workloads.records import SchemaError


def report_items(
    db: Database,
    peer_id: str,
    unit_id: int,
    token: int,
    items: list[Any],
    bundle_version: str | None,
    now: float,
) -> tuple[bool, int, str]:
    """(accepted, items taken now, reason): plain values, cheap to hand over."""
    with db.transaction() as conn:
        peers.touch(conn, peer_id, now)
        reported = reports.load_reported(conn, peer_id, [unit_id])
        unit = reported.units.get(unit_id)
        if unit is None:
            raise NotFound(f"no unit {unit_id}")
        verdict = leases.judge_report(unit.lease, peer_id, token)
        if verdict is Verdict.STALE:
            raise leasing.stale_lease(conn, unit_id, token, unit.job_id)
        if verdict is Verdict.DUPLICATE:
            return True, 0, "duplicate"  # the lease's final report came first: it holds them
        if unit.version is not None and bundle_version != unit.version:
            db.replan = True  # the peer leaves the host to others a while
            reason = reports.misreported(unit, unit_id, bundle_version, now, reported, db.settings.min_delay)
            reports.write_reported(db, conn, reported, now)
            return False, 0, reason
        try:
            records, known = reports.streamed_records(db, conn, unit, items)
        except SchemaError as exc:
            reason = f"report refused: {exc}"[: url_jobs.MAX_TEXT]
            after = leases.after_refused_report(unit.lease, reason, db.settings.max_attempts)
            if after.give_up is not None:
                reports.finish_with_error(unit, after.give_up, reported)
            reported.leases[unit_id] = after.lease
            reported.pace(unit.key, lambda pace: host_pacing.after_abandoned(pace, now, db.settings.min_delay))
            if bundle_version is not None:
                reported.outcomes.append((jobs.job(db, conn, unit.job_id).workload, bundle_version, False))
            reports.write_reported(db, conn, reported, now)
            return False, 0, reason
        reports.finish_records(db, conn, unit, records, reported, now)
        reported.known += [(unit_id, unit.job_id, item_id, r) for item_id, r in known]
        reports.write_reported(db, conn, reported, now)
        peers.saw_work(conn, peer_id, len(records), now)
    return True, len(records), ""
