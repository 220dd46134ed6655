"""The peer's bundle cache against real libtorrent sessions, DHT nodes and workload processes,
all on 127.0.0.1: bundles are built and signed for real, and hostile ones made by hand."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import os
import shutil
import sys
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from overlay.announcements import SwarmMember, swarm_key
from overlay.dht import DhtNode
from overlay.identity import Identity
from overlay.torrent import TorrentSession, info_hash_of, make_torrent
from overlay.wire import BundleInfo, BundleRef, SwarmAddress
from peer.bundles import BundleCache
from peer.ready import ReadyBundle
from peer.runner import NO_FETCH_CAPABILITY, run_workload
from workloads import bundle, process_api
from workloads.builtin import build_linkcheck
from workloads.bundle import BuiltBundle, BundleError, Manifest
from workloads.process_api import ExitCode, FetchError, FetchRequest, FetchResult, Unit

pytestmark = pytest.mark.swarm

HOST = "127.0.0.1"
OWNER = Identity.generate()
OTHER = Identity.generate()
SEED_UPLOAD_RATE = 300_000
SWARM_BYTES = 2 * 1024 * 1024
CACHES = 4
# Generous bounds so that a stall fails a test instead of hanging it; never asserted as speed.
FETCH_TIMEOUT = 60.0
STALL_TIMEOUT = 3.0

PROBE = """\
import sys

import probe
from workloads.process_api import FetchRequest, FetchResult, Result, Unit, encode_frame, read_frame_blocking

stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
unit = Unit.from_frame(read_frame_blocking(stdin))
answer = None
if "fetch" in unit.payload:
    stdout.write(encode_frame(FetchRequest(id=1, method="GET", url=unit.payload["fetch"]).to_frame()))
    stdout.flush()
    result = FetchResult.from_frame(read_frame_blocking(stdin))
    answer = {"status": result.status, "error": result.error, "message": result.message}
stdout.write(encode_frame(Result(0, {"file": probe.__file__, "answer": answer}).to_frame()))
stdout.flush()
"""


# ---- building and serving bundles ------------------------------------------------------


def _build(
    tmp_path: Path,
    name: str,
    version: str,
    *,
    owner: Identity = OWNER,
    entrypoint: str = '["python3", "-m", "probe"]',
    capabilities: str = "[]",
    data_bytes: int = 0,
) -> BuiltBundle:
    """A small bundle: the probe workload with its copy of the process API, optionally
    `data_bytes` of incompressible data, and an executable script and a plain file for
    entrypoint tests."""
    source = tmp_path / "src" / f"{name}-{version}"
    (source / "probe").mkdir(parents=True)
    (source / "workloads").mkdir()
    for module in ("__init__.py", "process_api.py"):
        shutil.copyfile(Path(process_api.__file__).with_name(module), source / "workloads" / module)
    (source / "probe" / "__init__.py").write_text("")
    (source / "probe" / "__main__.py").write_text(PROBE)
    (source / "bin").mkdir()
    (source / "bin" / "run").write_text("#!/bin/sh\nexit 0\n")
    (source / "bin" / "run").chmod(0o755)
    (source / "notes.txt").write_text("not a program\n")
    if data_bytes:
        (source / "data.bin").write_bytes(os.urandom(data_bytes))
    (source / "bundle.toml").write_text(
        f'name = "{name}"\nversion = "{version}"\nentrypoint = {entrypoint}\ncapabilities = {capabilities}\n'
    )
    return bundle.build(source, owner, tmp_path / "built" / f"{name}-{version}")


def _ref(built: BuiltBundle) -> BundleRef:
    manifest = built.signed.manifest
    assert built.signed.info_hash is not None
    return BundleRef(manifest.name, manifest.version, built.signed.info_hash)


def _info(built: BuiltBundle, seeds: list[TorrentSession], manifest: bytes | None = None) -> BundleInfo:
    ref = _ref(built)
    return BundleInfo(
        ref.name,
        ref.version,
        ref.info_hash,
        manifest if manifest is not None else built.manifest_path.read_bytes(),
        [SwarmAddress(HOST, seed.listen_port) for seed in seeds],
    )


async def _serve(seed: TorrentSession, built: BuiltBundle) -> None:
    await seed.seed(built.torrent_path.read_bytes(), built.archive_path.parent)


def _session(tmp_path: Path, name: str, upload_rate: int | None = None) -> TorrentSession:
    return TorrentSession((HOST, 0), state_dir=tmp_path / name / "torrent", upload_rate=upload_rate)


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


@pytest.fixture
async def seed(tmp_path: Path, stack: AsyncExitStack) -> TorrentSession:
    return await stack.enter_async_context(_session(tmp_path, "seed", upload_rate=SEED_UPLOAD_RATE))


CacheMaker = Callable[..., Awaitable[tuple[BundleCache, TorrentSession]]]


@pytest.fixture
def make_cache(tmp_path: Path, stack: AsyncExitStack) -> CacheMaker:
    """A started BundleCache on its own torrent session, both closed when the test ends."""

    async def make(name: str, **options: object) -> tuple[BundleCache, TorrentSession]:
        torrents = await stack.enter_async_context(_session(tmp_path, name))
        options.setdefault("identity", Identity.generate())
        options.setdefault("fetch_timeout", FETCH_TIMEOUT)
        cache = BundleCache(tmp_path / name / "bundles", torrents, **options)  # type: ignore[arg-type]
        await stack.enter_async_context(cache)
        return cache, torrents

    return make


def _assert_nothing_kept(cache: BundleCache, torrents: TorrentSession) -> None:
    assert list((cache.root / "unpacked").iterdir()) == []
    assert list((cache.root / "archives").iterdir()) == []
    assert torrents.torrents() == []


async def _run(ready: ReadyBundle, payload: dict, fetch=None):
    return await run_workload(
        ready.argv,
        Unit(unit_id=7, payload=payload),
        fetch,
        timeout=ready.timeout,
        limits=ready.limits,
        env=ready.env,
    )


# ---- fetching and sharing -----------------------------------------------------------------


async def test_caches_fetch_one_bundle_and_trade_pieces(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker
) -> None:
    built = _build(tmp_path, "swarm", "1.0", data_bytes=SWARM_BYTES)
    await _serve(seed, built)
    caches = [await make_cache(f"peer{i}") for i in range(CACHES)]

    readies = await asyncio.gather(*(cache.ensure(_ref(built), _info(built, [seed])) for cache, _ in caches))

    original = (tmp_path / "src" / "swarm-1.0" / "data.bin").read_bytes()
    for (cache, _), ready in zip(caches, readies, strict=True):
        assert ready.root == cache.root / "unpacked" / built.signed.archive_sha256.hex()
        assert (ready.root / "data.bin").read_bytes() == original
    info_hash = _ref(built).info_hash
    uploaded = [torrents.stats(info_hash).total_upload for _, torrents in caches]
    assert sum(uploaded) > 0, f"every piece came from the seed: caches uploaded {uploaded}"


async def test_concurrent_ensures_share_one_fetch(tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker) -> None:
    built = _build(tmp_path, "flight", "1.0", data_bytes=256 * 1024)
    await _serve(seed, built)
    cache, torrents = await make_cache("peer")
    # A second fetch of the same torrent would fail ("already in this session").
    readies = await asyncio.gather(*(cache.ensure(_ref(built), _info(built, [seed])) for _ in range(3)))
    assert len({ready.root for ready in readies}) == 1
    assert torrents.torrents() == [_ref(built).info_hash]


async def test_a_cache_finds_other_holders_in_the_dht(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker, stack: AsyncExitStack
) -> None:
    first = await stack.enter_async_context(DhtNode((HOST, 0)))
    node_a = await stack.enter_async_context(DhtNode((HOST, 0), [first.address]))
    node_b = await stack.enter_async_context(DhtNode((HOST, 0), [first.address]))
    built = _build(tmp_path, "dht", "1.0", data_bytes=128 * 1024)
    info_hash = _ref(built).info_hash
    await _serve(seed, built)
    a_identity = Identity.generate()
    cache_a, torrents_a = await make_cache("a", identity=a_identity, dht=node_a, announce_host=HOST)
    await cache_a.ensure(_ref(built), _info(built, [seed]))

    members = [SwarmMember.from_record(r) for r in await first.lookup(swarm_key(info_hash))]
    assert members == [SwarmMember(a_identity.public_hex, HOST, torrents_a.listen_port)]

    seed.remove(info_hash)  # only cache A holds it now, and the coordinator names no seed
    cache_b, torrents_b = await make_cache("b", dht=node_b, announce_host=HOST)
    ready = await cache_b.ensure(_ref(built), _info(built, []))
    assert (ready.root / "data.bin").is_file()
    # The seed had dropped the torrent and the coordinator named nobody: cache A sent it all.
    assert torrents_a.stats(info_hash).total_upload >= built.archive_path.stat().st_size


# ---- running what was fetched ---------------------------------------------------------------


async def _aiohttp_fetch(session: aiohttp.ClientSession, request: FetchRequest) -> FetchResult:
    try:
        async with session.request(request.method, request.url, allow_redirects=False) as response:
            body = await response.read() if request.want_body else b""
            headers = {name.lower(): value for name, value in response.headers.items()}
            return FetchResult(request.id, request.url, response.status, headers, body)
    except aiohttp.ClientError as exc:
        return FetchResult(request.id, request.url, error=FetchError.CONNECTION.value, message=str(exc))


async def test_the_linkcheck_bundle_runs_a_real_unit_from_the_cache(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker, stack: AsyncExitStack
) -> None:
    built = build_linkcheck(OWNER, tmp_path / "owner")
    await _serve(seed, built)
    cache, _ = await make_cache("peer")
    ready = await cache.ensure(_ref(built), _info(built, [seed]))

    # The peer's interpreter, isolated, started by peer/python_start.py on the bundle's own code.
    assert ready.argv[:3] == [sys.executable, "-I", "-c"]
    assert ready.argv[4] == str(ready.root) and ready.argv[-2:] == ["-m", "workloads.linkcheck"]
    assert ready.env == {"PYTHONPATH": str(ready.root)}
    assert ready.root.parent == cache.root / "unpacked"
    assert (ready.root / "workloads" / "linkcheck" / "__main__.py").is_file()
    assert ready.capabilities == frozenset({"fetch"})
    assert (ready.limits.memory_bytes, ready.timeout) == (1024 * 1024 * 1024, 600.0)

    async def home(_request: web.Request) -> web.Response:
        return web.Response(text="<p>home</p>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", home)
    runner = web.AppRunner(app)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    url = f"http://{HOST}:{runner.addresses[0][1]}/"
    session = await stack.enter_async_context(aiohttp.ClientSession())

    outcome = await _run(
        ready, {"job_id": 1, "items": [{"url": url, "crawl": False}]}, lambda r: _aiohttp_fetch(session, r)
    )
    assert outcome.exit_code is ExitCode.OK, outcome.error or outcome.stderr_tail
    assert outcome.payload is not None
    assert [(i["url"], i["result"], i["status"]) for i in outcome.payload["items"]] == [(url, "ok", 200)]

    refused = await _run(ready, {"job_id": 1, "items": []})
    assert refused.exit_code is ExitCode.BAD_INPUT


async def test_a_bundle_without_the_fetch_capability_gets_policy_answers(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker
) -> None:
    built = _build(tmp_path, "nofetch", "1.0")
    await _serve(seed, built)
    cache, _ = await make_cache("peer")
    ready = await cache.ensure(_ref(built), _info(built, [seed]))
    assert ready.capabilities == frozenset()

    outcome = await _run(ready, {"fetch": "http://example.org/"}, None)
    assert outcome.exit_code is ExitCode.OK, outcome.error or outcome.stderr_tail
    assert outcome.payload == {
        # The code that ran is the bundle's copy in the cache, not anything installed.
        "file": str(ready.root / "probe" / "__init__.py"),
        "answer": {"status": None, "error": FetchError.POLICY.value, "message": NO_FETCH_CAPABILITY},
    }


async def test_an_entrypoint_inside_the_bundle_runs_by_its_path(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker
) -> None:
    built = _build(tmp_path, "script", "1.0", entrypoint='["bin/run", "--flag"]')
    await _serve(seed, built)
    cache, _ = await make_cache("peer")
    ready = await cache.ensure(_ref(built), _info(built, [seed]))
    assert ready.argv == [str((ready.root / "bin" / "run").resolve()), "--flag"]


@pytest.mark.parametrize(
    ("program", "error"),
    [
        ("/bin/sh", "outside the bundle"),
        ("../../../../bin/sh", "outside the bundle"),
        ("sh", "not a file in the bundle"),
        ("notes.txt", "not an executable file"),
        ("bin", "not an executable file"),
    ],
)
async def test_an_entrypoint_that_is_no_program_of_the_bundle_is_refused(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker, program: str, error: str
) -> None:
    built = _build(tmp_path, "script", "1.0", entrypoint=f'["{program}"]')
    await _serve(seed, built)
    cache, torrents = await make_cache("peer")
    with pytest.raises(BundleError, match=error):
        await cache.ensure(_ref(built), _info(built, [seed]))
    _assert_nothing_kept(cache, torrents)


# ---- refusals ---------------------------------------------------------------------------------


async def test_an_archive_that_does_not_match_the_manifest_is_refused(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker, stack: AsyncExitStack
) -> None:
    first = await stack.enter_async_context(DhtNode((HOST, 0)))
    node = await stack.enter_async_context(DhtNode((HOST, 0), [first.address]))
    built = _build(tmp_path, "tamper", "1.0", data_bytes=64 * 1024)
    tampered = tmp_path / "tampered" / built.archive_path.name
    tampered.parent.mkdir()
    tampered.write_bytes(built.archive_path.read_bytes())
    _flip_byte(tampered, tampered.stat().st_size // 2)
    torrent = make_torrent(tampered)
    info_hash = info_hash_of(torrent)
    await seed.seed(torrent, tampered.parent)
    # Validly signed, naming the tampered file's torrent but the original archive's sha256.
    signed = bundle.sign(built.signed.manifest, built.signed.archive_sha256, built.signed.files, OWNER, info_hash)
    ref = BundleRef("tamper", "1.0", info_hash)
    info = BundleInfo("tamper", "1.0", info_hash, bundle.encode(signed), [SwarmAddress(HOST, seed.listen_port)])
    cache, torrents = await make_cache("peer", dht=node, announce_host=HOST)

    with pytest.raises(BundleError, match="sha256 does not match the manifest"):
        await cache.ensure(ref, info)
    _assert_nothing_kept(cache, torrents)
    # It announced itself when it began fetching, and withdrew when the archive was refused.
    assert await first.lookup(swarm_key(info_hash)) == []


async def test_a_seed_serving_corrupt_data_times_out_and_is_refused(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker
) -> None:
    built = _build(tmp_path, "corrupt", "1.0", data_bytes=64 * 1024)
    await _serve(seed, built)
    _flip_byte(built.archive_path, built.archive_path.stat().st_size // 2)  # after the seed's check
    cache, torrents = await make_cache("peer", fetch_timeout=STALL_TIMEOUT)

    with pytest.raises(BundleError, match="could not fetch bundle corrupt 1.0: "):
        await cache.ensure(_ref(built), _info(built, [seed]))
    _assert_nothing_kept(cache, torrents)


async def test_a_bad_signature_is_refused_before_fetching(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker
) -> None:
    built = _build(tmp_path, "signed", "1.0")
    await _serve(seed, built)
    signature = bytearray(built.signed.signature)
    signature[0] ^= 0xFF
    forged = bundle.encode(dataclasses.replace(built.signed, signature=bytes(signature)))
    cache, torrents = await make_cache("peer")

    with pytest.raises(BundleError, match="signature does not match the owner key"):
        await cache.ensure(_ref(built), _info(built, [seed], manifest=forged))
    _assert_nothing_kept(cache, torrents)
    assert seed.stats(_ref(built).info_hash).total_upload == 0


async def test_a_manifest_for_another_info_hash_is_refused(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker
) -> None:
    asked = _build(tmp_path, "asked", "1.0")
    other = _build(tmp_path, "asked", "1.0-other")
    await _serve(seed, asked)
    cache, torrents = await make_cache("peer")
    # The lease names one torrent; the coordinator's answer (manifest and all) is for another.
    lease = BundleRef("asked", "1.0", _ref(other).info_hash)

    with pytest.raises(BundleError, match="names [0-9a-f]{40}, but the lease names info-hash"):
        await cache.ensure(lease, _info(asked, [seed]))
    _assert_nothing_kept(cache, torrents)


async def test_a_bundle_signed_by_another_key_than_pinned_is_refused(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker
) -> None:
    mine = _build(tmp_path, "pinned", "1.0")
    theirs = _build(tmp_path, "pinned", "2.0", owner=OTHER)
    await _serve(seed, mine)
    await _serve(seed, theirs)
    cache, torrents = await make_cache("peer")
    kept = await cache.ensure(_ref(mine), _info(mine, [seed]))

    with pytest.raises(BundleError, match=f"bundle 'pinned' is signed by key {OTHER.public_hex[:16]}…, but pinned to"):
        await cache.ensure(_ref(theirs), _info(theirs, [seed]))
    assert list((cache.root / "unpacked").iterdir()) == [kept.root]
    assert torrents.torrents() == [_ref(mine).info_hash]


def _hostile_archive(path: Path, kind: str) -> dict[str, bytes]:
    """A tar with one good file and one hostile entry; the files its manifest may name."""
    code = b"print('hello')\n"
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        good = tarfile.TarInfo("probe.py")
        good.size = len(code)
        tar.addfile(good, io.BytesIO(code))
        if kind == "symlink":
            link = tarfile.TarInfo("passwd")
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            tar.addfile(link)
        else:
            escape = tarfile.TarInfo("../escaped.py")
            escape.size = len(code)
            tar.addfile(escape, io.BytesIO(code))
    return {"probe.py": hashlib.sha256(code).digest()}


@pytest.mark.parametrize(("kind", "error"), [("symlink", "refused, it is a symlink"), ("traversal", "contains '..'")])
async def test_an_archive_with_a_hostile_entry_is_refused_at_unpack(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker, kind: str, error: str
) -> None:
    archive = tmp_path / "hostile" / "hostile-1.0.tar"
    files = _hostile_archive(archive, kind)
    torrent = make_torrent(archive)
    info_hash = info_hash_of(torrent)
    await seed.seed(torrent, archive.parent)
    manifest = Manifest("hostile", "1.0", ("python3", "probe.py"))
    signed = bundle.sign(manifest, hashlib.sha256(archive.read_bytes()).digest(), files, OWNER, info_hash)
    info = BundleInfo("hostile", "1.0", info_hash, bundle.encode(signed), [SwarmAddress(HOST, seed.listen_port)])
    cache, torrents = await make_cache("peer")

    with pytest.raises(BundleError, match=error):
        await cache.ensure(BundleRef("hostile", "1.0", info_hash), info)
    _assert_nothing_kept(cache, torrents)
    assert not list(tmp_path.rglob("escaped.py"))


# ---- keeping and forgetting -------------------------------------------------------------------


async def test_only_the_most_recently_used_versions_are_kept(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker, stack: AsyncExitStack
) -> None:
    dht = await stack.enter_async_context(DhtNode((HOST, 0)))
    versions = [_build(tmp_path, "gc", version) for version in ("1.0", "2.0", "3.0")]
    for built in versions:
        await _serve(seed, built)
    identity = Identity.generate()
    cache, torrents = await make_cache("peer", identity=identity, dht=dht, announce_host=HOST, keep_versions=2)

    readies = [await cache.ensure(_ref(built), _info(built, [seed])) for built in versions]

    oldest, *kept = versions
    assert not readies[0].root.exists()
    assert not (cache.root / "archives" / _ref(oldest).info_hash.hex()).exists()
    assert sorted(torrents.torrents()) == sorted(_ref(b).info_hash for b in kept)
    assert sorted(p.name for p in (cache.root / "unpacked").iterdir()) == sorted(r.root.name for r in readies[1:])
    assert await dht.lookup(swarm_key(_ref(oldest).info_hash)) == []  # withdrawn
    assert [r.signer for r in await dht.lookup(swarm_key(_ref(kept[-1]).info_hash))] == [identity.public_key]


async def test_a_restarted_cache_seeds_what_it_kept(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker
) -> None:
    built = _build(tmp_path, "restart", "1.0", data_bytes=128 * 1024)
    info_hash = _ref(built).info_hash
    await _serve(seed, built)
    root = tmp_path / "peer" / "bundles"
    async with _session(tmp_path, "before") as torrents:
        async with BundleCache(root, torrents, identity=OWNER, fetch_timeout=FETCH_TIMEOUT) as cache:
            first = await cache.ensure(_ref(built), _info(built, [seed]))
    seed.remove(info_hash)

    cache, torrents = await make_cache("peer")  # the same root, a new session
    assert torrents.torrents() == [info_hash]
    again = await cache.ensure(_ref(built), _info(built, []))  # no seed needed: it is cached
    assert again.root == first.root

    async with _session(tmp_path, "newcomer") as newcomer:
        path = await newcomer.fetch(
            info_hash, tmp_path / "newcomer" / "data", [(HOST, torrents.listen_port)], timeout=FETCH_TIMEOUT
        )
        assert path.read_bytes() == built.archive_path.read_bytes()
        assert torrents.stats(info_hash).total_upload >= len(path.read_bytes())


async def test_a_restarted_cache_deletes_an_archive_that_no_longer_verifies(
    tmp_path: Path, seed: TorrentSession, make_cache: CacheMaker
) -> None:
    built = _build(tmp_path, "rotten", "1.0", data_bytes=64 * 1024)
    await _serve(seed, built)
    root = tmp_path / "peer" / "bundles"
    async with _session(tmp_path, "before") as torrents:
        async with BundleCache(root, torrents, identity=OWNER, fetch_timeout=FETCH_TIMEOUT) as cache:
            await cache.ensure(_ref(built), _info(built, [seed]))
    (cached,) = (root / "archives" / _ref(built).info_hash.hex() / "data").iterdir()
    _flip_byte(cached, 1000)

    cache, torrents = await make_cache("peer")
    _assert_nothing_kept(cache, torrents)
