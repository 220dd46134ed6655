"""Job models at the coordinator: a bundle built before job models (no [job] in its manifest)
runs as the link checker did; failed units' stderr tails are kept for their owner, bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from coordinator.edge import STORE
from coordinator.rollout import picks_candidate
from coordinator.sql import reports, schema
from overlay.identity import Identity
from tests.coordinator.conftest import (
    FINGERPRINT_MANIFEST,
    START,
    Clock,
    Peer,
    get,
    item,
    post,
    publish_fingerprint,
    publish_source,
    version_of,
)
from workloads.builtin import stage_linkcheck


async def test_a_bundle_without_a_job_model_runs_as_the_link_checker(
    client: TestClient, peer: Peer, clock: Clock, tmp_path: Path
) -> None:
    """The link checker as a bundle of before job models: its manifest has no [job]."""
    source = stage_linkcheck(tmp_path / "source")
    toml = (source / "bundle.toml").read_text()
    (source / "bundle.toml").write_text(toml[: toml.index("[job]")].replace('"linkcheck"', '"oldlinks"'))
    assert client.app is not None
    built = await publish_source(client.app[STORE], source, tmp_path / "dist")
    assert built.signed.manifest.job is None
    status, body = await post(client, "/v1/jobs", {"workload": "oldlinks", "input": {"urls": ["http://a.test/"]}})
    assert status == 200, body
    job_id = body["job_id"]

    async def lease() -> dict[str, Any]:
        status, body = await peer.post("/v1/leases", {"max_units": 1, "workloads": ["oldlinks"]})
        assert status == 200, body
        (granted,) = body["leases"]
        return granted

    first = await lease()
    assert first["payload"] == {"job_id": job_id, "items": [{"url": "http://a.test/", "crawl": True}]}
    # A version-1 link-check report, `crawled` and all: taken, and its links become items.
    assert await peer.report(first, 0, {"items": [item("http://a.test/", ["http://a.test/b"])]}) == (
        200,
        {"accepted": True, "reason": ""},
    )
    clock.advance(60)
    second = await lease()
    assert await peer.report(second, 0, {"items": [item("http://a.test/b", result="broken")]}) == (
        200,
        {"accepted": True, "reason": ""},
    )
    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert (job["state"], job["counts"]) == ("done", {"ok": 1, "broken": 1})
    status, page = await get(client, f"/v1/jobs/{job_id}/results")
    assert page["columns"] == [
        *("url", "result", "status", "final_url", "redirects", "error"),
        *("depth", "referrers", "more_referrers", "failed"),
    ]
    assert page["items"][1] == {
        "url": "http://a.test/b",
        "result": "broken",
        "status": None,
        "final_url": "http://a.test/b",
        "redirects": [],
        "error": "broken for test",
        "depth": 1,
        "referrers": ["http://a.test/"],
        "more_referrers": 0,
        "failed": None,
        "done": True,
    }


async def test_failed_units_logs_reach_their_owner(client: TestClient, peer: Peer, clock: Clock) -> None:
    status, body = await post(client, "/v1/jobs", {"workload": "linkcheck", "input": {"urls": ["http://a.test/"]}})
    job_id = body["job_id"]
    status, page = await get(client, f"/v1/jobs/{job_id}/logs")
    assert (status, page) == (200, {"logs": []})
    (lease,) = await peer.lease()
    failed = {
        "unit_id": lease["unit_id"],
        "token": lease["token"],
        "bundle_version": version_of(lease),
        "exit_code": 2,
        "error": "crashed",
    }
    assert (await peer.post("/v1/reports", {**failed, "log": "Traceback ...\nValueError: boom\n"}))[0] == 200
    clock.advance(60)
    (again,) = await peer.lease()
    # A log that comes with a success is not kept: nothing failed.
    done = {"unit_id": again["unit_id"], "token": again["token"], "bundle_version": version_of(again), "exit_code": 0}
    assert (await peer.post("/v1/reports", {**done, "payload": {"items": [item("http://a.test/")]}, "log": "fine"}))[
        0
    ] == 200
    status, page = await get(client, f"/v1/jobs/{job_id}/logs")
    assert status == 200
    assert page["logs"] == [
        {
            "unit_id": lease["unit_id"],
            "peer_id": peer.identity.public_hex,
            "at": START,
            "exit_code": 2,
            "error": "crashed",
            "log": "Traceback ...\nValueError: boom\n",
        }
    ]
    # One longer than the wire's cap is refused at the door (a peer sends its last 4 KiB).
    too_long = {**failed, "token": again["token"], "log": "x" * 4097}
    status, body = await peer.post("/v1/reports", too_long)
    assert (status, body["error"]["code"]) == (400, "bad_request")


def test_logs_are_bounded_per_job(tmp_path: Path) -> None:
    conn = schema.connect(str(tmp_path / "c.sqlite"))
    try:
        for job_id in (1, 2):
            conn.execute(
                "INSERT INTO jobs (id, workload, input, state, created_at, unit_size) VALUES (?, 'w', x'80', 'running', 0, 1)",
                (job_id,),
            )
        logs = [(1, unit, "p", float(unit), 2, None, f"log {unit}") for unit in range(reports.MAX_LOGS_PER_JOB + 5)]
        reports.keep_logs(conn, logs[:50])
        reports.keep_logs(conn, [*logs[50:], (2, 1, "p", 0.0, 2, None, "other job")])
        kept = [text for (text,) in conn.execute("SELECT log FROM unit_logs WHERE job_id = 1 ORDER BY id")]
        assert kept == [f"log {unit}" for unit in range(5, reports.MAX_LOGS_PER_JOB + 5)]
        assert conn.execute("SELECT log FROM unit_logs WHERE job_id = 2").fetchall() == [("other job",)]
    finally:
        conn.close()


async def test_a_candidate_with_another_schema_is_refused_and_rolls_back(
    client: TestClient, peer: Peer, clock: Clock, tmp_path: Path
) -> None:
    """A job keeps the model it was submitted with: a later version that reports other records
    has its reports refused, each charged to it, and its rollout is rolled back."""
    assert client.app is not None
    store = client.app[STORE]
    owner = Identity.generate()
    await store.add_owner("fingerprinter", owner.public_hex, START)
    await publish_fingerprint(store, tmp_path, owner=owner)
    urls = [f"http://h{i}.test/" for i in range(5)]
    status, body = await post(client, "/v1/jobs", {"workload": "fingerprint", "input": {"urls": urls}})
    assert status == 200, body
    job_id = body["job_id"]
    # The second version's length is a string; the test's peer is among the half that runs it.
    candidate = next(
        v for v in (f"2.0.{n}" for n in range(100)) if picks_candidate(peer.identity.public_hex, "fingerprint", v, 50)
    )
    other = FINGERPRINT_MANIFEST.replace('version = "1.0.0"', f'version = "{candidate}"')
    await publish_fingerprint(store, tmp_path, manifest=other.replace('length = "int"', 'length = "str"'), owner=owner)
    await store.set_rollout("fingerprint", candidate, 50, owner.public_hex, START)

    status, body = await peer.post("/v1/leases", {"max_units": 5, "workloads": ["fingerprint"]})
    leases = body["leases"]
    assert [lease["bundle"]["version"] for lease in leases] == [candidate] * 5
    for lease in leases:
        (url,) = [i["url"] for i in lease["payload"]["items"]]
        record = {"url": url, "status": 200, "length": "5", "sha256": None}
        sent = {
            "unit_id": lease["unit_id"],
            "token": lease["token"],
            "bundle_version": version_of(lease),
            "exit_code": 0,
        }
        answer = await peer.post("/v1/reports", {**sent, "payload": {"items": [record]}, "bundle_version": candidate})
        assert answer == (200, {"accepted": False, "reason": "report refused: payload.items[0].length must be int"})
    status, bundle = await get(client, "/v1/bundles/fingerprint")
    assert (bundle["state"], bundle["stable"]) == ("rolled_back", "1.0.0")
    assert {v["version"]: (v["units_ok"], v["units_failed"]) for v in bundle["versions"]} == {
        "1.0.0": (0, 0),
        candidate: (0, 5),
    }
    # The job goes on with the stable version, under the schema it was submitted with.
    clock.advance(60)
    status, body = await peer.post("/v1/leases", {"max_units": 1, "workloads": ["fingerprint"]})
    assert body["leases"][0]["bundle"]["version"] == "1.0.0"
    assert (await get(client, f"/v1/jobs/{job_id}"))[1]["state"] == "running"
