"""Items a running unit streamed (process API version 2), over loopback HTTP to a real
coordinator and SQLite file: taken under the unit's lease, checked like final reports, counted
once whichever report brings them."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.coordinator.conftest import REST, Clock, Peer, get, item, results, submit, urls_of, version_of


async def stream(peer: Peer, lease: dict[str, Any], *records: dict[str, Any], token: int | None = None) -> Any:
    body = {
        "unit_id": lease["unit_id"],
        "token": lease["token"] if token is None else token,
        "bundle_version": version_of(lease),
        "items": list(records),
    }
    return await peer.post("/v1/reports/items", body)


async def job(client: TestClient, job_id: int) -> dict[str, Any]:
    status, body = await get(client, f"/v1/jobs/{job_id}")
    assert status == 200
    return body


async def test_streamed_items_are_done_at_once_and_counted_once(client: TestClient, peer: Peer) -> None:
    job_id = await submit(client, ["http://a.test/", "http://a.test/x", "http://a.test/z"])
    (lease,) = await peer.lease()
    first, second, third = urls_of(lease)
    links = ["http://a.test/new", "http://a.test/x"]

    assert await stream(peer, lease, item(first, links)) == (200, {"accepted": True, "taken": 1, "reason": ""})
    # The owner sees it while the unit runs, and its links wait as new items.
    running = await job(client, job_id)
    assert (running["state"], running["items_done"], running["items_total"], running["counts"]) == (
        "running",
        1,
        4,
        {"ok": 1},
    )
    by_url = await results(client, job_id)
    assert by_url[first]["result"] == "ok" and by_url["http://a.test/new"]["depth"] == 1
    assert by_url[second]["result"] is None

    # Sent again (an answer lost on the way), or streamed twice: taken once, the first counts.
    again = item(first, ["http://a.test/other"], result="broken")
    assert await stream(peer, lease, item(first, links), again, item(second)) == (
        200,
        {"accepted": True, "taken": 1, "reason": ""},
    )
    # The final report carries the last item, and one streamed already: that one is dropped.
    assert await peer.report(lease, 0, {"items": [item(third), again]}) == (200, {"accepted": True, "reason": ""})

    done = await job(client, job_id)
    # The new link waits; nothing is counted twice.
    assert (done["items_done"], done["items_total"], done["counts"], done["units_done"]) == (3, 4, {"ok": 3}, 1)
    by_url = await results(client, job_id)
    assert [by_url[url]["result"] for url in (first, second, third)] == ["ok", "ok", "ok"]
    assert "http://a.test/other" not in by_url
    # A stream of the finished unit's lease is a duplicate: nothing changes.
    assert await stream(peer, lease, item(third)) == (200, {"accepted": True, "taken": 0, "reason": "duplicate"})


async def test_a_stale_token_is_refused(client: TestClient, peer: Peer) -> None:
    await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    status, body = await stream(peer, lease, item("http://a.test/"), token=lease["token"] + 1)
    assert (status, body["error"]["code"]) == (409, "stale_lease")
    assert body["error"]["message"] == f"unit {lease['unit_id']} token {lease['token'] + 1} is not the current lease"
    other = Peer(client, peer.clock, "mallory")
    await other.register()
    status, body = await stream(other, lease, item("http://a.test/"))
    assert (status, body["error"]["code"]) == (409, "stale_lease")


async def test_a_record_that_breaks_the_model_refuses_the_stream_as_the_workloads_failure(
    client: TestClient, peer: Peer, clock: Clock
) -> None:
    job_id = await submit(client, ["http://a.test/", "http://a.test/x"])
    (lease,) = await peer.lease()
    first, second = urls_of(lease)
    assert (await stream(peer, lease, item(first)))[1]["taken"] == 1
    bad = item(second) | {"status": "200"}
    assert await stream(peer, lease, bad) == (
        200,
        {"accepted": False, "taken": 0, "reason": "report refused: payload.items[0].status must be int or nil"},
    )
    # The lease is gone; what streamed before stays done; the rest waits for another lease.
    status, body = await peer.post("/v1/leases/renew", {"unit_id": lease["unit_id"], "token": lease["token"]})
    assert (status, body["error"]["code"]) == (409, "stale_lease")
    clock.advance(REST)  # the host rests after a unit that brought nothing back
    (again,) = await peer.lease()
    assert (again["unit_id"], again["token"], urls_of(again)) == (lease["unit_id"], lease["token"] + 1, [second])
    assert (await job(client, job_id))["items_done"] == 1


async def test_an_item_not_of_the_unit_is_refused(client: TestClient, peer: Peer) -> None:
    await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    status, body = await stream(peer, lease, item("http://elsewhere.test/"))
    assert (status, body["reason"]) == (200, "report refused: payload.items[0].url is not an item of this unit")


async def test_a_crash_after_streaming_leaves_the_streamed_done_and_the_rest_waiting(
    client: TestClient, peer: Peer, clock: Clock
) -> None:
    job_id = await submit(client, ["http://a.test/", "http://a.test/x", "http://a.test/z"])
    (lease,) = await peer.lease()
    first, second, third = urls_of(lease)
    assert (await stream(peer, lease, item(first)))[1]["taken"] == 1
    # The workload crashed; the peer's report brings the one it could not hand over yet.
    crashed = {
        "unit_id": lease["unit_id"],
        "token": lease["token"],
        "bundle_version": version_of(lease),
        "exit_code": 2,
        "error": "workload exited with code 2 without a result",
        "streamed": 1,
        "items": [item(second)],
    }
    assert await peer.post("/v1/reports", crashed) == (200, {"accepted": True, "reason": ""})
    assert (await job(client, job_id))["items_done"] == 2
    clock.advance(REST)
    (again,) = await peer.lease()
    assert urls_of(again) == [third]
    # Only what the lease itself did counts: streamed items and none in the result is progress.
    assert (await stream(peer, again, item(third)))[1]["taken"] == 1
    report = {
        "unit_id": again["unit_id"],
        "token": again["token"],
        "bundle_version": version_of(again),
        "exit_code": 0,
        "payload": {"items": []},
    }
    assert await peer.post("/v1/reports", report | {"streamed": 1}) == (200, {"accepted": True, "reason": ""})
    done = await job(client, job_id)
    assert (done["state"], done["items_done"], done["counts"]) == ("done", 3, {"ok": 3})


async def test_streamed_links_are_added_once_within_the_owners_limits(client: TestClient, peer: Peer) -> None:
    job_id = await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    page = item("http://a.test/", ["http://a.test/1", "http://a.test/2"])
    await stream(peer, lease, page)
    await stream(peer, lease, page)
    await peer.report(lease, 0, {"items": [page]})
    assert list(await results(client, job_id)) == ["http://a.test/", "http://a.test/1", "http://a.test/2"]
    assert (await job(client, job_id))["items_total"] == 3


async def test_a_stream_of_nothing_or_of_too_much_is_refused_at_the_door(client: TestClient, peer: Peer) -> None:
    await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    status, body = await stream(peer, lease)
    assert (status, body["error"]["message"]) == (
        400,
        "body: items must hold 1..1000 records; send the rest in another report",
    )
    status, body = await stream(peer, lease, *[item("http://a.test/")] * 1001)
    assert status == 400
    status, body = await peer.post("/v1/reports/items", {"unit_id": lease["unit_id"], "token": lease["token"]})
    assert (status, body["error"]["message"]) == (400, "body.items is missing")
