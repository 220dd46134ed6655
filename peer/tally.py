"""What the peer is doing and has done, for its status (peer.status): the units running, the
totals since it started, and the last URLs checked. Kept in memory only: a restarted peer
starts counting again.
"""

from __future__ import annotations

import collections
from dataclasses import replace

from overlay import wire
from peer.runner import WorkloadOutcome
from peer.status import RECENT_KEPT, Checked, Totals, UnitView, checked_items
from workloads.process_api import ExitCode


def counted(totals: Totals, exit_code: ExitCode, checked: list[Checked]) -> Totals:
    """`totals` with one more unit that ended with `exit_code` and reported `checked`."""
    if exit_code not in (ExitCode.OK, ExitCode.PARTIAL):
        return replace(totals, units_failed=totals.units_failed + 1)
    return replace(
        totals,
        units_done=totals.units_done + 1,
        items_reported=totals.items_reported + len(checked),
        items_ok=totals.items_ok + sum(1 for item in checked if item.result == "ok"),
        items_broken=totals.items_broken + sum(1 for item in checked if item.result == "broken"),
    )


class WorkTally:
    def __init__(self) -> None:
        self.units: dict[int, UnitView] = {}  # the running units, by unit id
        self.totals = Totals()
        self.recent: collections.deque[Checked] = collections.deque(maxlen=RECENT_KEPT)

    def started(self, lease: wire.Lease, at: float) -> None:
        """A unit began at `at` (Unix seconds)."""
        items = lease.payload.get("items")
        self.units[lease.unit_id] = UnitView(
            lease.unit_id, lease.job_id, lease.host, len(items) if isinstance(items, list) else 0, at
        )

    def progressed(self, unit_id: int, done: int) -> None:
        """A running unit's workload says `done` of its items are done (capped at its items)."""
        view = self.units.get(unit_id)
        if view is not None:
            self.units[unit_id] = replace(view, done=min(done, view.items))

    def streamed(self, unit_id: int, record: dict, at: float) -> None:
        """A running unit's workload streamed one item's record (process API version 2): it is
        counted now, and the unit's progress with it."""
        checked = checked_items({"items": [record]}, at)
        self.recent.extend(checked)
        self.totals = replace(
            self.totals,
            items_reported=self.totals.items_reported + len(checked),
            items_ok=self.totals.items_ok + sum(1 for item in checked if item.result == "ok"),
            items_broken=self.totals.items_broken + sum(1 for item in checked if item.result == "broken"),
        )
        view = self.units.get(unit_id)
        if view is not None:
            self.units[unit_id] = replace(view, done=min((view.done or 0) + 1, view.items))

    def ended(self, unit_id: int) -> None:
        self.units.pop(unit_id, None)

    def count(self, outcome: WorkloadOutcome, at: float) -> None:
        """Count a unit's outcome; the URLs it checked become the recent ones, checked at `at`."""
        ok = outcome.exit_code in (ExitCode.OK, ExitCode.PARTIAL)
        checked = checked_items(outcome.payload, at) if ok else []
        self.recent.extend(checked)
        self.totals = counted(self.totals, outcome.exit_code, checked)
