"""What one owner may ask of the volunteers: the rules, pure, then through the API and the
store, with the audit log of who changed what."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from coordinator import owner_limits
from coordinator.edge import STORE
from coordinator.owner_limits import Limits
from overlay.identity import Identity
from tests.coordinator.conftest import START, Clock, Peer, get, item, post, submit

OWNER = Identity.generate()


def test_a_refusal_names_the_limit_and_when_it_resets() -> None:
    limits = Limits(jobs_at_once=2, urls_per_job=10, urls_per_day=100)
    assert owner_limits.submit_refusal(limits, 1, 10, 90, START) is None
    at_once = owner_limits.submit_refusal(limits, 2, 1, 0, START)
    assert at_once is not None and "2 jobs at once" in at_once
    too_big = owner_limits.submit_refusal(limits, 0, 11, 0, START)
    assert too_big is not None and "10 URLs per job" in too_big
    today = owner_limits.submit_refusal(limits, 0, 10, 91, START)
    assert today is not None and "100 URLs per day" in today and "resets at 2023-11-15 00:00 UTC" in today


@given(per_job=st.integers(0, 1000), per_day=st.integers(0, 1000), job=st.integers(0, 1000), today=st.integers(0, 1000))
def test_a_job_never_adds_past_either_limit(per_job: int, per_day: int, job: int, today: int) -> None:
    room = owner_limits.links_allowed(Limits(urls_per_job=per_job, urls_per_day=per_day), job, today)
    assert room >= 0
    assert room == 0 or (job + room <= per_job and today + room <= per_day)


def test_limits_are_whole_numbers() -> None:
    with pytest.raises(ValueError):
        Limits(jobs_at_once=-1)


@pytest.fixture
async def owner(client: TestClient) -> TestClient:
    assert client.app is not None
    await client.app[STORE].grant("alice", OWNER.public_hex, "owner", "operator", START)
    return client


async def test_jobs_at_once_and_urls_per_job_are_held_at_submit(owner: TestClient) -> None:
    store = owner.app[STORE] if owner.app is not None else None
    assert store is not None
    await store.set_limits(OWNER.public_hex, Limits(jobs_at_once=1, urls_per_job=2), "operator", START)
    status, body = await post(
        owner,
        "/v1/jobs",
        {"workload": "linkcheck", "input": {"urls": ["http://a.test/1", "http://a.test/2", "http://a.test/3"]}},
        OWNER,
    )
    assert (status, body["error"]["code"]) == (429, "limit_reached")
    assert body["error"]["message"] == "limit reached: 2 URLs per job, this job has 3 to start with"
    job_id = await submit(owner, ["http://a.test/1"], key=OWNER)
    status, body = await post(
        owner, "/v1/jobs", {"workload": "linkcheck", "input": {"urls": ["http://b.test/"]}}, OWNER
    )
    assert (status, body["error"]["code"]) == (429, "limit_reached")
    assert "1 jobs at once" in body["error"]["message"]
    assert (await post(owner, f"/v1/jobs/{job_id}/cancel", {}, OWNER))[0] == 200
    await submit(owner, ["http://b.test/"], key=OWNER)  # the cancelled job no longer counts


async def test_a_crawl_stops_adding_links_at_the_limit_and_says_so(owner: TestClient, peer: Peer, clock: Clock) -> None:
    store = owner.app[STORE] if owner.app is not None else None
    assert store is not None
    await store.set_limits(OWNER.public_hex, Limits(urls_per_job=4), "operator", START)
    job_id = await submit(owner, ["http://a.test/"], depth=2, key=OWNER)
    (lease,) = await peer.lease()
    links = [f"http://a.test/{n}" for n in range(10)]
    assert (await peer.report(lease, 0, {"items": [item("http://a.test/", links)]}))[0] == 200
    status, job = await get(owner, f"/v1/jobs/{job_id}", OWNER)
    assert status == 200 and job["items_total"] == 4
    assert job["limited"] == "stopped adding links at the limit of 4 URLs per job"


async def test_urls_per_day_count_every_job_of_the_owner(owner: TestClient) -> None:
    store = owner.app[STORE] if owner.app is not None else None
    assert store is not None
    await store.set_limits(OWNER.public_hex, Limits(urls_per_day=3), "operator", START)
    await submit(owner, ["http://a.test/1", "http://a.test/2"], key=OWNER)
    status, body = await post(
        owner, "/v1/jobs", {"workload": "linkcheck", "input": {"urls": ["http://b.test/1", "http://b.test/2"]}}, OWNER
    )
    assert (status, body["error"]["code"]) == (429, "limit_reached")
    assert "3 URLs per day (2 used today)" in body["error"]["message"]


async def test_every_change_is_in_the_audit_log(owner: TestClient) -> None:
    store = owner.app[STORE] if owner.app is not None else None
    assert store is not None
    job_id = await submit(owner, ["http://a.test/"], key=OWNER)
    await post(owner, f"/v1/jobs/{job_id}/cancel", {}, OWNER)
    await store.set_limits(OWNER.public_hex, Limits(jobs_at_once=3), "operator", START)
    await store.revoke(OWNER.public_hex, "operator", START)
    log = [(e.actor, e.action, e.subject) for e in await store.audit_log(50)]
    assert ("operator", "grant", OWNER.public_hex) in log
    assert log[-4:] == [
        (OWNER.public_hex, "submit", f"job {job_id}"),
        (OWNER.public_hex, "cancel", f"job {job_id}"),
        ("operator", "limits", OWNER.public_hex),
        ("operator", "revoke", OWNER.public_hex),
    ]
    status, body = await get(owner, f"/v1/jobs/{job_id}", OWNER)
    assert (status, body["error"]["code"]) == (403, "not_admitted")  # revoked: its jobs are closed to it
