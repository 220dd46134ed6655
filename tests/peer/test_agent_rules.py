"""The pure rules inside the agent's parts: when a coordinator is avoided, when an idle peer
looks elsewhere, when an unrenewed unit stops, what bundle traffic costs, and how units are
counted for the status. Times are given, never waited for."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from overlay import wire
from overlay.identity import Identity
from peer.budget import Budget
from peer.budget_keeper import BUNDLE_FLOOR, bundle_share, newly_moved, on_the_wire, rates
from peer.controls import bundle_upload_limit
from peer.coordinator_choice import AVOID_SECONDS, CoordinatorChoice, avoided
from peer.leasing import IDLE_RECHECK, idle_too_long
from peer.runner import WorkloadOutcome
from peer.status import Checked, Totals
from peer.tally import WorkTally, counted
from peer.unit_work import STOP_UNRENEWED, log_tail, unrenewed_too_long
from peer.wire_cost import acks_on_wire, on_wire
from peer.work_choice import WorkChoice
from workloads.process_api import ExitCode


class Monotonic:
    """A clock whose monotonic reading the test sets (the other readings are not used here)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def monotonic(self) -> float:
        return self.at

    def time(self) -> float:
        raise AssertionError("not read by these rules")

    def now(self) -> datetime:
        raise AssertionError("not read by these rules")


def test_a_failed_coordinator_ranks_last_for_a_while() -> None:
    assert avoided({"http://a.test": 120.0, "http://b.test": 10.0}, now=50.0) == {"http://a.test"}
    assert avoided({"http://a.test": 120.0}, now=120.0) == set()


def a_choice(tmp_path: Path, clock: Monotonic) -> CoordinatorChoice:
    def registration() -> wire.RegisterRequest:
        raise AssertionError("not registering here")

    return CoordinatorChoice(WorkChoice(network="lab"), Identity.load_or_create(tmp_path / "key"), registration, clock)


def test_a_coordinator_that_stopped_answering_is_avoided_until_its_time_is_up(tmp_path: Path) -> None:
    clock = Monotonic(1000.0)
    choice = a_choice(tmp_path, clock)
    choice.avoid("http://a.test")
    clock.at += AVOID_SECONDS - 1
    assert choice.avoided_now() == {"http://a.test"}
    clock.at += 1
    assert choice.avoided_now() == set()


def test_choosing_someone_else_is_taken_once(tmp_path: Path) -> None:
    choice = a_choice(tmp_path, Monotonic(0.0))
    assert not choice.take_change()
    choice.change(WorkChoice(network="other", prefer="http://c.test"))
    assert choice.wanted == WorkChoice(network="other", prefer="http://c.test")
    assert choice.take_change() and not choice.take_change()


def test_an_idle_peer_looks_elsewhere_after_idle_recheck() -> None:
    assert not idle_too_long(1000.0, 1000.0)
    assert not idle_too_long(1000.0, 1000.0 + IDLE_RECHECK - 1)
    assert idle_too_long(1000.0, 1000.0 + IDLE_RECHECK)


@given(since=st.floats(0, 1e4, allow_nan=False), interval=st.floats(0.1, 1e3, allow_nan=False))
def test_an_unrenewed_unit_stops_exactly_when_the_rule_says(since: float, interval: float) -> None:
    assert unrenewed_too_long(since, interval) == (since >= STOP_UNRENEWED * interval)


def test_a_failed_units_log_is_the_end_of_its_stderr_within_the_wires_cap() -> None:
    said = "".join(f"line {i}\n" for i in range(2000))
    assert log_tail(said) == said[-wire.MAX_LOG :]
    assert len(log_tail(said) or "") == wire.MAX_LOG
    assert log_tail("Traceback\n") == "Traceback\n"
    assert log_tail(" \n") is None  # a workload that said nothing sends nothing


def test_a_unit_stops_once_its_lease_went_unrenewed_for_one_and_a_half_intervals() -> None:
    interval = 20.0
    assert not unrenewed_too_long(0.0, interval)
    assert not unrenewed_too_long(interval, interval)  # one missed renewal: retried sooner
    assert unrenewed_too_long(STOP_UNRENEWED * interval, interval)


def test_bundle_traffic_is_charged_once_per_byte() -> None:
    first = {b"a": (100, 10), b"b": (5, 0)}
    assert newly_moved({}, first) == (105, 10)
    assert newly_moved(first, first) == (0, 0)
    assert newly_moved(first, {b"a": (150, 30), b"b": (5, 0), b"c": (1, 1)}) == (51, 21)
    assert newly_moved({b"a": (100, 10)}, {b"a": (40, 2)}) == (0, 0)  # added again: counts from there


def test_bundle_bytes_are_charged_as_the_interface_counts_them() -> None:
    down, up = on_the_wire(1_000_000, 0)
    assert down == on_wire(1_000_000) and up == acks_on_wire(1_000_000)  # a download's ACKs go up
    assert on_the_wire(0, 0) == (0, 0)


def test_bundle_traffic_gets_what_web_traffic_leaves_but_never_less_than_the_floor() -> None:
    assert bundle_share(None, 5000.0) is None
    assert bundle_share(100_000, 0.0) == 100_000
    assert bundle_share(100_000, 30_000.0) == 70_000
    assert bundle_share(100_000, 100_000.0) == 100_000 * BUNDLE_FLOOR
    assert bundle_share(100_000, 250_000.0) == 100_000 * BUNDLE_FLOOR  # web over its share: deposits
    assert bundle_share(2, 2.0) == 1  # libtorrent's 0 would mean unlimited


def test_rates_never_go_negative() -> None:
    assert rates((3000, 500), (1000, 500), 2.0) == (1000.0, 0.0)
    assert rates((900, 400), (1000, 500), 1.0) == (0.0, 0.0)  # a refund of a reservation


def test_bundles_seed_at_the_lower_of_the_two_limits() -> None:
    assert bundle_upload_limit(None, Budget()) is None
    assert bundle_upload_limit(1_000_000, Budget()) == 1_000_000
    assert bundle_upload_limit(1_000_000, Budget(max_up=200_000)) == 200_000
    assert bundle_upload_limit(None, Budget(max_up=200_000)) == 200_000


def test_units_are_counted_for_the_status() -> None:
    checked = [Checked("http://a.test/", "ok", 200, 5.0), Checked("http://a.test/x", "broken", 404, 5.0)]
    assert counted(Totals(), ExitCode.OK, checked) == Totals(1, 0, 2, 1, 1)
    assert counted(Totals(1, 0, 2, 1, 1), ExitCode.FAILED, []) == Totals(1, 1, 2, 1, 1)

    tally = WorkTally()
    lease = wire.Lease(
        unit_id=7,
        token=1,
        job_id=3,
        workload="linkcheck",
        payload={"items": [{}, {}]},
        expires_at=0.0,
        host="http://a.test:80",
    )
    tally.started(lease, at=100.0)
    assert [(u.unit_id, u.items, u.started_at) for u in tally.units.values()] == [(7, 2, 100.0)]
    payload = {"items": [{"url": "http://a.test/", "result": "ok", "status": 200}, {"url": 3}]}
    tally.count(WorkloadOutcome(ExitCode.PARTIAL, payload, None, ""), at=160.0)
    tally.ended(7)
    assert tally.units == {}
    assert tally.totals == Totals(units_done=1, items_reported=1, items_ok=1)
    assert list(tally.recent) == [Checked("http://a.test/", "ok", 200, 160.0)]
    tally.count(WorkloadOutcome(ExitCode.FAILED, payload, "timeout", ""), at=170.0)
    assert tally.totals.units_failed == 1 and len(tally.recent) == 1  # a failed unit's items are not shown
