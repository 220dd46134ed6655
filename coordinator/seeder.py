"""The coordinator's bundles on disk and in the swarm: accepting an owner's upload, keeping it,
seeding it over BitTorrent and announcing it in the DHT.

`BundleService.publish` is the one path every bundle takes, the built-in bundles
included. It checks an upload the way a peer will check what it fetches (signature, archive
hash, every file, unsafe entries: a trial `workloads.bundle.unpack`), and that the archive's
torrent has the info-hash the owner signed, before the store records anything: the coordinator
never seeds what peers would refuse. Files live at

    bundle_dir/NAME/VERSION/NAME-VERSION.tar       the archive, seeded as is
    bundle_dir/NAME/VERSION/NAME-VERSION.torrent   its .torrent, so restarts need not hash it again
    bundle_dir/incoming/                           uploads being checked (temp dirs)
    bundle_dir/builtin/                            scratch space where `serve` builds the built-in bundle

`BundleSeeder` owns one `TorrentSession` and, with a DHT node, announces every name it seeds as
a `BundleAnnouncement` under `bundle_key(network, name)` and itself as a member of the swarm of
each version (`overlay.swarm`, as every peer that holds a bundle does), re-published every third
of the records' lifetime and withdrawn on a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from coordinator.store import NotOwner, PublishedBundle, Store, StoreError, unknown_owner
from overlay import records
from overlay.announcements import BundleAnnouncement, bundle_key
from overlay.dht import DhtNode
from overlay.identity import Identity
from overlay.origin.server import OriginSeeder
from overlay.swarm import SwarmMembership, is_unspecified
from overlay.torrent import (
    Address,
    TorrentError,
    TorrentSession,
    TransferStats,
    info_hash_of,
    make_torrent,
    payload_size,
)
from overlay.wire import BundleStatus, SwarmAddress
from workloads import bundle
from workloads.bundle import BundleError

log = logging.getLogger(__name__)

RECORD_TTL = 600.0
WITHDRAWAL_TTL = 60.0
# BundleAnnouncement carries at most this many versions of a name: the newest ones.
MAX_ANNOUNCED_VERSIONS = 8
# The coordinator is the origin of every swarm: it sends each piece to one peer at a time
# (super-seeding) and serves few peers at once, so fetchers trade most pieces among themselves
# and the coordinator uploads little more than one copy however many peers fetch.
# bench/bundle_swarm.py measures the effect.
ORIGIN_UPLOAD_SLOTS = 4
# Super-seeding reveals one piece at a time, which adds some 10-20 s to the first fetch of a
# small bundle by a few peers (a 40 kB bundle to 3 peers: 11.2 s instead of 2.2 s). Below this
# size, sending a few extra copies costs the coordinator less than the wait costs everyone.
SUPER_SEED_FROM = 4 * 1024 * 1024  # bytes of archive
INCOMING_DIR = "incoming"
SYNC_SECONDS = 15.0  # how often the versions other coordinators of the store published are looked for
BUILTIN_DIR = "builtin"
# Bundle names that would land on the service's own directories, or outside bundle_dir.
_RESERVED_NAMES = frozenset({".", "..", INCOMING_DIR, BUILTIN_DIR})


class BundleSeeder:
    """Seeds bundle archives from one torrent session; announces them when given a DHT node.

    `announce_host` is the address other machines reach the session at (default: its listen
    host); a session listening on every address with no announce host seeds but is not
    announced as a swarm member, since "0.0.0.0" means nothing to anyone else.
    `public_address` (an IP and, behind a NAT that forwards another port, that port) wins over
    both: it is what the swarm records name and what peers are told to fetch from. Archives of
    `super_seed_from` bytes or more are super-seeded (bench/net_swarm.py compares both ways).
    `own_origin` (what `coordinator serve` uses unless told `--origin libtorrent`) seeds with
    `overlay.origin` instead of libtorrent: our own seed,
    which reveals pieces to fetchers as `overlay.origin.reveal` says.
    """

    def __init__(
        self,
        listen: Address,
        *,
        identity: Identity,
        state_dir: Path,
        upload_rate: int | None = None,
        dht: DhtNode | None = None,
        network: str = "public",
        announce_host: str | None = None,
        public_address: tuple[str, int | None] | None = None,
        ttl: float = RECORD_TTL,
        clock: Callable[[], float] = time.time,
        super_seed_from: int = SUPER_SEED_FROM,
        own_origin: bool = False,
    ) -> None:
        self._super_seed_from = super_seed_from
        self._session: TorrentSession | OriginSeeder
        if own_origin:
            self._session = OriginSeeder(listen, upload_rate=upload_rate, state_dir=state_dir)
        else:
            self._session = TorrentSession(
                listen, upload_rate=upload_rate, upload_slots=ORIGIN_UPLOAD_SLOTS, state_dir=state_dir
            )
        self._listen_host = listen[0]
        self._public = public_address
        self._identity = identity
        self._dht = dht
        self._network = network
        self._swarm = SwarmMembership(
            self._session,
            identity,
            dht=dht,
            host=public_address[0] if public_address else announce_host or listen[0],
            port=public_address[1] if public_address else None,
            ttl=ttl,
            withdrawal_ttl=WITHDRAWAL_TTL,
            clock=clock,
        )
        self._ttl = ttl
        self._clock = clock
        self._seeding: dict[bytes, PublishedBundle] = {}
        self._announced: set[str] = set()  # DHT keys of the bundle announcements, to withdraw
        self._changed = asyncio.Event()
        self._announcing: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BundleSeeder:
        await self._session.__aenter__()
        if self._dht is not None:
            self._announcing = asyncio.create_task(self._announce_forever(), name="bundle announcements")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._announcing is not None:
            self._announcing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcing
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.withdraw(), timeout=5.0)
        await self._session.close()

    @property
    def listen_port(self) -> int:
        return self._session.listen_port

    def address(self, request_host: str) -> SwarmAddress:
        """Where peers fetch from: the public address, else the listen address, or for a
        session listening on every address, the host the peer's HTTP request came to (it
        reached us there)."""
        if self._public is not None:
            host, port = self._public
            return SwarmAddress(host, port or self.listen_port)
        host = request_host if is_unspecified(self._listen_host) else self._listen_host
        return SwarmAddress(host, self.listen_port)

    def is_seeding(self, info_hash: bytes) -> bool:
        return info_hash in self._seeding

    async def seed(self, published: PublishedBundle, archive_dir: Path, torrent_bytes: bytes) -> None:
        """Seed a version whose archive is in `archive_dir`, after libtorrent checked every piece."""
        if self.is_seeding(published.info_hash):
            return
        if isinstance(self._session, OriginSeeder):
            await self._session.seed(torrent_bytes, archive_dir)
        else:
            super_seed = payload_size(torrent_bytes) >= self._super_seed_from
            await self._session.seed(torrent_bytes, archive_dir, super_seed=super_seed)
        self._seeding[published.info_hash] = published
        self._changed.set()

    def stats(self, info_hash: bytes) -> TransferStats:
        """Transfer figures of one seeded version (its upload, peers connected)."""
        return self._session.stats(info_hash)

    # -- announcing --

    def _bundle_announcements(self) -> list[tuple[str, dict[str, object]]]:
        """(DHT key, payload) of the announcement of each name seeded now: its newest versions."""
        by_name: dict[str, list[PublishedBundle]] = {}
        for published in self._seeding.values():
            by_name.setdefault(published.name, []).append(published)
        found: list[tuple[str, dict[str, object]]] = []
        me = self._identity.public_hex
        for name, versions in sorted(by_name.items()):
            newest = sorted(versions, key=lambda p: p.published_at)[-MAX_ANNOUNCED_VERSIONS:]
            pairs = tuple((p.version, p.info_hash) for p in newest)
            found.append((bundle_key(self._network, name), BundleAnnouncement(me, name, pairs).payload()))
        return found

    def _swarms(self) -> list[bytes]:
        """The info-hashes whose swarm this seeder announces itself in now."""
        return sorted(self._seeding) if self._swarm.can_announce else []

    def _record_count(self) -> int:
        return len(self._bundle_announcements()) + len(self._swarms())

    async def announce_once(self) -> int:
        """Publish every record once; how many of them at least one DHT node stored."""
        assert self._dht is not None, "announcing needs a DHT node"
        now = self._clock()
        announcements = self._bundle_announcements()
        swarms = self._swarms()
        stored = await asyncio.gather(
            *(
                self._dht.publish(key, records.sign(self._identity, key, payload, now, self._ttl))
                for key, payload in announcements
            ),
            *(self._swarm.announce(info_hash) for info_hash in swarms),
        )
        self._announced.update(key for key, _ in announcements)
        published = sum(1 for count in stored if count)
        if (announcements or swarms) and not published:
            log.info("bundle announcements reached no other DHT node yet (will retry)")
        return published

    async def _announce_forever(self) -> None:
        if not self._swarm.can_announce:
            log.warning(
                "bundle seeds are not announced in the DHT: the torrent session listens on %s; "
                "give the coordinator a public URL",
                self._swarm.host,
            )
        while True:
            self._changed.clear()
            try:
                announced_all = await self.announce_once() == self._record_count()
            except Exception:  # a failed round must not end announcing
                log.exception("announcing bundles failed")
                announced_all = False
            interval = self._ttl / 3 if announced_all else min(5.0, self._ttl / 3)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), interval)

    async def withdraw(self) -> None:
        assert self._dht is not None, "withdrawing needs a DHT node"
        now = self._clock()
        keys = sorted(self._announced)
        _, swarms = await asyncio.gather(
            asyncio.gather(
                *(self._dht.publish(key, records.withdrawal(self._identity, key, now, WITHDRAWAL_TTL)) for key in keys)
            ),
            self._swarm.withdraw_all(),
        )
        log.info("withdrew %d bundle announcements", len(keys) + swarms)


class BundleService:
    """What the API needs for bundles beyond the store: the directory archives are kept in and
    the seeder (None: publish and keep, but seed nothing, e.g. in API tests)."""

    def __init__(self, bundle_dir: Path, seeder: BundleSeeder | None = None) -> None:
        self._dir = bundle_dir
        self._seeder = seeder

    def seeds(self, request_host: str) -> list[SwarmAddress]:
        return [] if self._seeder is None else [self._seeder.address(request_host)]

    def archive_dir(self, name: str, version: str) -> Path:
        return self._dir / name / version

    async def start(self, store: Store) -> None:
        """Seed every version the store holds: what the last run published, and what other
        coordinators of the same database published (their archives come from the store)."""
        if self._seeder is None:
            return
        for published in await store.published_bundles():
            if self._seeder.is_seeding(published.info_hash):
                continue
            try:
                await self._bring(store, published)
                await self._seed(published)
            except (OSError, TorrentError, BundleError) as exc:
                log.warning("cannot seed %s %s: %s; publish it again", published.name, published.version, exc)

    async def keep_seeding(self, store: Store, every: float = SYNC_SECONDS) -> None:
        """Seed, every `every` seconds, the versions published since (at another coordinator
        of the same database); until cancelled."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.start(store)
            except StoreError as exc:
                log.warning("cannot list the published bundles: %s", exc)

    async def _bring(self, store: Store, published: PublishedBundle) -> None:
        """Fetch the version's archive from the store when it is not here (another coordinator
        of the same database published it), checked as an upload is."""
        name, version = published.name, published.version
        if self._archive_path(name, version).exists():
            return
        archive = await store.bundle_archive(name, version)
        if archive is None:
            raise BundleError("its archive is neither here nor in the store")
        signed = bundle.decode(published.manifest)
        incoming = await asyncio.to_thread(self._receive, signed, archive)
        try:
            await asyncio.to_thread(self._keep, incoming, signed, False)
        finally:
            await asyncio.to_thread(shutil.rmtree, incoming, True)
        log.info("bundle %s %s brought from the store", name, version)

    async def share_archives(self, store: Store) -> int:
        """Keep every published version's archive found here in the store, for the other
        coordinators of a shared database (`osaas coordinator migrate`: a SQLite file kept none).
        How many were there."""
        shared = 0
        for published in await store.published_bundles():
            path = self._archive_path(published.name, published.version)
            if path.exists():
                await store.keep_archive(published.name, published.version, await asyncio.to_thread(path.read_bytes))
                shared += 1
        return shared

    def _archive_path(self, name: str, version: str) -> Path:
        return self.archive_dir(name, version) / f"{name}-{version}.tar"

    async def _seed(self, published: PublishedBundle) -> None:
        if self._seeder is None or self._seeder.is_seeding(published.info_hash):
            return
        directory = self.archive_dir(published.name, published.version)
        torrent_bytes = (directory / f"{published.name}-{published.version}.torrent").read_bytes()
        await self._seeder.seed(published, directory, torrent_bytes)

    async def publish(
        self,
        store: Store,
        manifest: bytes,
        archive: bytes,
        now: float,
        *,
        stable: bool = False,
        uploader: str | None = None,
    ) -> BundleStatus:
        """Check, keep, record and seed one uploaded version; the name's status after it.
        `uploader`: the key that signed the upload request, which must have signed the bundle.

        Refusals: `BundleError` (the upload is malformed, tampered with or unsafe), and the
        store's `UnknownOwner`, `NotOwner` and `Conflict`. Nothing is stored for a refusal.
        """
        signed = bundle.decode(manifest)
        bundle.verify_manifest(signed)
        owner_key = signed.owner_key.hex()
        if uploader is not None and uploader != owner_key:
            raise NotOwner(
                f"the bundle is signed by owner key {owner_key[:16]}… but uploaded by key {uploader[:16]}…;"
                " upload it with the key that signed it"
            )
        if not await store.is_owner_key(owner_key):
            raise unknown_owner(owner_key)
        name, version = signed.manifest.name, signed.manifest.version
        if name in _RESERVED_NAMES:
            raise BundleError(f"bundle name {name!r} is reserved on this coordinator; choose another name")
        if signed.info_hash is None or len(signed.info_hash) != 20:
            raise BundleError("manifest names no v1 info-hash; build the bundle with `osaas bundle build`")
        incoming = await asyncio.to_thread(self._receive, signed, archive)
        try:
            published = PublishedBundle(
                name, version, owner_key, signed.info_hash, signed.archive_sha256, manifest, now
            )
            new = await store.add_bundle(published, stable=stable)
            await store.keep_archive(name, version, archive)
            await asyncio.to_thread(self._keep, incoming, signed, new)
        finally:
            await asyncio.to_thread(shutil.rmtree, incoming, True)
        await self._seed(published)
        return await store.bundle_status(name)

    def _receive(self, signed: bundle.SignedManifest, archive: bytes) -> Path:
        """Write the archive into a temp dir and check it fully; the dir holds the archive and
        its .torrent when it passed. Blocks: runs in a thread."""
        root = self._dir / INCOMING_DIR
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{signed.manifest.stem}.", dir=root))
        try:
            # The torrent names the file, so the archive must carry its final name to hash alike.
            archive_path = tmp / f"{signed.manifest.stem}.tar"
            archive_path.write_bytes(archive)
            bundle.unpack(archive_path, signed, tmp / "trial")
            shutil.rmtree(tmp / "trial")
            try:
                torrent_bytes = make_torrent(archive_path)
            except TorrentError as exc:
                raise BundleError(f"{signed.manifest.stem}: {exc}") from None
            actual = info_hash_of(torrent_bytes)
            if actual != signed.info_hash:
                assert signed.info_hash is not None
                raise BundleError(
                    f"manifest names info-hash {signed.info_hash.hex()} but the archive's torrent has {actual.hex()}"
                )
            (tmp / f"{signed.manifest.stem}.torrent").write_bytes(torrent_bytes)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp

    def _keep(self, incoming: Path, signed: bundle.SignedManifest, new: bool) -> None:
        """Move a checked upload into place. A re-publish of the same version only fills in
        files that went missing: the ones in place may be seeding right now."""
        target = self.archive_dir(signed.manifest.name, signed.manifest.version)
        target.mkdir(parents=True, exist_ok=True)
        for suffix in (".tar", ".torrent"):
            path = target / f"{signed.manifest.stem}{suffix}"
            if new or not path.exists():
                os.replace(incoming / path.name, path)
