"""The coordinator end to end over loopback HTTP: signed peers, a real SQLite file."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from overlay.wire_reports import MAX_REPORT_BATCH
from tests.coordinator.conftest import (
    LEASE_SECONDS,
    OPERATOR_KEY,
    REST,
    START,
    Clock,
    Linkcheck,
    Peer,
    audience,
    get,
    item,
    post,
    results,
    submit,
    urls_of,
    version_of,
)


async def test_health(client: TestClient) -> None:
    assert await get(client, "/v1/health") == (200, {"ok": True, "store": "ok", "public_key": audience(client)})


async def test_register_answers_peer_id_and_lease_seconds(client: TestClient, clock: Clock) -> None:
    peer = Peer(client, clock)
    status, body = await peer.post("/v1/peers/register", {"name": "bob", "slots": 2, "workloads": ["linkcheck"]})
    assert (status, body) == (200, {"peer_id": peer.identity.public_hex, "lease_seconds": LEASE_SECONDS})


async def test_job_lifecycle(client: TestClient, peer: Peer, clock: Clock) -> None:
    job_id = await submit(client, ["http://a.test/", "http://a.test/x", "http://b.test/"])
    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert status == 200
    assert job == {
        "job_id": job_id,
        "workload": "linkcheck",
        "state": "running",
        "units_total": 2,
        "units_done": 0,
        "items_total": 3,
        "items_done": 0,
        "counts": {},
        "created_at": START,
        "finished_at": None,
        "owner": OPERATOR_KEY.public_hex,
        "limited": None,
        "input": "urls",
        "vantage": None,
    }

    leases = await peer.lease(max_units=4)
    assert [lease["payload"] for lease in leases] == [
        {
            "job_id": job_id,
            "items": [{"url": "http://a.test/", "crawl": True}, {"url": "http://a.test/x", "crawl": True}],
        },
        {"job_id": job_id, "items": [{"url": "http://b.test/", "crawl": True}]},
    ]
    assert [(lease["token"], lease["workload"], lease["expires_at"]) for lease in leases] == [
        (1, "linkcheck", START + LEASE_SECONDS)
    ] * 2
    a, b = leases
    assert await peer.lease() == []

    links = ["http://a.test/x", "http://a.test/y", "http://c.test/", "mailto:z@a.test"]
    payload = {"items": [item("http://a.test/", links), item("http://a.test/x", ["http://a.test/"])]}
    assert await peer.report(a, 0, payload) == (200, {"accepted": True, "reason": ""})
    assert await peer.report(b, 0, {"items": [item("http://b.test/", result="broken")]}) == (
        200,
        {"accepted": True, "reason": ""},
    )

    assert await peer.lease(max_units=4) == []  # a.test rests; c.test waits for the next plan
    clock.advance(REST)
    follow_ups = await peer.lease(max_units=4)
    # Longest-rested hosts first: the new ones (non-http links share one key) before a.test.
    assert [lease["payload"]["items"] for lease in follow_ups] == [
        [{"url": "mailto:z@a.test", "crawl": False}],
        [{"url": "http://c.test/", "crawl": False}],
        [{"url": "http://a.test/y", "crawl": True}],
    ]
    clock.advance(5)
    mail, c, y = follow_ups
    await peer.report(y, 0, {"items": [item("http://a.test/y", ["http://a.test/"])]})
    await peer.report(c, 0, {"items": [item("http://c.test/", ["http://c.test/never-followed"])]})
    assert await peer.report(mail, 0, {"items": [item("mailto:z@a.test", result="excluded", crawled=False)]}) == (
        200,
        {"accepted": True, "reason": ""},
    )

    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert job["state"] == "done"
    assert job["finished_at"] == START + REST + 5
    assert (job["units_total"], job["units_done"], job["items_total"], job["items_done"]) == (5, 5, 6, 6)
    assert job["counts"] == {"ok": 4, "broken": 1, "excluded": 1}
    assert await peer.lease() == []

    by_url = await results(client, job_id)
    assert list(by_url) == [
        "http://a.test/",
        "http://a.test/x",
        "http://b.test/",
        "http://a.test/y",
        "http://c.test/",
        "mailto:z@a.test",
    ]
    assert by_url["http://a.test/"] == {
        "url": "http://a.test/",
        "result": "ok",
        "status": 200,
        "final_url": "http://a.test/",
        "redirects": [],
        "error": None,
        "referrers": ["http://a.test/x", "http://a.test/y"],
        "depth": 0,
    }
    assert by_url["http://a.test/x"]["referrers"] == ["http://a.test/"]
    assert by_url["http://b.test/"]["result"] == "broken"
    assert (by_url["http://a.test/y"]["depth"], by_url["http://a.test/y"]["referrers"]) == (1, ["http://a.test/"])
    assert by_url["mailto:z@a.test"]["referrers"] == ["http://a.test/"]

    status, listing = await get(client, "/v1/jobs")
    assert status == 200
    assert [j["job_id"] for j in listing["jobs"]] == [job_id]
    assert listing["jobs"][0] == job


async def test_depth_limit_and_scope(client: TestClient, peer: Peer, clock: Clock) -> None:
    job_id = await submit(client, ["http://a.test/"], depth=1)
    (seed,) = await peer.lease()
    await peer.report(seed, 0, {"items": [item("http://a.test/", ["http://a.test/d1", "https://a.test/other-scheme"])]})
    clock.advance(REST)
    leases = await peer.lease(max_units=5)
    assert [lease["payload"]["items"] for lease in leases] == [
        [{"url": "https://a.test/other-scheme", "crawl": False}],  # another origin: another host
        [{"url": "http://a.test/d1", "crawl": True}],
    ]
    other, d1 = leases
    # A peer claiming to have crawled a page it was told not to crawl adds no links.
    await peer.report(other, 0, {"items": [item("https://a.test/other-scheme", ["https://a.test/sneaky"])]})
    await peer.report(d1, 0, {"items": [item("http://a.test/d1", ["http://a.test/d2"])]})
    clock.advance(REST)
    (d2,) = await peer.lease(max_units=5)
    assert d2["payload"]["items"] == [{"url": "http://a.test/d2", "crawl": False}]
    await peer.report(d2, 0, {"items": [item("http://a.test/d2", ["http://a.test/d3"], crawled=False)]})
    by_url = await results(client, job_id)
    assert {u: r["depth"] for u, r in by_url.items()} == {
        "http://a.test/": 0,
        "http://a.test/d1": 1,
        "https://a.test/other-scheme": 1,
        "http://a.test/d2": 2,
    }
    assert (await get(client, f"/v1/jobs/{job_id}"))[1]["state"] == "done"


async def test_unlimited_depth_deduplicates_and_collects_referrers(
    client: TestClient, peer: Peer, clock: Clock
) -> None:
    job_id = await submit(client, ["http://a.test/", "http://a.test/b"])
    (lease,) = await peer.lease()
    await peer.report(
        lease,
        0,
        {
            "items": [
                item("http://a.test/", ["http://a.test/c", "http://a.test/b", "http://a.test/c"]),
                item("http://a.test/b", ["http://a.test/c", "http://a.test/"]),
            ]
        },
    )
    clock.advance(REST)
    (c,) = await peer.lease()
    assert urls_of(c) == ["http://a.test/c"]
    await peer.report(c, 0, {"items": [item("http://a.test/c", ["http://a.test/", "http://a.test/b"])]})
    by_url = await results(client, job_id)
    assert {u: r["referrers"] for u, r in by_url.items()} == {
        "http://a.test/": ["http://a.test/b", "http://a.test/c"],
        "http://a.test/b": ["http://a.test/", "http://a.test/c"],
        "http://a.test/c": ["http://a.test/", "http://a.test/b"],
    }


async def test_results_pagination(client: TestClient, peer: Peer) -> None:
    urls = [f"http://a.test/{i}" for i in range(7)]
    job_id = await submit(client, urls)
    status, page = await get(client, f"/v1/jobs/{job_id}/results?offset=2&limit=3")
    assert status == 200
    assert ([r["url"] for r in page["items"]], page["total"]) == (urls[2:5], 7)
    assert page["items"][0]["result"] is None
    status, page = await get(client, f"/v1/jobs/{job_id}/results?offset=6&limit=3")
    assert [r["url"] for r in page["items"]] == urls[6:]
    status, page = await get(client, f"/v1/jobs/{job_id}/results?offset=7")
    assert (status, page["items"], page["total"]) == (200, [], 7)
    # Digits that are not ASCII (superscript two, Arabic-Indic three) are bad values, not a crash.
    bad = (
        "limit=0",
        "limit=5001",
        "offset=-1",
        "offset=x",
        "limit=99999999999999999999999",
        "offset=%C2%B2",
        "limit=%D9%A3",
    )
    for query in bad:
        status, body = await get(client, f"/v1/jobs/{job_id}/results?{query}")
        assert (status, body["error"]["code"]) == (400, "invalid_input"), query
    for path in ("/v1/jobs/%C2%B2", "/v1/jobs/%D9%A3/results"):
        status, body = await get(client, path)
        assert status == 404, path


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "payload must be a map with a list 'items'"),
        ({"items": "no"}, "payload must be a map with a list 'items'"),
        ({"items": [item("http://a.test/elsewhere")]}, "payload.items[0].url is not an item of this unit"),
        ({"items": [item("http://a.test/"), item("http://a.test/")]}, "payload.items[1].url is reported twice"),
        ({"items": [{**item("http://a.test/"), "status": "200"}]}, "payload.items[0].status must be int or nil"),
        ({"items": [{**item("http://a.test/"), "links": [1]}]}, "payload.items[0].links must be list[str]"),
        (
            {"items": [{k: v for k, v in item("http://a.test/").items() if k != "redirects"}]},
            "payload.items[0].redirects is missing",
        ),
        (
            {"items": [{**item("http://a.test/"), "error": "e" * 8193}]},
            "payload.items[0].error is longer than 8192 characters",
        ),
    ],
)
async def test_a_refused_report_uses_an_attempt_and_counts_against_the_version(
    client: TestClient, peer: Peer, linkcheck: Linkcheck, clock: Clock, payload: Any, reason: str
) -> None:
    """Records that break the job's schema: the peer is told why (not accepted), the unit is
    queued again with that reason, using an attempt, and the version that ran it is charged."""
    job_id = await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    sent = {
        "unit_id": lease["unit_id"],
        "token": lease["token"],
        "bundle_version": version_of(lease),
        "exit_code": 0,
        "payload": payload,
    }
    answer = await peer.post("/v1/reports", {**sent, "bundle_version": linkcheck.version})
    assert answer == (200, {"accepted": False, "reason": f"report refused: {reason}"})
    # Nothing of it was kept, and it cannot be sent again: the lease is over.
    assert (await results(client, job_id))["http://a.test/"]["result"] is None
    assert (await peer.post("/v1/reports", sent))[0] == 409
    status, bundle = await get(client, "/v1/bundles/linkcheck")
    assert [(v["version"], v["units_ok"], v["units_failed"]) for v in bundle["versions"]] == [(linkcheck.version, 0, 1)]
    # The unit comes back with that reason as its last error; the attempts are used up at 3.
    for _ in (2, 3):
        clock.advance(REST)
        (again,) = await peer.lease()
        assert again["unit_id"] == lease["unit_id"]
        assert (await peer.report(again, 0, payload))[1]["accepted"] is False
    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert (job["state"], job["counts"]) == ("done", {"error": 1})
    assert (await results(client, job_id))["http://a.test/"][
        "error"
    ] == f"gave up after 3 attempts: report refused: {reason}"


async def test_bad_job_submissions(client: TestClient) -> None:
    cases = [
        {"workload": "mine-bitcoin", "input": {"urls": ["http://a.test/"]}},
        {"workload": "linkcheck", "input": {"urls": []}},
        {"workload": "linkcheck", "input": {"urls": ["ftp://a.test/"]}},
        {"workload": "linkcheck", "input": {"urls": ["/relative"]}},
        {"workload": "linkcheck", "input": {"urls": ["http://a.test/"], "depth": -1}},
        {"workload": "linkcheck", "input": {"urls": ["http://a.test/"], "depth": True}},
        {"workload": "linkcheck", "input": {"urls": ["http://a.test/"] * 1001}},
        {"workload": "linkcheck", "input": {"urls": ["http://a.test/"], "scope": "all"}},
    ]
    for case in cases:
        status, body = await post(client, "/v1/jobs", case)
        assert (status, body["error"]["code"]) == (400, "invalid_input"), case
    assert (await get(client, "/v1/jobs")) == (200, {"jobs": []})


async def test_unknown_ids_and_routes(client: TestClient) -> None:
    assert (await get(client, "/v1/jobs/42"))[0] == 404
    assert (await get(client, "/v1/jobs/9999999999999999999"))[0] == 404
    assert (await get(client, "/v1/jobs/42/results"))[0] == 404
    status, body = await get(client, "/v1/nothing-here")
    assert (status, body["error"]["code"]) == (404, "not_found")
    async with client.delete("/v1/jobs") as resp:
        assert resp.status == 405


async def test_unregistered_peer_is_told_to_register(client: TestClient, clock: Clock) -> None:
    stranger = Peer(client, clock)
    status, body = await stranger.post("/v1/leases", {"max_units": 1, "workloads": ["linkcheck"]})
    assert (status, body["error"]["code"]) == (403, "unknown_peer")
    assert "register first" in body["error"]["message"]
    status, body = await stranger.post("/v1/reports", {"unit_id": 1, "token": 1, "exit_code": 0})
    assert status == 403


# ---- report batches ------------------------------------------------------------------------


def report_of(lease: dict[str, Any], payload: Any, token: int | None = None) -> dict[str, Any]:
    token = lease["token"] if token is None else token
    return {
        "unit_id": lease["unit_id"],
        "token": token,
        "bundle_version": version_of(lease),
        "exit_code": 0,
        "payload": payload,
    }


async def test_report_batch_answers_every_report_in_order(client: TestClient, peer: Peer, clock: Clock) -> None:
    job_id = await submit(client, ["http://a.test/", "http://b.test/", "http://c.test/"], depth=0)
    a, b, c = await peer.lease(max_units=3)
    done_a = {"items": [item("http://a.test/")]}
    status, body = await peer.post(
        "/v1/reports/batch",
        {
            "reports": [
                report_of(a, done_a),
                report_of(b, {"items": [item("http://b.test/")]}, token=b["token"] + 1),
                {"unit_id": 999, "token": 1, "exit_code": 0, "payload": done_a},
                report_of(c, {"items": [item("http://c.test/elsewhere")]}),
                report_of(a, done_a),
            ]
        },
    )
    assert status == 200
    assert body == {
        "results": [
            {"unit_id": a["unit_id"], "accepted": True, "reason": "", "code": ""},
            {
                "unit_id": b["unit_id"],
                "accepted": False,
                "code": "stale_lease",
                "reason": f"unit {b['unit_id']} token {b['token'] + 1} is not the current lease",
            },
            {"unit_id": 999, "accepted": False, "reason": "no unit 999", "code": "not_found"},
            {
                "unit_id": c["unit_id"],
                "accepted": False,
                "code": "report_refused",
                "reason": "report refused: payload.items[0].url is not an item of this unit",
            },
            {"unit_id": a["unit_id"], "accepted": True, "reason": "duplicate", "code": ""},
        ]
    }
    by_url = await results(client, job_id)
    assert {u: r["result"] for u, r in by_url.items()} == {
        "http://a.test/": "ok",
        "http://b.test/": None,
        "http://c.test/": None,
    }

    # The reports refused at the door changed nothing: b's lease still stands; c's refused
    # records used an attempt, so c is leased again.
    status, body = await peer.post(
        "/v1/reports/batch",
        {
            "reports": [
                report_of(b, {"items": [item("http://b.test/", result="broken")]}),
                report_of(c, {"items": [item("http://c.test/")]}),
            ]
        },
    )
    assert (status, [r["code"] for r in body["results"]]) == (200, ["", "stale_lease"])
    clock.advance(REST)
    (c,) = await peer.lease()
    assert (await peer.report(c, 0, {"items": [item("http://c.test/")]}))[1]["accepted"] is True
    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert (job["state"], job["units_done"], job["counts"]) == ("done", 3, {"ok": 2, "broken": 1})


async def test_report_batch_takes_each_report_as_if_alone(client: TestClient, peer: Peer, clock: Clock) -> None:
    """A partial result (what it left out waits again), a failure (the unit is queued again,
    so its second report in the same batch is stale) and a refused input (its items finish as
    errors), all in one batch."""
    on_a = ["http://a.test/1", "http://a.test/2", "http://a.test/3"]
    job_id = await submit(client, [*on_a, "http://b.test/", "http://c.test/"], depth=0)
    first = {lease["payload"]["items"][0]["url"]: lease for lease in await peer.lease(max_units=3)}
    a, b, c = first[on_a[0]], first["http://b.test/"], first["http://c.test/"]
    status, body = await peer.post(
        "/v1/reports/batch",
        {
            "reports": [
                report_of(a, {"items": [item(on_a[0]), item(on_a[1], result="broken")]}),
                {
                    "unit_id": b["unit_id"],
                    "token": b["token"],
                    "bundle_version": version_of(b),
                    "exit_code": 2,
                    "error": "crashed",
                },
                report_of(b, {"items": [item("http://b.test/")]}),
                {
                    "unit_id": c["unit_id"],
                    "token": c["token"],
                    "bundle_version": version_of(c),
                    "exit_code": 3,
                    "error": "not for me",
                },
            ]
        },
    )
    assert status == 200
    assert [(r["accepted"], r["code"]) for r in body["results"]] == [
        (True, ""),
        (True, ""),
        (False, "stale_lease"),
        (True, ""),
    ]
    by_url = await results(client, job_id)
    assert {u: (r["result"], r["error"]) for u, r in by_url.items()} == {
        on_a[0]: ("ok", None),
        on_a[1]: ("broken", "broken for test"),
        on_a[2]: (None, None),
        "http://b.test/": (None, None),
        "http://c.test/": ("error", "workload refused the input: not for me"),
    }
    clock.advance(60)  # past every host's rest after its unit
    again = {lease["payload"]["items"][0]["url"]: lease for lease in await peer.lease(max_units=3)}
    assert sorted(again) == [on_a[2], "http://b.test/"]
    assert [i["url"] for i in again[on_a[2]]["payload"]["items"]] == [on_a[2]]
    assert (again["http://b.test/"]["unit_id"], again["http://b.test/"]["token"]) == (b["unit_id"], b["token"] + 1)
    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert (job["state"], job["counts"]) == ("running", {"broken": 1, "error": 1, "ok": 1})


async def test_report_batch_size_is_capped(client: TestClient, peer: Peer, clock: Clock) -> None:
    await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    report = report_of(lease, {"items": [item("http://a.test/")]})
    status, body = await peer.post("/v1/reports/batch", {"reports": [report] * (MAX_REPORT_BATCH + 1)})
    assert (status, body["error"]) == (
        400,
        {
            "code": "invalid_input",
            "message": f"a report batch holds at most {MAX_REPORT_BATCH} reports, this one has {MAX_REPORT_BATCH + 1}; "
            "send the rest in another batch",
        },
    )
    status, body = await peer.post("/v1/reports/batch", {"reports": []})
    assert (status, body["error"]["code"]) == (400, "bad_request")
    stranger = Peer(client, clock, "stranger")
    assert (await stranger.post("/v1/reports/batch", {"reports": [report]}))[0] == 403
    # Nothing of the refused batches was merged; the largest batch allowed is one transaction.
    status, body = await peer.post("/v1/reports/batch", {"reports": [report] * MAX_REPORT_BATCH})
    assert status == 200
    assert [r["reason"] for r in body["results"]] == [""] + ["duplicate"] * (MAX_REPORT_BATCH - 1)
