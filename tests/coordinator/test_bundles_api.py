"""Bundles over loopback HTTP: publishing and its refusals, leases naming bundle versions, and
rollouts (pinned jobs, a partial rollout, automatic roll back, completion), plus a migration
from a schema-1 database. Seeding over BitTorrent is in test_seeder."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator import reputation, rollout
from coordinator.api import make_app
from coordinator.host_pacing import DEFAULT_MIN_DELAY
from coordinator.owner_routes import MAX_BUNDLE_UPLOAD
from coordinator.seeder import BundleService
from coordinator.sql import SCHEMA_VERSION, SqlStore
from coordinator.sql.schema import SCHEMA
from coordinator.store import PEER_QUIET_SECONDS
from overlay.identity import Identity
from overlay.wire import BundleRef, RegisterRequest, decode, encode, sign_request
from tests.coordinator.conftest import (
    LEASE_SECONDS,
    MSGPACK,
    START,
    Clock,
    Linkcheck,
    Peer,
    add_linkcheck,
    as_operator,
    audience,
    get,
    item,
    post,
    signed,
)
from workloads import bundle


@dataclass
class Upload:
    manifest: bytes
    archive: bytes

    @property
    def signed(self) -> bundle.SignedManifest:
        return bundle.decode(self.manifest)

    def body(self) -> bytes:
        return encode({"manifest": self.manifest, "archive": self.archive})


def build(tmp: Path, owner: Identity, name: str, version: str, content: bytes = b"print('hi')\n") -> Upload:
    source = tmp / f"src-{name}-{version}-{os.urandom(4).hex()}"
    source.mkdir(parents=True)
    (source / bundle.MANIFEST_FILE).write_text(
        f'name = "{name}"\nversion = "{version}"\nentrypoint = ["python3", "main.py"]\n', encoding="utf-8"
    )
    (source / "main.py").write_bytes(content)
    built = bundle.build(source, owner, tmp / f"out-{source.name}")
    return Upload(built.manifest_path.read_bytes(), built.archive_path.read_bytes())


class Owner:
    """A project owner: publishes bundles, rolls them out with signed requests."""

    def __init__(self, client: TestClient, clock: Clock, tmp: Path) -> None:
        self.client = client
        self.clock = clock
        self.tmp = tmp
        self.identity = Identity.generate()

    def build(self, name: str, version: str, content: bytes = b"print('hi')\n") -> Upload:
        return build(self.tmp, self.identity, name, version, content)

    async def publish(self, upload: Upload, signer: Identity | None = None) -> tuple[int, Any]:
        body = upload.body()
        headers = signed(self.client, "POST", "/v1/bundles", body, signer or self.identity)
        async with self.client.post("/v1/bundles", data=body, headers=headers) as resp:
            return resp.status, decode(await resp.read())

    async def rollout(
        self, name: str, version: str, percent: int, signer: Identity | None = None, force: bool = False
    ) -> tuple[int, Any]:
        path = f"/v1/bundles/{name}/rollout"
        body = encode({"version": version, "percent": percent} | ({"force": True} if force else {}))
        headers = sign_request(signer or self.identity, "POST", path, body, self.clock(), audience(self.client))
        headers |= MSGPACK
        async with self.client.post(path, data=body, headers=headers) as resp:
            return resp.status, decode(await resp.read())


@dataclass
class Coordinator:
    client: TestClient
    store: SqlStore
    bundle_dir: Path
    clock: Clock

    async def admit(self, owner: Owner, name: str = "owner") -> None:
        await self.store.add_owner(name, owner.identity.public_hex, self.clock())

    def stored_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.bundle_dir)) for p in self.bundle_dir.rglob("*") if p.is_file())


@pytest.fixture
async def coordinator(tmp_path: Path, clock: Clock) -> AsyncIterator[Coordinator]:
    store = SqlStore(tmp_path / "c.sqlite", unit_size=1, max_attempts=3)
    bundle_dir = tmp_path / "bundles"
    app = make_app(store, lease_seconds=LEASE_SECONDS, clock=clock, bundles=BundleService(bundle_dir))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        await as_operator(store, clock())
        yield Coordinator(client, store, bundle_dir, clock)


@pytest.fixture
async def owner(coordinator: Coordinator, tmp_path: Path) -> Owner:
    o = Owner(coordinator.client, coordinator.clock, tmp_path / "owner")
    await coordinator.admit(o)
    return o


async def submit(
    client: TestClient, urls: list[str], workload: str = "demo", version: str | None = None
) -> tuple[int, Any]:
    job = {"workload": workload, "input": {"urls": urls, "depth": 0}, "version": version}
    return await post(client, "/v1/jobs", job)


async def lease(peer: Peer, workloads: list[str], max_units: int = 1) -> list[dict[str, Any]]:
    status, body = await peer.post("/v1/leases", {"max_units": max_units, "workloads": workloads})
    assert status == 200, body
    return body["leases"]


def peer_in(client: TestClient, clock: Clock, name: str, version: str, percent: int, inside: bool) -> Peer:
    """A peer whose identity falls inside (or outside) `percent` of the rollout of `version`."""
    while True:
        peer = Peer(client, clock, "inside" if inside else "outside")
        if rollout.picks_candidate(peer.identity.public_hex, name, version, percent) == inside:
            return peer


# ---- publishing --------------------------------------------------------------------------


async def test_publish_is_accepted_stored_and_listed(coordinator: Coordinator, owner: Owner) -> None:
    upload = owner.build("demo", "1.0")
    status, body = await owner.publish(upload)
    assert status == 200, body
    info_hash = upload.signed.info_hash
    assert body == {
        "name": "demo",
        "owner_key": owner.identity.public_hex,
        "stable": "1.0",
        "candidate": None,
        "percent": 0,
        "state": "stable",
        "message": "demo 1.0 published",
        "versions": [
            {
                "version": "1.0",
                "info_hash": info_hash,
                "published_at": START,
                "units_ok": 0,
                "units_failed": 0,
                "rolled_back": False,
            }
        ],
    }
    assert await get(coordinator.client, "/v1/bundles/demo") == (200, body)
    assert await get(coordinator.client, "/v1/bundles") == (200, {"bundles": [body]})
    assert await get(coordinator.client, "/v1/bundles/demo/1.0") == (
        200,
        {"name": "demo", "version": "1.0", "info_hash": info_hash, "manifest": upload.manifest, "seeds": []},
    )
    assert coordinator.stored_files() == ["demo/1.0/demo-1.0.tar", "demo/1.0/demo-1.0.torrent"]
    assert (coordinator.bundle_dir / "demo/1.0/demo-1.0.tar").read_bytes() == upload.archive

    coordinator.clock.advance(10)
    assert await owner.publish(upload) == (200, body)  # the same upload again changes nothing
    assert coordinator.stored_files() == ["demo/1.0/demo-1.0.tar", "demo/1.0/demo-1.0.torrent"]

    assert (await get(coordinator.client, "/v1/bundles/nothing"))[0] == 404
    status, missing = await get(coordinator.client, "/v1/bundles/demo/9.9")
    assert (status, missing["error"]["message"]) == (404, "bundle 'demo' has no version '9.9' on this coordinator")


async def test_an_upload_larger_than_other_bodies_is_accepted(coordinator: Coordinator, owner: Owner) -> None:
    upload = owner.build("big", "1.0", os.urandom(9 * 1024 * 1024))
    assert len(upload.body()) > 8 * 1024 * 1024
    status, body = await owner.publish(upload)
    assert (status, body["stable"]) == (200, "1.0")


async def assert_refused(
    coordinator: Coordinator, owner: Owner, upload: Upload, status: int, code: str, message: str
) -> None:
    before = coordinator.stored_files(), await coordinator.store.list_bundles()
    answer_status, body = await owner.publish(upload)
    assert (answer_status, body["error"]["code"]) == (status, code), body
    assert body["error"]["message"] == message
    assert (coordinator.stored_files(), await coordinator.store.list_bundles()) == before


async def test_unknown_owner_is_refused(coordinator: Coordinator, tmp_path: Path) -> None:
    stranger = Owner(coordinator.client, coordinator.clock, tmp_path / "stranger")
    key = stranger.identity.public_hex
    await assert_refused(
        coordinator,
        stranger,
        stranger.build("demo", "1.0"),
        403,
        "not_admitted",
        f"key {key[:16]}… is not admitted on this coordinator; to publish bundles it needs a role,"
        f" which the operator grants: osaas coordinator grant add NAME {key[:16]}… --role owner",
    )


async def test_an_owner_uploads_only_bundles_it_signed(coordinator: Coordinator, owner: Owner, tmp_path: Path) -> None:
    stranger = Owner(coordinator.client, coordinator.clock, tmp_path / "stranger")
    theirs = stranger.build("demo", "1.0")
    answer_status, body = await owner.publish(theirs, signer=owner.identity)
    assert (answer_status, body["error"]["code"]) == (403, "not_owner")
    assert body["error"]["message"] == (
        f"the bundle is signed by owner key {stranger.identity.public_hex[:16]}… but uploaded by key"
        f" {owner.identity.public_hex[:16]}…; upload it with the key that signed it"
    )
    assert coordinator.stored_files() == []


async def test_tampered_uploads_are_refused(coordinator: Coordinator, owner: Owner) -> None:
    upload = owner.build("demo", "1.0")
    signed = upload.signed
    forged = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    bad_signature = Upload(
        bundle.encode(
            bundle.SignedManifest(
                signed.manifest,
                signed.archive_sha256,
                signed.files,
                signed.owner_key,
                signed.info_hash,
                forged,
            )
        ),
        upload.archive,
    )
    await assert_refused(
        coordinator,
        owner,
        bad_signature,
        400,
        "invalid_bundle",
        "manifest of demo-1.0: signature does not match the owner key",
    )

    other_hash = bytes(range(20))
    wrong_hash = Upload(bundle.encode(bundle.with_info_hash(signed, other_hash, owner.identity)), upload.archive)
    await assert_refused(
        coordinator,
        owner,
        wrong_hash,
        400,
        "invalid_bundle",
        f"manifest names info-hash {other_hash.hex()} but the archive's torrent has {(signed.info_hash or b'').hex()}",
    )

    flipped = bytearray(upload.archive)
    flipped[600] ^= 0xFF
    status, body = await owner.publish(Upload(upload.manifest, bytes(flipped)))
    assert (status, body["error"]["code"]) == (400, "invalid_bundle")
    assert "sha256 does not match the manifest of demo-1.0" in body["error"]["message"]

    await assert_refused(
        coordinator,
        owner,
        Upload(b"\xc1garbage", upload.archive),
        400,
        "invalid_bundle",
        "manifest: body is not valid msgpack (FormatError)",
    )
    assert coordinator.stored_files() == []
    assert await get(coordinator.client, "/v1/bundles") == (200, {"bundles": []})


async def test_a_name_belongs_to_its_first_owner(coordinator: Coordinator, owner: Owner, tmp_path: Path) -> None:
    assert (await owner.publish(owner.build("demo", "1.0")))[0] == 200
    rival = Owner(coordinator.client, coordinator.clock, tmp_path / "rival")
    await coordinator.admit(rival, "rival")
    await assert_refused(
        coordinator,
        rival,
        rival.build("demo", "2.0"),
        403,
        "not_owner",
        f"bundle name 'demo' belongs to owner key {owner.identity.public_hex[:16]}…; "
        f"key {rival.identity.public_hex[:16]}… cannot publish it: choose another name",
    )


async def test_a_version_never_changes(coordinator: Coordinator, owner: Owner) -> None:
    first = owner.build("demo", "1.0")
    assert (await owner.publish(first))[0] == 200
    await assert_refused(
        coordinator,
        owner,
        owner.build("demo", "1.0", b"print('changed')\n"),
        409,
        "conflict",
        "demo 1.0 is already published with different content; versions never change: publish it as a new version",
    )
    assert (coordinator.bundle_dir / "demo/1.0/demo-1.0.tar").read_bytes() == first.archive


async def test_oversized_upload_is_refused_while_reading(coordinator: Coordinator, owner: Owner) -> None:
    chunk = b"\x00" * (1 << 20)

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(MAX_BUNDLE_UPLOAD // len(chunk) + 1):
            yield chunk

    # A stranger's upload is refused from its headers, before its body is read (it used to be
    # buffered whole, hundreds of MB, before anything was checked).
    async with coordinator.client.post("/v1/bundles", data=chunked(), headers=MSGPACK) as resp:
        status, body = resp.status, decode(await resp.read())
    assert (status, body["error"]["code"]) == (401, "unsigned")
    stranger = signed(coordinator.client, "POST", "/v1/bundles", key=Identity.generate())
    async with coordinator.client.post("/v1/bundles", data=chunked(), headers=stranger) as resp:
        status, body = resp.status, decode(await resp.read())
    assert (status, body["error"]["code"]) == (403, "not_admitted")
    # An owner's upload is read up to its limit, never further.
    headers = signed(coordinator.client, "POST", "/v1/bundles", key=owner.identity)
    async with coordinator.client.post("/v1/bundles", data=chunked(), headers=headers) as resp:
        status, body = resp.status, decode(await resp.read())
    limit = f"bundle upload is larger than this key's limit of {MAX_BUNDLE_UPLOAD} bytes"
    assert (status, body["error"]) == (413, {"code": "body_too_large", "message": limit})
    assert coordinator.stored_files() == []
    assert await get(coordinator.client, "/v1/health") == (
        200,
        {"ok": True, "store": "ok", "public_key": audience(coordinator.client)},
    )


async def test_publishing_needs_a_bundle_service(tmp_path: Path, clock: Clock, linkcheck: Linkcheck) -> None:
    store = SqlStore(tmp_path / "c.sqlite")
    app = make_app(store, clock=clock)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        await as_operator(store, clock())
        upload = Upload(linkcheck.manifest, linkcheck.archive)
        body = upload.body()
        async with client.post("/v1/bundles", data=body, headers=signed(client, "POST", "/v1/bundles", body)) as resp:
            assert (resp.status, decode(await resp.read())["error"]["code"]) == (503, "no_bundles")


# ---- jobs and leases -----------------------------------------------------------------------


async def test_jobs_name_published_bundles(coordinator: Coordinator, owner: Owner) -> None:
    status, body = await submit(coordinator.client, ["http://a.test/"])
    assert (status, body["error"]["message"]) == (
        400,
        "no bundle named 'demo' is published on this coordinator; publish it with `osaas bundle publish`",
    )
    await owner.publish(owner.build("demo", "1.0"))
    status, body = await submit(coordinator.client, ["http://a.test/"], version="2.0")
    assert (status, body["error"]["message"]) == (400, "bundle 'demo' has no version '2.0' on this coordinator")
    assert (await submit(coordinator.client, ["http://a.test/"], version="1.0"))[0] == 200
    assert (await submit(coordinator.client, ["http://a.test/"]))[0] == 200


async def test_leases_name_the_bundle_version(coordinator: Coordinator, linkcheck: Linkcheck) -> None:
    await add_linkcheck(coordinator.store, linkcheck)
    assert (await submit(coordinator.client, ["http://a.test/", "http://b.test/"], "linkcheck"))[0] == 200
    peer = Peer(coordinator.client, coordinator.clock)
    await peer.register()
    assert await lease(peer, ["something-else"]) == []
    (first,) = await lease(peer, ["linkcheck"])
    (second,) = await lease(peer, ["*"])
    expected = {"name": "linkcheck", "version": linkcheck.version, "info_hash": linkcheck.info_hash}
    assert first["bundle"] == second["bundle"] == expected
    assert first["workload"] == "linkcheck"


# ---- rollouts ------------------------------------------------------------------------------


async def two_versions(coordinator: Coordinator, owner: Owner) -> tuple[Upload, Upload]:
    one, two = owner.build("demo", "1.0"), owner.build("demo", "2.0", b"print('two')\n")
    assert (await owner.publish(one))[0] == 200
    coordinator.clock.advance(1)
    status, body = await owner.publish(two)
    assert (status, body["stable"], body["candidate"], [v["version"] for v in body["versions"]]) == (
        200,
        "1.0",
        None,
        ["1.0", "2.0"],
    )
    return one, two


async def test_a_pinned_job_runs_its_version(coordinator: Coordinator, owner: Owner) -> None:
    one, two = await two_versions(coordinator, owner)
    await submit(coordinator.client, ["http://pinned.test/"], version="2.0")
    await submit(coordinator.client, ["http://follows.test/"])
    peer = Peer(coordinator.client, coordinator.clock)
    await peer.register()
    pinned, follows = await lease(peer, ["demo"], max_units=2)
    assert (pinned["bundle"]["version"], pinned["bundle"]["info_hash"]) == ("2.0", two.signed.info_hash)
    assert (follows["bundle"]["version"], follows["bundle"]["info_hash"]) == ("1.0", one.signed.info_hash)


async def test_rollout_to_half_then_roll_back_on_failures(
    coordinator: Coordinator, owner: Owner, caplog: pytest.LogCaptureFixture
) -> None:
    await two_versions(coordinator, owner)
    status, body = await owner.rollout("demo", "2.0", 50)
    assert (status, body["candidate"], body["percent"], body["state"], body["message"]) == (
        200,
        "2.0",
        50,
        "rolling_out",
        "rolling out demo 2.0 to 50% of peers",
    )
    client, clock = coordinator.client, coordinator.clock
    inside, outside = peer_in(client, clock, "demo", "2.0", 50, True), peer_in(client, clock, "demo", "2.0", 50, False)
    await outside.register()
    await submit(client, ["http://site.test/a", "http://site.test/b"])  # one host: one peer at a time

    (unit,) = await lease(outside, ["demo"])
    assert unit["bundle"]["version"] == "1.0"
    ok = {"items": [item(u["url"], crawled=False) for u in unit["payload"]["items"]]}
    assert (await outside.post("/v1/reports", {**ref(unit), "exit_code": 0, "payload": ok, "bundle_version": "1.0"}))[
        0
    ] == 200

    # The outside peer falls quiet, so the host goes to the inside peer when it registers.
    clock.advance(PEER_QUIET_SECONDS + DEFAULT_MIN_DELAY)
    await inside.register()
    tried = []
    for n in range(rollout.MIN_UNITS):
        clock.advance(DEFAULT_MIN_DELAY)  # the host rests between units
        (unit,) = await lease(inside, ["demo"])
        assert unit["bundle"]["version"] == "2.0"
        tried.append(unit["unit_id"])
        with caplog.at_level(logging.WARNING, logger="coordinator.sql"):
            status, _ = await inside.post(
                "/v1/reports", {**ref(unit), "exit_code": 2, "error": "boom", "bundle_version": "2.0"}
            )
        assert status == 200
        state = (await get(client, "/v1/bundles/demo"))[1]
        assert state["state"] == ("rolled_back" if n == rollout.MIN_UNITS - 1 else "rolling_out")

    message = "rolled back demo 2.0: 5 of 5 units failed (100%) vs 0 of 1 (0%) for 1.0"
    assert (state["stable"], state["candidate"], state["percent"], state["message"]) == ("1.0", None, 0, message)
    assert [(v["version"], v["units_ok"], v["units_failed"]) for v in state["versions"]] == [
        ("1.0", 1, 0),
        ("2.0", 0, 5),
    ]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [message]
    clock.advance(DEFAULT_MIN_DELAY)
    (unit,) = await lease(inside, ["demo"])
    assert unit["bundle"]["version"] == "1.0"
    # The candidate's failures did not use up the unit's attempts (5 would have given it up):
    # the oldest unit failed every time and is handed out again, now with the stable version.
    assert tried == [unit["unit_id"]] * rollout.MIN_UNITS

    # Rolled back, 2.0 goes out again (or becomes stable) only when its owner insists.
    assert [v["rolled_back"] for v in state["versions"]] == [False, True]
    for percent in (50, 100):
        status, body = await owner.rollout("demo", "2.0", percent)
        assert (status, body["error"]["code"]) == (409, "conflict")
        assert body["error"]["message"] == (
            "demo 2.0 was rolled back by the coordinator (its units failed more often than 1.0's);"
            " roll it out again only with --force"
        )
    assert (await get(client, "/v1/bundles/demo"))[1] == state
    status, body = await owner.rollout("demo", "2.0", 50, force=True)
    assert (status, body["state"], body["candidate"]) == (200, "rolling_out", "2.0")
    assert [v["rolled_back"] for v in body["versions"]] == [False, False]


async def test_a_peer_naming_a_version_it_was_not_leased_cannot_roll_a_candidate_back(
    coordinator: Coordinator, owner: Owner, tmp_path: Path
) -> None:
    """The liar of issue 21: leased under the stable 1.0, it reported exit 2 naming the
    candidate 2.0, again and again; each report requeued the unit without an attempt and
    charged 2.0, until the good candidate was rolled back."""
    await two_versions(coordinator, owner)
    assert (await owner.rollout("demo", "2.0", 50))[0] == 200
    client, clock = coordinator.client, coordinator.clock
    liar = peer_in(client, clock, "demo", "2.0", 50, False)
    await liar.register()
    hosts = [f"http://site-{i}.test/" for i in range(rollout.MIN_UNITS + 1)]
    _, job = await submit(client, hosts)
    lied_on = set()
    for _ in range(reputation.MISREPORT_LIMIT):
        (unit,) = await lease(liar, ["demo"])
        assert unit["bundle"]["version"] == "1.0"
        status, body = await liar.post(
            "/v1/reports", {**ref(unit), "exit_code": 2, "error": "boom", "bundle_version": "2.0"}
        )
        assert (status, body["accepted"]) == (200, False)
        assert body["reason"] == f"report refused: it names version '2.0'; unit {unit['unit_id']} was leased with '1.0'"
        lied_on.add(unit["host"])  # and it leaves that website to others a while
    assert len(lied_on) == reputation.MISREPORT_LIMIT
    # Caught: quarantined, it gets no more work, and the operator sees why.
    assert await lease(liar, ["demo"]) == []
    (shown,) = await coordinator.store.peers_overview(0.0, 10)
    assert shown.quarantined == f"named a bundle version it was not leased {reputation.MISREPORT_LIMIT} times"
    state = (await get(client, "/v1/bundles/demo"))[1]
    # Nothing charged to either version: the candidate rolls on.
    assert (state["state"], state["candidate"]) == ("rolling_out", "2.0")
    assert [(v["version"], v["units_ok"], v["units_failed"]) for v in state["versions"]] == [
        ("1.0", 0, 0),
        ("2.0", 0, 0),
    ]
    # No attempt was used (3 would have given a unit up): an honest peer does them all.
    clock.advance(PEER_QUIET_SECONDS + DEFAULT_MIN_DELAY)
    honest = peer_in(client, clock, "demo", "2.0", 50, False)
    await honest.register()
    units = await lease(honest, ["demo"], max_units=len(hosts))
    assert len(units) == len(hosts)
    for unit in units:
        ok = {"items": [item(u["url"], crawled=False) for u in unit["payload"]["items"]]}
        report = {**ref(unit), "exit_code": 0, "payload": ok, "bundle_version": "1.0"}
        assert (await honest.post("/v1/reports", report))[1]["accepted"]
    assert (await get(client, f"/v1/jobs/{job['job_id']}"))[1]["state"] == "done"
    # The coordinator keeps the misreports against the liar's key, not the version's.
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:
        misreports = dict(conn.execute("SELECT id, misreports FROM peers").fetchall())
    conn.close()
    assert misreports == {liar.identity.public_hex: reputation.MISREPORT_LIMIT, honest.identity.public_hex: 0}


async def test_a_quarantined_peers_answers_are_done_again_by_others(coordinator: Coordinator, owner: Owner) -> None:
    await two_versions(coordinator, owner)
    client, clock = coordinator.client, coordinator.clock
    liar = peer_in(client, clock, "demo", "2.0", 50, False)
    await liar.register()
    hosts = [f"http://site-{i}.test/" for i in range(reputation.MISREPORT_LIMIT + 1)]
    _, job = await submit(client, hosts)
    # It answers one unit without fetching anything (all "ok", its version right): accepted ...
    (faked,) = await lease(liar, ["demo"])
    fabricated = {"items": [item(u["url"], crawled=False) for u in faked["payload"]["items"]]}
    report = {**ref(faked), "exit_code": 0, "payload": fabricated, "bundle_version": "1.0"}
    assert (await liar.post("/v1/reports", report))[1]["accepted"]
    assert (await get(client, f"/v1/jobs/{job['job_id']}"))[1]["items_done"] == 1
    # ... then is caught naming versions it was not leased.
    for _ in range(reputation.MISREPORT_LIMIT):
        (unit,) = await lease(liar, ["demo"])
        await liar.post("/v1/reports", {**ref(unit), "exit_code": 2, "error": "x", "bundle_version": "2.0"})
    status = (await get(client, f"/v1/jobs/{job['job_id']}"))[1]
    assert (status["state"], status["items_done"]) == ("running", 0)  # its answer is not believed
    clock.advance(PEER_QUIET_SECONDS + DEFAULT_MIN_DELAY)
    honest = peer_in(client, clock, "demo", "2.0", 50, False)
    await honest.register()
    units = await lease(honest, ["demo"], max_units=len(hosts))
    assert sorted(u["payload"]["items"][0]["url"] for u in units) == hosts
    for unit in units:
        broken = {"items": [item(u["url"], result="broken", crawled=False) for u in unit["payload"]["items"]]}
        report = {**ref(unit), "exit_code": 0, "payload": broken, "bundle_version": "1.0"}
        assert (await honest.post("/v1/reports", report))[1]["accepted"]
    status = (await get(client, f"/v1/jobs/{job['job_id']}"))[1]
    assert (status["state"], status["counts"]) == ("done", {"broken": len(hosts)})


def ref(unit: dict[str, Any]) -> dict[str, Any]:
    return {"unit_id": unit["unit_id"], "token": unit["token"]}


async def test_percent_100_completes_the_rollout(coordinator: Coordinator, owner: Owner) -> None:
    await two_versions(coordinator, owner)
    status, body = await owner.rollout("demo", "2.0", 100)
    assert (status, body["stable"], body["candidate"], body["percent"], body["state"], body["message"]) == (
        200,
        "2.0",
        None,
        0,
        "stable",
        "rolled out demo 2.0 to every peer",
    )
    peer = peer_in(coordinator.client, coordinator.clock, "demo", "2.0", 50, False)
    await peer.register()
    await submit(coordinator.client, ["http://a.test/"])
    (unit,) = await lease(peer, ["demo"])
    assert unit["bundle"]["version"] == "2.0"


async def test_only_the_owner_rolls_out(coordinator: Coordinator, owner: Owner) -> None:
    await two_versions(coordinator, owner)
    stranger = Identity.generate()
    status, body = await owner.rollout("demo", "2.0", 50, signer=stranger)
    assert (status, body["error"]["code"]) == (403, "not_admitted")
    intruder = Identity.generate()  # another owner: not this name's
    await coordinator.store.add_owner("intruder", intruder.public_hex, coordinator.clock())
    status, body = await owner.rollout("demo", "2.0", 50, signer=intruder)
    assert (status, body["error"]["code"]) == (403, "not_owner")
    assert body["error"]["message"] == (
        f"only the owner key {owner.identity.public_hex[:16]}… of 'demo' may roll it out; "
        f"this request is signed by {intruder.public_hex[:16]}…"
    )
    async with coordinator.client.post(
        "/v1/bundles/demo/rollout", data=encode({"version": "2.0", "percent": 50}), headers=MSGPACK
    ) as resp:
        assert (resp.status, decode(await resp.read())["error"]["code"]) == (401, "unsigned")
    status, body = await owner.rollout("demo", "3.0", 50)
    assert (status, body["error"]["message"]) == (404, "bundle 'demo' has no version '3.0'; publish it first")
    status, body = await owner.rollout("demo", "1.0", 50)
    assert (status, body["error"]["message"]) == (400, "demo 1.0 is already the stable version")
    status, body = await owner.rollout("demo", "2.0", 0)
    assert status == 400
    assert (await get(coordinator.client, "/v1/bundles/demo"))[1]["state"] == "stable"


# ---- migration -------------------------------------------------------------------------------


async def test_a_schema_1_database_is_migrated(tmp_path: Path, linkcheck: Linkcheck) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # what osaas with schema 1 left behind: a job half done
        conn.executescript(SCHEMA + "PRAGMA user_version=1;")
        conn.execute(
            "INSERT INTO jobs (id, workload, input, state, created_at, unit_size)"
            " VALUES (1, 'linkcheck', ?, 'running', 1.0, 100)",
            (encode({"urls": ["http://a.test/"], "depth": 0}),),
        )
        conn.execute("INSERT INTO units (id, job_id, unit_key, state) VALUES (1, 1, 'http://a.test', 'queued')")
        conn.execute(
            "INSERT INTO items (job_id, url, unit_key, depth, crawl, unit_id)"
            " VALUES (1, 'http://a.test/', 'http://a.test', 0, 1, 1)"
        )
    conn.close()
    async with SqlStore(path) as store:
        status = await store.job_status(1)
        assert (status.workload, status.state, status.units_total, status.items_total) == ("linkcheck", "running", 1, 1)
        await add_linkcheck(store, linkcheck)
        await store.register_peer("p", RegisterRequest("p", 1, ["linkcheck"]), START)
        (unit,) = await store.lease("p", 1, ["linkcheck"], START, LEASE_SECONDS)
        assert unit.job_id == 1
        assert unit.bundle == BundleRef("linkcheck", linkcheck.version, linkcheck.info_hash)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("SELECT bundle_version FROM jobs").fetchall() == [(None,)]
    conn.close()
    async with SqlStore(path) as store:  # opening again migrates nothing and keeps everything
        assert [b.name for b in await store.list_bundles()] == ["linkcheck"]


async def test_publishing_and_rolling_out_by_every_role(coordinator: Coordinator, tmp_path: Path) -> None:
    store = coordinator.store
    expected = {
        "operator": (200, None),
        "owner": (200, None),
        "viewer": (403, "role_needed"),
        None: (403, "not_admitted"),
    }
    keys: dict[str | None, Owner] = {}
    for role, (status, code) in expected.items():
        who = keys[role] = Owner(coordinator.client, coordinator.clock, tmp_path / str(role))
        if role is not None:
            await store.grant(f"{role} key", who.identity.public_hex, role, "operator", coordinator.clock())
        answer_status, body = await who.publish(who.build(f"by-{role}".lower(), "1.0"))
        assert (answer_status, None if answer_status == 200 else body["error"]["code"]) == (status, code), role
        if answer_status == 200:
            assert (await who.publish(who.build(f"by-{role}".lower(), "2.0")))[0] == 200
            assert (await who.rollout(f"by-{role}".lower(), "2.0", 50))[0] == 200
    status, body = await keys["viewer"].rollout("by-owner", "2.0", 100)
    assert (status, body["error"]["code"]) == (403, "role_needed")
