"""Jobs of items and records at the coordinator, through its API in-process: input checked and
split by count into parts that several peers lease at once; each unit's payload holds its items
(or records); records name their item by `item`, and come back as results rows; owners' URL
limits count items. The pure rules (`coordinator.item_jobs`) are tested at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator import item_jobs, url_jobs
from coordinator.api import make_app
from coordinator.edge import STORE
from coordinator.owner_limits import Limits
from coordinator.sql import SqlStore
from coordinator.store import InvalidInput
from overlay.identity import Identity
from tests.coordinator.conftest import (
    LEASE_SECONDS,
    UNLIMITED,
    Clock,
    Linkcheck,
    Peer,
    add_linkcheck,
    as_operator,
    get,
    post,
    publish_source,
)

ITEMS_MANIFEST = """name = "upper"
version = "1.0.0"
entrypoint = ["python3", "-m", "upper"]

[job]
input = "items"
partition = "count"
count = "kind"

[results.fields]
item = "str"
upper = "str"
kind = "str"
"""

RECORDS_MANIFEST = """name = "adder"
version = "1.0.0"
entrypoint = ["python3", "-m", "adder"]

[job]
input = "records"

[results.fields]
item = "str"
total = "float?"
"""


async def publish(client: TestClient, root: Path, manifest: str, owner: Identity | None = None) -> None:
    assert client.app is not None
    source = root / f"source-{len(list(root.glob('source-*')))}"
    name = manifest.split('"')[1]
    (source / name).mkdir(parents=True)
    (source / "bundle.toml").write_text(manifest)
    (source / name / "__main__.py").write_text("raise SystemExit(2)\n")
    await publish_source(client.app[STORE], source, source.with_name(source.name + "-dist"), owner=owner)


async def lease(peer: Peer, name: str, max_units: int = 1) -> list[dict[str, Any]]:
    status, body = await peer.post("/v1/leases", {"max_units": max_units, "workloads": [name]})
    assert status == 200, body
    return body["leases"]


async def test_items_are_split_by_count_leased_by_several_peers_and_come_back(
    client: TestClient, clock: Clock, tmp_path: Path
) -> None:
    await publish(client, tmp_path, ITEMS_MANIFEST)
    items = [f"word {n}" for n in range(100)]
    status, body = await post(client, "/v1/jobs", {"workload": "upper", "input": {"items": [*items, "word 3"]}})
    assert status == 200, body
    job_id = body["job_id"]
    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert job["items_total"] == 100  # an item given twice is one

    peers = [Peer(client, clock, name) for name in ("a", "b", "c")]
    for peer in peers:
        await peer.register(slots=1)
    granted = {peer.name: await lease(peer, "upper") for peer in peers}
    # Every peer works at once: one live lease per part, and the job has several parts.
    assert all(len(leases) == 1 for leases in granted.values()), granted
    seen: list[str] = []
    for peer in peers:
        (unit,) = granted[peer.name]
        payload = unit["payload"]
        assert unit["host"] is None  # a part is no website
        assert set(payload) == {"job_id", "items"} and payload["job_id"] == job_id
        assert all(set(entry) == {"item"} for entry in payload["items"])
        seen += [entry["item"] for entry in payload["items"]]
    assert len(seen) == len(set(seen))

    # The rest, leased and reported by the peers (each its parts) until nothing is left.
    done: dict[str, dict[str, Any]] = {}
    pending = [(peers[i], granted[peer.name][0]) for i, peer in enumerate(peers)]
    for _ in range(100):
        for peer, unit in pending:
            records = [
                {"item": e["item"], "upper": e["item"].upper(), "kind": "even" if e["item"][-1] in "02468" else "odd"}
                for e in unit["payload"]["items"]
            ]
            status, answer = await peer.report(unit, 0, {"items": records})
            assert (status, answer) == (200, {"accepted": True, "reason": ""})
            done.update({r["item"]: r for r in records})
        clock.advance(1)
        pending = [(peer, unit) for peer in peers for unit in await lease(peer, "upper")]
        if not pending:
            break
    assert sorted(done) == sorted(items)

    status, job = await get(client, f"/v1/jobs/{job_id}")
    assert (job["state"], job["counts"]) == ("done", {"even": 50, "odd": 50})
    status, page = await get(client, f"/v1/jobs/{job_id}/results")
    assert page["columns"] == ["item", "upper", "kind", "failed"]
    assert [row["item"] for row in page["items"]] == items  # in the order given
    assert page["items"][7] == {"item": "word 7", "upper": "WORD 7", "kind": "odd", "failed": None, "done": True}


async def test_records_reach_the_workload_and_reports_name_them_by_item(
    client: TestClient, peer: Peer, tmp_path: Path
) -> None:
    await publish(client, tmp_path, RECORDS_MANIFEST)
    records = [{"a": 1, "b": 2.5}, {"a": -1, "nested": {"list": [1, "x", None, True]}}, {}]
    status, body = await post(client, "/v1/jobs", {"workload": "adder", "input": {"records": records}})
    assert status == 200, body
    (unit,) = await lease(peer, "adder")
    assert unit["payload"] == {
        "job_id": body["job_id"],
        "items": [{"item": str(n), "record": record} for n, record in enumerate(records, 1)],
    }
    # A record named by `url`, as a URL job's would be: refused, naming the field.
    status, answer = await peer.report(unit, 0, {"items": [{"url": "1", "total": 3.5}]})
    assert answer == {"accepted": False, "reason": "report refused: payload.items[0].item is missing"}
    (unit,) = await lease(peer, "adder")
    status, answer = await peer.report(unit, 0, {"items": [{"item": "4", "total": 1.0}]})
    assert answer["reason"] == "report refused: payload.items[0].item is not an item of this unit"
    (unit,) = await lease(peer, "adder")
    reported = [{"item": "1", "total": 3.5}, {"item": "2", "total": None}, {"item": "3", "total": 0}]
    assert (await peer.report(unit, 0, {"items": reported}))[1]["accepted"]
    status, page = await get(client, f"/v1/jobs/{body['job_id']}/results")
    assert page["columns"] == ["item", "total", "failed"]
    assert [(row["item"], row["total"]) for row in page["items"]] == [("1", 3.5), ("2", None), ("3", 0)]


@pytest.mark.parametrize(
    ("workload", "job_input", "message"),
    [
        (
            "upper",
            {"urls": ["http://a.test/"]},
            "input must be a map with 'items' only (this bundle's jobs take items)",
        ),
        ("upper", {"items": []}, f"input.items must be a list of 1..{item_jobs.MAX_ITEMS} items"),
        ("upper", {"items": ["ok", ""]}, "input.items[1] must be a non-empty string of at most 8192 characters"),
        ("upper", {"items": ["x" * 8193]}, "input.items[0] must be a non-empty string of at most 8192 characters"),
        ("adder", {"records": [{"a": 1}, [1, 2]]}, "input.records[1] must be a JSON object"),
        ("adder", {"records": [{"a": b"bytes"}]}, "input.records[0] has a bytes, which JSON cannot hold"),
        ("adder", {"records": [{"a": "x" * 70_000}]}, "input.records[0] is larger than 65536 bytes as JSON"),
        ("linkcheck", {"items": ["x"]}, "input has unknown fields: items"),
    ],
)
async def test_bad_input_is_refused_in_one_line(
    client: TestClient, tmp_path: Path, workload: str, job_input: dict[str, Any], message: str
) -> None:
    await publish(client, tmp_path, ITEMS_MANIFEST)
    await publish(client, tmp_path, RECORDS_MANIFEST)
    status, body = await post(client, "/v1/jobs", {"workload": workload, "input": job_input})
    assert (status, body["error"]["message"]) == (400, message)


async def test_owners_limits_count_items(client: TestClient, clock: Clock, tmp_path: Path) -> None:
    assert client.app is not None
    store = client.app[STORE]
    alice = Identity.generate()
    await store.add_owner("alice", alice.public_hex, clock())
    await store.set_limits(alice.public_hex, Limits(urls_per_job=3, urls_per_day=5), "operator", clock())
    await publish(client, tmp_path, ITEMS_MANIFEST, owner=alice)
    status, body = await post(client, "/v1/jobs", {"workload": "upper", "input": {"items": list("abcd")}}, alice)
    assert (status, body["error"]["message"]) == (
        429,
        "limit reached: 3 URLs per job (each of its items counts as one), this job has 4 to start with",
    )
    for chunk in ("abc", "de"):
        status, body = await post(client, "/v1/jobs", {"workload": "upper", "input": {"items": list(chunk)}}, alice)
        assert status == 200, body
    status, body = await post(client, "/v1/jobs", {"workload": "upper", "input": {"items": ["f"]}}, alice)
    assert status == 429 and body["error"]["message"].startswith(
        "limit reached: 5 URLs per day (each of its items counts as one) (5 used today)"
    )


# ---- the pure rules ---------------------------------------------------------------------------


def test_parts_hold_contiguous_runs_of_at_least_a_unit_and_are_never_paced() -> None:
    assert [item_jobs.parts(n) for n in (1, 19, 20, 45, 1280, 10**5)] == [1, 1, 1, 2, 64, 64]
    job = item_jobs.parse_input("items", {"items": [str(n) for n in range(50)]})
    seeded = item_jobs.seed_items(7, job)
    keys = [item.unit_key for item in seeded]
    assert keys == ["#7/0"] * 25 + ["#7/1"] * 25
    assert not any(url_jobs.is_website(key) for key in keys)
    assert url_jobs.is_website(url_jobs.unit_key("http://a.test/x"))
    assert not url_jobs.is_website(url_jobs.NOT_HTTP_KEY)


def test_the_whole_input_is_capped() -> None:
    many = ["x" * 8000] * 600  # each within its cap, 4.8 MB in all
    with pytest.raises(InvalidInput, match="input.items is larger than 4194304 bytes"):
        item_jobs.parse_input("items", {"items": many})
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(InvalidInput, match="nested deeper than 32 levels"):
        item_jobs.parse_input("records", {"records": [deep]})
    with pytest.raises(InvalidInput, match="number JSON cannot hold"):
        item_jobs.parse_input("records", {"records": [{"a": float("nan")}]})


async def test_a_lease_answer_of_records_stays_within_what_a_peer_reads(
    db_path: Path, clock: Clock, linkcheck: Linkcheck, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap, scaled down with the records (4 MiB and 60 KB records would do the same).
    monkeypatch.setattr(item_jobs, "LEASE_RECORD_BYTES", 250_000)
    store = SqlStore(db_path, unit_size=500, max_attempts=3)
    app = make_app(store, lease_seconds=LEASE_SECONDS, clock=clock, rate_limits=UNLIMITED)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        await add_linkcheck(store, linkcheck, clock())
        await as_operator(store, clock())
        await publish(client, tmp_path, RECORDS_MANIFEST)
        big = [{"text": "x" * 5_000}] * 60
        for _ in range(3):
            status, body = await post(client, "/v1/jobs", {"workload": "adder", "input": {"records": big}})
            assert status == 200, body
        peer = Peer(client, clock)
        await peer.register(slots=16)
        units = await lease(peer, "adder", max_units=16)
        # Each job has three parts of 20 records (100 KB a unit): three units reach the cap,
        # where nine would be granted without it.
        assert [len(unit["payload"]["items"]) for unit in units] == [20] * 3
