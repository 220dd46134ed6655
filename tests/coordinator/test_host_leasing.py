"""Which unit a host gives: reclaiming expired and straggling leases, forming new units. Pure."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import host_leasing, host_pacing, leases, unit_sizing, url_jobs
from coordinator.host_leasing import OpenUnit, TakenBack, WaitingItem
from coordinator.host_pacing import HostPace
from coordinator.leases import UnitLease, UnitState

LEASE = 60.0
INTERVAL = host_leasing.renew_interval(LEASE)
QUEUED = UnitLease(UnitState.QUEUED)


def leased(unit_id: int, at: float, renewed: float | None = None, expires: float | None = None) -> OpenUnit:
    lease = leases.grant(QUEUED, "holder", at, LEASE, 5)
    if expires is not None:
        lease = lease._replace(expires_at=expires)
    return OpenUnit(unit_id, 1, lease, at, at if renewed is None else renewed)


def never(unit: OpenUnit) -> TakenBack | None:
    raise AssertionError("a straggler check was not needed")


def test_a_live_lease_holds_its_host() -> None:
    live = leased(1, at=100.0)
    assert host_leasing.reclaim("a.test", HostPace(), [live], 110.0, 1.0, lambda unit: None) is None


def test_an_expired_lease_is_grantable_and_paces_the_host_as_abandoned() -> None:
    expired = leased(1, at=100.0)
    reclaimed = host_leasing.reclaim("a.test", HostPace(), [expired], 100.0 + LEASE + 10, 1.0, never)
    assert reclaimed is not None
    assert reclaimed.units == [expired]
    assert reclaimed.pace == host_pacing.after_abandoned(HostPace(), 100.0 + LEASE, 1.0)
    assert reclaimed.may_lease


def test_a_host_still_pausing_may_not_lease_but_keeps_its_new_pace() -> None:
    expired = leased(1, at=100.0)
    now = 100.0 + LEASE + 0.5  # the abandoned lease's pause (1 s) is not over
    reclaimed = host_leasing.reclaim("a.test", HostPace(), [expired], now, 1.0, never)
    assert reclaimed is not None and not reclaimed.may_lease
    assert reclaimed.pace.next_allowed_at > now


def test_a_straggler_taken_back_is_granted_like_an_expired_lease() -> None:
    live = leased(1, at=100.0)
    now = 150.0
    reclaimed = host_leasing.reclaim("a.test", HostPace(), [live], now, 0.0, lambda unit: TakenBack(120.0, 10.0))
    assert reclaimed is not None and reclaimed.may_lease
    (unit,) = reclaimed.units
    assert unit.lease.expires_at == now
    assert leases.is_eligible(unit.lease, now)
    assert reclaimed.pace == host_pacing.after_abandoned(HostPace(), 120.0, 0.0)


def test_items_that_reach_no_website_are_never_paced() -> None:
    expired = leased(1, at=100.0)
    paused = HostPace(next_allowed_at=10_000.0)
    reclaimed = host_leasing.reclaim(url_jobs.NOT_HTTP_KEY, paused, [expired], 200.0, 1.0, never)
    assert reclaimed is not None and reclaimed.may_lease and reclaimed.pace == paused


def test_a_holder_that_renews_is_not_silent() -> None:
    unit = leased(1, at=0.0, renewed=100.0)
    assert not host_leasing.silent(unit, 100.0 + unit_sizing.MISSED_RENEWALS * INTERVAL, LEASE)
    assert host_leasing.silent(unit, 100.0 + unit_sizing.MISSED_RENEWALS * INTERVAL + 1, LEASE)
    old = OpenUnit(2, 1, unit.lease, None, None)  # leased before schema 3: it just expires
    assert not host_leasing.silent(old, 10_000.0, LEASE)
    assert host_leasing.taken_back(old, 10_000.0, LEASE, 5, None, False) is None


def test_a_silent_holder_near_the_end_of_its_job_is_taken_back() -> None:
    unit = leased(1, at=0.0, renewed=10.0)
    now = 10.0 + unit_sizing.MIN_STRAGGLER_SECONDS * 3
    back = host_leasing.taken_back(unit, now, LEASE, open_items=1, throughput=10.0, work_waiting=False)
    assert back == TakenBack(10.0 + unit_sizing.MISSED_RENEWALS * INTERVAL, unit_sizing.expected_seconds(1, 10.0))
    # While other work waits, its lease's own expiry is soon enough.
    assert host_leasing.taken_back(unit, now, LEASE, 1, 10.0, work_waiting=True) is None


def test_a_new_unit_holds_the_oldest_jobs_items_up_to_its_size() -> None:
    waiting = [
        WaitingItem(3, 10, "http://a.test/1", True),
        WaitingItem(3, 12, "http://a.test/2", False),
        WaitingItem(3, 15, "http://a.test/3", True),
        WaitingItem(4, 11, "http://a.test/x", True),
    ]
    formed = host_leasing.form_unit(waiting, lambda job_id: 2)
    assert formed == (3, 10, 12, [("http://a.test/1", True), ("http://a.test/2", False)], 0)
    assert host_leasing.form_unit([], lambda job_id: 2) is None


@settings(max_examples=80, deadline=None)
@given(
    jobs=st.lists(st.integers(1, 4), min_size=1, max_size=30).map(sorted),
    size=st.integers(1, 10),
)
def test_a_formed_unit_is_one_jobs_first_items_in_order(jobs: list[int], size: int) -> None:
    waiting = [WaitingItem(job, i, f"http://a.test/{i}", i % 2 == 0) for i, job in enumerate(jobs)]
    formed = host_leasing.form_unit(waiting, lambda job_id: size)
    assert formed is not None
    oldest = [item for item in waiting if item.job_id == jobs[0]]
    expected = oldest[:size]
    assert formed.job_id == jobs[0]
    assert formed.items == [(item.url, item.crawl) for item in expected]
    assert (formed.first_item, formed.last_item) == (expected[0].item_id, expected[-1].item_id)
