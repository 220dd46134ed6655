"""Shared parts for coordinator tests: an injected clock, a real store (SQLite, and PostgreSQL
for the API suite), a real server,
a peer that signs its requests, and the real link-check bundle (built once per session)."""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator import host_planning
from coordinator.api import make_app
from coordinator.edge import CLOCK, IDENTITY
from coordinator.host_pacing import DEFAULT_MIN_DELAY
from coordinator.rate_limits import Rate, RateLimits, Route
from coordinator.sql import SqlStore
from coordinator.store import PublishedBundle, Store
from overlay.identity import Identity
from overlay.wire import CONTENT_TYPE, Lease, decode, encode, sign_request
from tests import postgres
from workloads import bundle
from workloads.builtin import build_linkcheck
from workloads.bundle import BuiltBundle

START = 1_700_000_000.0
LEASE_SECONDS = 60.0
MSGPACK = {"Content-Type": CONTENT_TYPE}  # what every program talking to the API sends with a body
# The `client` fixture's limits, out of the way: its clock stands still, so hostile tests that
# send hundreds of requests would meet the defaults and be refused before they are parsed.
# The limits themselves are tested by coordinators of their own (test_api_limits.py).
UNLIMITED = RateLimits({r: Rate(1e6, 10**6) for r in Route}, {r: Rate(1e6, 10**6) for r in Route})


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Peer:
    """A volunteer peer as the coordinator sees it: signed msgpack POSTs."""

    def __init__(self, client: TestClient, clock: Clock, name: str = "peer") -> None:
        self.client = client
        self.clock = clock
        self.identity = Identity.generate()
        self.name = name

    async def post(self, path: str, obj: Any) -> tuple[int, Any]:
        body = encode(obj)
        headers = sign_request(self.identity, "POST", path, body, self.clock(), audience(self.client))
        headers["Content-Type"] = CONTENT_TYPE
        async with self.client.post(path, data=body, headers=headers) as resp:
            return resp.status, decode(await resp.read())

    async def register(self, slots: int = 4, workloads: tuple[str, ...] = ("*",)) -> None:
        """Register as `osaas peer run` does: ready to run any bundle the coordinator names."""
        body = {"name": self.name, "slots": slots, "workloads": list(workloads)}
        status, body = await self.post("/v1/peers/register", body)
        assert status == 200, body

    async def lease(self, max_units: int = 1) -> list[dict[str, Any]]:
        status, body = await self.post("/v1/leases", {"max_units": max_units, "workloads": ["linkcheck"]})
        assert status == 200, body
        return body["leases"]

    async def report(
        self, lease: dict[str, Any], exit_code: int = 0, payload: Any = None, error: str | None = None
    ) -> tuple[int, Any]:
        return await self.post(
            "/v1/reports",
            {
                "unit_id": lease["unit_id"],
                "token": lease["token"],
                "exit_code": exit_code,
                "payload": payload,
                "error": error,
                # What `osaas peer run` sends: the version it was leased (coordinators refuse others).
                "bundle_version": version_of(lease),
            },
        )


def version_of(lease: Lease | dict[str, Any]) -> str | None:
    """The bundle version a lease (or a lease as the API sent it) names: what `osaas peer run`
    reports it ran (a report naming another is refused)."""
    if isinstance(lease, dict):
        return (lease.get("bundle") or {}).get("version")
    return lease.bundle.version if lease.bundle is not None else None


def item(url: str, links: list[str] | tuple[str, ...] = (), result: str = "ok", crawled: bool = True) -> dict[str, Any]:
    """One link-check result item as the workload reports it."""
    return {
        "url": url,
        "result": result,
        "status": 200 if result == "ok" else None,
        "final_url": url,
        "redirects": [],
        "error": None if result == "ok" else f"{result} for test",
        "links": list(links),
        "crawled": crawled,
    }


# The operator of every coordinator these tests serve (granted by `as_operator`); owner
# requests are signed by it unless a test signs as someone else.
OPERATOR_KEY = Identity.generate()


async def as_operator(store: Store, now: float = START) -> None:
    await store.grant("operator", OPERATOR_KEY.public_hex, "operator", "operator", now)


def audience(client: TestClient) -> str:
    """The key of the coordinator behind `client`: what signed requests to it name."""
    app = client.app
    assert app is not None
    return app[IDENTITY].public_hex


def signed(
    client: TestClient, method: str, path: str, body: bytes = b"", key: Identity = OPERATOR_KEY
) -> dict[str, str]:
    """Headers of a request signed by `key` for the coordinator behind `client`, at its clock."""
    app = client.app
    assert app is not None
    return sign_request(key, method, path.split("?", 1)[0], body, app[CLOCK](), audience(client)) | MSGPACK


async def get(client: TestClient, path: str, key: Identity | None = OPERATOR_KEY) -> tuple[int, Any]:
    """GET `path`, signed by `key` (None: unsigned)."""
    headers = {} if key is None else signed(client, "GET", path, key=key)
    async with client.get(path, headers=headers) as resp:
        assert resp.content_type == CONTENT_TYPE
        return resp.status, decode(await resp.read())


async def post(client: TestClient, path: str, obj: Any, key: Identity = OPERATOR_KEY) -> tuple[int, Any]:
    """POST `obj` to `path`, signed by `key`."""
    body = encode(obj)
    async with client.post(path, data=body, headers=signed(client, "POST", path, body, key)) as resp:
        return resp.status, decode(await resp.read())


async def submit(client: TestClient, urls: list[str], depth: int | None = None, key: Identity = OPERATOR_KEY) -> int:
    status, body = await post(
        client, "/v1/jobs", {"workload": "linkcheck", "input": {"urls": urls, "depth": depth}}, key
    )
    assert status == 200, body
    return body["job_id"]


class Linkcheck:
    """The real link-check bundle, built once per session, and the owner key that signed it."""

    def __init__(self, owner: Identity, built: BuiltBundle) -> None:
        self.owner = owner
        self.built = built
        self.manifest = built.manifest_path.read_bytes()
        self.archive = built.archive_path.read_bytes()

    @property
    def version(self) -> str:
        return self.built.signed.manifest.version

    @property
    def info_hash(self) -> bytes:
        assert self.built.signed.info_hash is not None
        return self.built.signed.info_hash

    def published(self, now: float = START) -> PublishedBundle:
        signed = self.built.signed
        return PublishedBundle(
            "linkcheck", self.version, self.owner.public_hex, self.info_hash, signed.archive_sha256, self.manifest, now
        )


@pytest.fixture(scope="session")
def linkcheck(tmp_path_factory: pytest.TempPathFactory) -> Linkcheck:
    owner = Identity.generate()
    return Linkcheck(owner, build_linkcheck(owner, tmp_path_factory.mktemp("linkcheck-bundle")))


async def add_linkcheck(store: Store, linkcheck: Linkcheck, now: float = START) -> None:
    """Publish the link-check bundle in `store` (its owner admitted first), as a coordinator's
    start does, so that link-check jobs can be created."""
    await store.add_owner("linkcheck-owner", linkcheck.owner.public_hex, now)
    await store.add_bundle(linkcheck.published(now))


async def publish_source(
    store: Store, source: Path, out: Path, now: float = START, owner: Identity | None = None
) -> BuiltBundle:
    """Build the bundle in `source` with its owner's key (a new owner's, admitted), and publish
    it in `store`, as an owner and operator would."""
    if owner is None:
        owner = Identity.generate()
        await store.add_owner(f"owner-{owner.public_hex[:8]}", owner.public_hex, now)
    built = bundle.build(source, owner, out)
    signed = built.signed
    assert signed.info_hash is not None
    name, version = signed.manifest.name, signed.manifest.version
    manifest = built.manifest_path.read_bytes()
    await store.add_bundle(
        PublishedBundle(name, version, owner.public_hex, signed.info_hash, signed.archive_sha256, manifest, now)
    )
    return built


FINGERPRINT_MANIFEST = """name = "fingerprint"
version = "1.0.0"
entrypoint = ["python3", "-m", "fingerprint"]
capabilities = ["fetch"]

[job]
input = "urls"

[results.fields]
url = "str"
status = "int?"
length = "int"
sha256 = "str?"
"""


async def publish_fingerprint(
    store: Store, root: Path, now: float = START, manifest: str = FINGERPRINT_MANIFEST, owner: Identity | None = None
) -> BuiltBundle:
    """A page-fingerprint bundle (per URL: status, length, sha256), published in `store`; its
    code is never run here."""
    source = root / f"fingerprint-source-{len(list(root.glob('fingerprint-source-*')))}"
    (source / "fingerprint").mkdir(parents=True)
    (source / "bundle.toml").write_text(manifest)
    (source / "fingerprint" / "__main__.py").write_text("raise SystemExit(2)\n")
    return await publish_source(store, source, source.with_name(source.name + "-dist"), now, owner)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(autouse=True)
def _plans_never_held_back(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store under test plans whenever a plan is due: on a loaded machine a plan may take
    longer than CHEAP_PLAN of real time, and the store would then rest (host_planning.rested)
    while the test's clock stands still. Pacing is tested on its own (test_host_planning)."""
    if "db_path" in request.fixturenames:
        monkeypatch.setattr(host_planning, "CHEAP_PLAN", math.inf)


def query(db: Path | str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on a store's database, whichever engine keeps it."""
    if isinstance(db, str):
        with psycopg.connect(db) as pg:
            return pg.execute(sql.encode()).fetchall()
    with contextlib.closing(sqlite3.connect(db)) as lite:
        return lite.execute(sql).fetchall()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where the test's store keeps its data: a SQLite file, or an empty PostgreSQL database
    (the API suite runs against both stores)."""
    if request.param == "sqlite":
        return tmp_path / "coordinator.sqlite"
    cluster: postgres.Cluster = request.getfixturevalue("pg_cluster")
    return cluster.database()


@pytest.fixture
async def client(db_path: Path | str, clock: Clock, linkcheck: Linkcheck) -> AsyncIterator[TestClient]:
    store = SqlStore(db_path, unit_size=3, max_attempts=3)
    app = make_app(store, lease_seconds=LEASE_SECONDS, clock=clock, rate_limits=UNLIMITED)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        await add_linkcheck(store, linkcheck, clock())
        await as_operator(store, clock())
        yield test_client


@pytest.fixture
async def peer(client: TestClient, clock: Clock) -> Peer:
    p = Peer(client, clock, "alice")
    await p.register()
    return p


# A host rests this long after each unit before its next one (coordinator.host_pacing).
REST = DEFAULT_MIN_DELAY


def urls_of(lease: dict[str, Any]) -> list[str]:
    return [i["url"] for i in lease["payload"]["items"]]


async def results(client: TestClient, job_id: int) -> dict[str, dict[str, Any]]:
    """A link-check job's rows by URL, as the link checker reads them: an item the platform
    gave up on (`failed`) is an error with that reason (`workloads.linkcheck.report.items`)."""
    status, body = await get(client, f"/v1/jobs/{job_id}/results")
    assert status == 200
    assert body["columns"] == [
        "url",
        "result",
        "status",
        "final_url",
        "redirects",
        "error",
        "depth",
        "referrers",
        "more_referrers",
        "failed",
        "verdict",
        "answers",
    ]
    by_url = {r["url"]: as_linkcheck(r) for r in body["items"]}
    assert len(by_url) == len(body["items"]) == body["total"]
    return by_url


def as_linkcheck(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    assert isinstance(row.pop("done"), bool)
    # How sure the answer is (re-checks): None and no answers when one answer was enough.
    assert row.pop("verdict", None) in (None, "confirmed", "region-dependent", "outvoted", "disputed", "unconfirmed")
    assert isinstance(row.pop("answers", []), list)
    assert row.pop("more_referrers") == 0  # no item of these tests has 100 pages linking to it
    failed = row.pop("failed")
    if failed is not None:
        row.update(result="error", error=failed)
    return row
