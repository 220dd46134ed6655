"""A unit's lease over loopback HTTP, as the coordinator keeps it: expiry and fencing tokens,
duplicates, renewals and releases, peers unable to run a unit, partial reports and the exit
codes' attempts."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from coordinator.store import PEER_QUIET_SECONDS
from tests.coordinator.conftest import (
    LEASE_SECONDS,
    REST,
    START,
    Clock,
    Peer,
    get,
    item,
    results,
    submit,
    urls_of,
)


async def test_lease_expiry_gives_a_new_token_and_fences_the_old_holder(
    client: TestClient, peer: Peer, clock: Clock
) -> None:
    job_id = await submit(client, ["http://a.test/"])
    (first,) = await peer.lease()
    other = Peer(client, clock, "bob")
    await other.register()
    assert await other.lease() == []

    clock.advance(LEASE_SECONDS)
    assert await other.lease() == []  # expired, and the host rests from then on
    clock.advance(REST)
    (second,) = await other.lease()
    assert (second["unit_id"], second["token"]) == (first["unit_id"], first["token"] + 1)

    late = {"items": [item("http://a.test/", ["http://a.test/late"])]}
    status, body = await peer.report(first, 0, late)
    assert status == 409
    assert body["error"]["code"] == "stale_lease"

    fresh = {"items": [item("http://a.test/", result="broken")]}
    assert await other.report(second, 0, fresh) == (200, {"accepted": True, "reason": ""})
    # The old holder retries after the current holder finished: still stale, nothing changes.
    assert (await peer.report(first, 0, late))[0] == 409
    by_url = await results(client, job_id)
    assert list(by_url) == ["http://a.test/"]
    assert by_url["http://a.test/"]["result"] == "broken"


async def test_expired_lease_nobody_took_is_still_accepted(client: TestClient, peer: Peer, clock: Clock) -> None:
    job_id = await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    clock.advance(LEASE_SECONDS * 10)
    assert await peer.report(lease, 0, {"items": [item("http://a.test/")]}) == (200, {"accepted": True, "reason": ""})
    assert (await get(client, f"/v1/jobs/{job_id}"))[1]["state"] == "done"


async def test_duplicate_report_is_idempotent(client: TestClient, peer: Peer) -> None:
    job_id = await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    payload = {"items": [item("http://a.test/", ["http://a.test/z"])]}
    assert await peer.report(lease, 0, payload) == (200, {"accepted": True, "reason": ""})
    before = await results(client, job_id)
    changed = {"items": [item("http://a.test/", ["http://a.test/other"], result="broken")]}
    assert await peer.report(lease, 0, changed) == (200, {"accepted": True, "reason": "duplicate"})
    assert await results(client, job_id) == before
    assert list(before) == ["http://a.test/", "http://a.test/z"]


async def test_renew_and_release(client: TestClient, peer: Peer, clock: Clock) -> None:
    await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    ref = {"unit_id": lease["unit_id"], "token": lease["token"]}
    clock.advance(50)
    assert await peer.post("/v1/leases/renew", ref) == (200, {"expires_at": START + 50 + LEASE_SECONDS})
    # Past the first expiry, within the renewed one, and renewed lately (not a straggler).
    clock.advance(20)
    other = Peer(client, clock, "bob")
    await other.register()
    assert await other.lease() == []

    stale = {"unit_id": lease["unit_id"], "token": lease["token"] + 1}
    assert (await peer.post("/v1/leases/renew", stale))[0] == 409
    assert (await other.post("/v1/leases/release", ref))[0] == 409  # right token, wrong peer
    assert await peer.post("/v1/leases/release", ref) == (200, {})
    assert (await peer.post("/v1/leases/release", ref))[0] == 409

    # Alice, who gave the unit back, falls quiet: bob gets her host, rested.
    clock.advance(PEER_QUIET_SECONDS + REST)
    (again,) = await other.lease()
    assert (again["unit_id"], again["token"]) == (lease["unit_id"], lease["token"] + 1)
    status, body = await peer.post("/v1/leases/renew", {"unit_id": 999, "token": 1})
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_a_peer_that_cannot_work_on_a_unit_hands_its_host_on(
    client: TestClient, peer: Peer, clock: Clock
) -> None:
    # Its bundle would not download here, say: that is the peer's trouble, not the unit's or the
    # version's. It used to be reported as a failure: an attempt used, the version charged, and
    # the same peer kept the host through every attempt.
    other = Peer(client, clock, "bob")
    await other.register()
    job_id = await submit(client, ["http://a.test/"])
    holder, bystander = peer, other
    leases = await holder.lease()
    if not leases:  # the plan gave the host to bob
        holder, bystander = other, peer
        leases = await holder.lease()
    (lease,) = leases
    unable = {"unit_id": lease["unit_id"], "token": lease["token"], "unable": "bundle fetch stalled"}
    assert await holder.post("/v1/leases/release", unable) == (200, {})
    clock.advance(REST + 1)
    assert await holder.lease() == []  # it stepped aside: not its host for a while
    (again,) = await bystander.lease()
    assert (again["unit_id"], again["token"]) == (lease["unit_id"], lease["token"] + 1)
    assert await bystander.report(again, 0, {"items": [item("http://a.test/")]}) == (
        200,
        {"accepted": True, "reason": ""},
    )
    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert (status, job["state"], job["counts"]) == (200, "done", {"ok": 1})


async def test_a_lone_peer_that_stepped_aside_tries_again_at_the_next_plan(
    client: TestClient, peer: Peer, clock: Clock
) -> None:
    # Nobody else can take the host: it stays with the peer (paused a moment, say), which gets
    # its unit again once the host is planned again, not two minutes later.
    job_id = await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    unable = {"unit_id": lease["unit_id"], "token": lease["token"], "unable": "paused by the volunteer"}
    assert await peer.post("/v1/leases/release", unable) == (200, {})
    clock.advance(REST + 1)
    (again,) = await peer.lease()
    assert (again["unit_id"], again["token"]) == (lease["unit_id"], lease["token"] + 1)
    assert await peer.report(again, 0, {"items": [item("http://a.test/")]}) == (200, {"accepted": True, "reason": ""})
    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert (status, job["state"], job["counts"]) == (200, "done", {"ok": 1})


async def test_a_unit_no_peer_can_run_uses_its_attempts_and_ends(client: TestClient, peer: Peer, clock: Clock) -> None:
    # Both peers of the network give it back as unable (its bundle downloads nowhere, say):
    # the trouble is the unit's, not theirs. Each round uses an attempt, and the job ends with
    # the reason, where the unit used to go round between them for ever.
    other = Peer(client, clock, "bob")
    await other.register()
    job_id = await submit(client, ["http://a.test/"])  # the fixture allows 3 attempts
    releases = 0
    for _ in range(20):
        for holder in (peer, other):
            for lease in await holder.lease():
                unable = {"unit_id": lease["unit_id"], "token": lease["token"], "unable": "bundle fetch stalled"}
                assert await holder.post("/v1/leases/release", unable) == (200, {})
                releases += 1
        clock.advance(REST + 1)
        if (await get(client, f"/v1/jobs/{job_id}"))[1]["state"] == "done":
            break
    by_url = await results(client, job_id)
    assert by_url["http://a.test/"]["error"] == "gave up after 3 attempts: no peer could run it: bundle fetch stalled"
    assert releases == 4  # the first costs nothing (bob may run it); then every one does


async def test_partial_report_requeues_the_rest(client: TestClient, peer: Peer, clock: Clock) -> None:
    job_id = await submit(client, ["http://a.test/1", "http://a.test/2", "http://a.test/3"])
    (lease,) = await peer.lease()
    assert urls_of(lease) == ["http://a.test/1", "http://a.test/2", "http://a.test/3"]
    assert await peer.report(lease, 1, {"items": [item("http://a.test/2")]}, "ran out of time") == (
        200,
        {"accepted": True, "reason": ""},
    )
    clock.advance(REST)
    (rest,) = await peer.lease()
    assert rest["unit_id"] != lease["unit_id"]
    assert urls_of(rest) == ["http://a.test/1", "http://a.test/3"]
    await peer.report(rest, 0, {"items": [item("http://a.test/1"), item("http://a.test/3")]})
    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert (job["state"], job["units_total"], job["items_done"], job["counts"]) == ("done", 2, 3, {"ok": 3})


async def test_what_a_partial_report_left_out_is_leased_before_the_links_it_found(
    client: TestClient, peer: Peer, clock: Clock
) -> None:
    on_a = ["http://a.test/1", "http://a.test/2", "http://a.test/3"]  # one unit (the fixture's size)
    job_id = await submit(client, on_a, depth=1)
    (lease,) = await peer.lease()
    # a/2 checked, linking to a/4 on the same host; a/1 and a/3 left out.
    partial = {"items": [item(on_a[1], links=["http://a.test/4"])]}
    assert await peer.report(lease, 1, partial, "ran out of time") == (200, {"accepted": True, "reason": ""})
    # Sent again (its answer was lost): a duplicate, and what it left out stays out.
    assert await peer.report(lease, 1, partial) == (200, {"accepted": True, "reason": "duplicate"})
    clock.advance(REST)
    (rest,) = await peer.lease()
    assert urls_of(rest) == [on_a[0], on_a[2]]
    await peer.report(rest, 0, {"items": [item(on_a[0]), item(on_a[2])]})
    clock.advance(REST)
    (found,) = await peer.lease()
    assert urls_of(found) == ["http://a.test/4"]
    await peer.report(found, 0, {"items": [item("http://a.test/4")]})
    clock.advance(REST)
    assert await peer.lease() == []
    by_url = await results(client, job_id)
    assert sorted(by_url) == [*on_a, "http://a.test/4"]
    assert {r["result"] for r in by_url.values()} == {"ok"}
    assert (await get(client, f"/v1/jobs/{job_id}"))[1]["state"] == "done"


async def test_exit_2_retries_then_gives_up(client: TestClient, peer: Peer, clock: Clock) -> None:
    job_id = await submit(client, ["http://a.test/"])  # the fixture allows 3 attempts
    for attempt in range(3):
        (lease,) = await peer.lease()
        assert lease["token"] == attempt + 1
        assert await peer.report(lease, 2, None, f"crash {attempt}") == (200, {"accepted": True, "reason": ""})
        clock.advance(REST)
    assert await peer.lease() == []
    assert await peer.report(lease, 2, None, "crash 2") == (200, {"accepted": True, "reason": "duplicate"})
    by_url = await results(client, job_id)
    assert (by_url["http://a.test/"]["result"], by_url["http://a.test/"]["error"]) == (
        "error",
        "gave up after 3 attempts: crash 2",
    )
    assert (await get(client, f"/v1/jobs/{job_id}"))[1]["state"] == "done"


async def test_reports_without_items_use_attempts_and_then_finish_the_job(
    client: TestClient, peer: Peer, clock: Clock
) -> None:
    # A workload that exits 0 but reports nothing made no progress: each such report uses an
    # attempt, and the last one finishes the unit's items with the error, so the job ends
    # (before, the unit was done but its items stayed open and the job ran for ever).
    job_id = await submit(client, ["http://a.test/"])  # the fixture allows 3 attempts
    for _ in range(3):
        (lease,) = await peer.lease()
        assert await peer.report(lease, 0, {"items": []}) == (200, {"accepted": True, "reason": ""})
        clock.advance(REST)
    assert await peer.lease() == []
    by_url = await results(client, job_id)
    assert (by_url["http://a.test/"]["result"], by_url["http://a.test/"]["error"]) == (
        "error",
        "gave up after 3 attempts: workload reported no items",
    )
    assert (await get(client, f"/v1/jobs/{job_id}"))[1]["state"] == "done"


async def test_expired_leases_count_as_attempts(client: TestClient, peer: Peer, clock: Clock) -> None:
    job_id = await submit(client, ["http://a.test/"])
    for _ in range(3):
        assert len(await peer.lease()) == 1
        clock.advance(LEASE_SECONDS + REST)
    assert await peer.lease() == []  # the third expiry used up the last attempt
    by_url = await results(client, job_id)
    assert by_url["http://a.test/"]["error"] == "gave up after 3 attempts: lease expired"


async def test_exit_3_finishes_items_as_refused(client: TestClient, peer: Peer) -> None:
    job_id = await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    assert (await peer.report(lease, 3, None, "items missing"))[0] == 200
    by_url = await results(client, job_id)
    assert (by_url["http://a.test/"]["result"], by_url["http://a.test/"]["error"]) == (
        "error",
        "workload refused the input: items missing",
    )
