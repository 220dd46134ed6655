"""The peer's bundle store: the only code that turns a coordinator's BundleInfo into something
it runs.

Layout under `root`:

    pins.msgpack                     owner key of each bundle name (workloads.bundle.KeyPins)
    pins/<coordinator key hex>.msgpack
                                     the same, per coordinator: bundle names are each
                                     coordinator's own (its operator admits owners, the first
                                     owner to publish a name owns it there)
    index.msgpack                    info-hash -> name, version, archive sha256, last use (for GC)
    archives/<info-hash hex>/data/   the fetched archive; seeded from here
    archives/<info-hash hex>/manifest, torrent
                                     the signed manifest and the .torrent, to re-seed on restart
    unpacked/<archive sha256 hex>/   the checked, extracted bundle (workloads.bundle.cache_path)
    partial/<info-hash hex>/         a fetch that did not finish, for the next one to go on from
                                     (peer.partial_fetches: bounded, trusted in nothing)

`ensure()` trusts nothing it is given before it has to: the manifest's signature, that it names
the bundle the lease asked for, and the owner key pin are checked before a byte is fetched; the
archive's hash and every entry are checked (by `bundle.unpack`) before anything is extracted;
the entrypoint is checked before the bundle is kept. A refusal at any step leaves nothing behind
and drops the torrent. A fetch that stalls asks again for where to fetch from (the DHT's members
and, with `seeds_again`, the coordinator's seeds), and one that fails or is cut short keeps the
pieces it has for the next fetch of that torrent: a fetch is the peer's trouble (`FetchFailed`),
the bundle's checks are the bundle's. Everything kept is seeded to other peers and announced in the DHT as a
member of its swarm (`overlay.swarm`, which also finds the other members to fetch from), so that
a new version spreads peer to peer rather than all from the coordinator. Only the
`keep_versions` most recently used versions of each bundle are kept.

The index and the `archives/` directory are the same truth told twice: `start()` rebuilds the
index from what still verifies on disk and deletes the rest, so a crash at any point leaves a
store that the next start cleans up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from overlay import wire
from overlay.dht import DhtNode
from overlay.files import atomic_file
from overlay.identity import Identity
from overlay.swarm import SwarmMembership
from overlay.torrent import TorrentError, TorrentSession, info_hash_of
from overlay.wire import BundleInfo, BundleRef, SwarmAddress
from peer.partial_fetches import PartialFetches
from peer.ready import ReadyBundle, ready_bundle
from workloads import bundle
from workloads.bundle import BundleError, KeyPins, SignedManifest

log = logging.getLogger(__name__)

PINS_FILE = "pins.msgpack"
INDEX_FILE = "index.msgpack"
ARCHIVES_DIR = "archives"
UNPACKED_DIR = "unpacked"
PARTIAL_DIR = "partial"
# Inside archives/<info-hash>/: the torrent's file goes into its own directory, because its
# name is the owner's choice and could otherwise be "manifest" or "torrent".
_DATA_DIR = "data"
_MANIFEST_FILE = "manifest"
_TORRENT_FILE = "torrent"
SWARM_TTL = 1800.0  # seconds a swarm record lives; re-announced every third of it


SeedsAgain = Callable[[], Awaitable[Iterable[SwarmAddress]]]


class FetchFailed(BundleError):
    """The bundle could not be downloaded here (no seed answered, the fetch stalled): the
    peer's trouble, or the network's, not the version's."""


@dataclass(slots=True)
class _Entry:
    """One cached version: its archive is in archives/<info-hash>/, unpacked by sha256."""

    name: str
    version: str
    archive_sha256: bytes
    last_used: float
    capabilities: tuple[str, ...] = ()  # what its manifest lets it do (shown to the volunteer)

    def to_obj(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "archive_sha256": self.archive_sha256.hex(),
            "last_used": self.last_used,
        }


class BundleCache:
    """The peer's bundle store under `root`; `await start()` before use, `await close()` after.

    `torrents` and `dht` belong to the caller (they are neither started nor closed here). With
    no `dht` or no `announce_host`, bundles are still fetched from the coordinator's seeds and
    seeded to whoever connects, but not announced.

    GC note: a version is removed when `keep_versions` newer ones of its bundle were used after
    it; a unit still running it at that moment loses its files, and fails like any other unit.
    """

    def __init__(
        self,
        root: Path,
        torrents: TorrentSession,
        *,
        identity: Identity,
        dht: DhtNode | None = None,
        announce_host: str | None = None,
        announce_port: int | None = None,
        keep_versions: int = 2,
        fetch_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
        announce_ttl: float = SWARM_TTL,
    ) -> None:
        if keep_versions < 1:
            raise ValueError("keep_versions must be at least 1: the version in use is kept")
        if fetch_timeout <= 0:
            raise ValueError("fetch_timeout must be a positive number of seconds")
        self._root = root
        self._archives = root / ARCHIVES_DIR
        self._unpacked = root / UNPACKED_DIR
        self._partials = PartialFetches(root / PARTIAL_DIR)
        self._torrents = torrents
        self._swarm = SwarmMembership(
            torrents, identity, dht=dht, host=announce_host, port=announce_port, ttl=announce_ttl, clock=clock
        )
        self._keep_versions = keep_versions
        self._fetch_timeout = fetch_timeout
        self._clock = clock
        self._announce_ttl = announce_ttl
        self._pins: dict[str, KeyPins] = {}  # scope -> pins, loaded on first use
        self._index: dict[bytes, _Entry] = {}
        self._flights: dict[bytes, asyncio.Task[Path]] = {}
        self._announcer: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    @property
    def root(self) -> Path:
        return self._root

    async def __aenter__(self) -> BundleCache:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- lifecycle --

    async def start(self) -> None:
        """Load the pins, re-seed every cached archive that still verifies, delete the rest,
        and announce what is seeded."""
        if self._started or self._closed:
            raise RuntimeError("a BundleCache can be started once")
        self._started = True
        self._archives.mkdir(parents=True, exist_ok=True)
        self._unpacked.mkdir(parents=True, exist_ok=True)
        self._pins_for("")  # a broken pins file stops the peer here, not at the first unit
        last_used = self._load_last_used()
        for path in sorted(self._archives.iterdir()):
            entry = await self._restore(path)
            if entry is not None:
                entry.last_used = last_used.get(bytes.fromhex(path.name), 0.0)
                self._index[bytes.fromhex(path.name)] = entry
        for name in sorted({entry.name for entry in self._index.values()}):
            self._collect_garbage(name)  # keep_versions may be lower than last time
        self._remove_unreferenced_unpacked()
        self._partials.tidy()
        self._save_index()
        log.info("bundle cache %s: %d cached versions seeded", self._root, len(self._index))
        await asyncio.gather(*(self._swarm.announce(info_hash) for info_hash in list(self._index)))
        if self._swarm.can_announce:
            self._announcer = asyncio.create_task(self._reannounce(), name=f"bundle announcer {self._root}")

    async def close(self) -> None:
        """Stop fetching and announcing, and withdraw our swarm records. The torrents stay in
        the caller's session until it closes."""
        if self._closed:
            return
        self._closed = True
        tasks = [*self._flights.values(), *([self._announcer] if self._announcer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._swarm.withdraw_all()

    def _open(self) -> None:
        if not self._started:
            raise RuntimeError("BundleCache.start() was not called")
        if self._closed:
            raise RuntimeError("the bundle cache is closed")

    def seeding(self) -> list[tuple[str, str, int, int, tuple[str, ...]]]:
        """(name, version, peers connected, bytes uploaded, capabilities) of each version this
        cache holds and seeds, as its torrent session sees them now."""
        seeded = []
        for info_hash, entry in sorted(self._index.items(), key=lambda item: (item[1].name, item[1].version)):
            try:
                stats = self._torrents.stats(info_hash)
            except TorrentError:
                continue  # not (or no longer) in the session
            seeded.append((entry.name, entry.version, stats.num_peers, stats.total_upload, entry.capabilities))
        return seeded

    # -- ensure --

    async def ensure(
        self, expected: BundleRef, info: BundleInfo, scope: str = "", seeds_again: SeedsAgain | None = None
    ) -> ReadyBundle:
        """The bundle `expected` names, checked, fetched once, unpacked and ready to run.

        `scope` names whose namespace of bundle names this is (the coordinator's public key in
        hex): owner keys are pinned per scope. `seeds_again` asks the coordinator again for its
        seeds while a fetch is stalled ([] when it cannot say). Raises BundleError (one line, logged once) when
        the bundle is refused or cannot be fetched; nothing of a refused bundle stays in the
        cache or the torrent session."""
        self._open()
        try:
            signed = self._admit(expected, info, scope)
        except BundleError as exc:
            log.error("bundle %s %s refused: %s", expected.name, expected.version, exc)
            raise
        info_hash = expected.info_hash
        entry = self._index.get(info_hash)
        unpacked = bundle.cache_path(self._unpacked, signed)
        if entry is None or not unpacked.is_dir():
            fetched = await self._single_flight(signed, info, seeds_again)
        else:
            fetched = unpacked
            self._use(signed)
            # Unpacked by an older peer mode 0700: a sandboxed unit's own uid must read it.
            os.chmod(unpacked, 0o755)
        try:
            # The flight checked the manifest of whoever started it; one that joined it with
            # another manifest for the same torrent is checked here.
            if fetched != unpacked:
                raise BundleError(
                    f"the manifest names archive sha256 {signed.archive_sha256.hex()}, but torrent "
                    f"{info_hash.hex()} holds {fetched.name}"
                )
            ready = ready_bundle(signed, unpacked)
            self._pin(signed, scope)
            return ready
        except BundleError as exc:
            log.error("bundle %s %s refused: %s", expected.name, expected.version, exc)
            raise

    def _admit(self, expected: BundleRef, info: BundleInfo, scope: str) -> SignedManifest:
        """The manifest, if it is signed, names exactly the bundle asked for, and its owner is
        the one pinned for the name: all checked before anything is fetched."""
        signed = bundle.decode(info.manifest)
        bundle.verify_manifest(signed)
        manifest = signed.manifest
        asked = f"{expected.name} {expected.version}"
        for what, name, version in (
            ("manifest", manifest.name, manifest.version),
            ("bundle info", info.name, info.version),
        ):
            if (name, version) != (expected.name, expected.version):
                raise BundleError(f"the {what} is for bundle {name} {version}, not the {asked} the lease names")
        for what, info_hash in (("manifest", signed.info_hash), ("bundle info", info.info_hash)):
            if info_hash != expected.info_hash:
                shown = info_hash.hex() if info_hash else "no info-hash"
                raise BundleError(f"the {what} names {shown}, but the lease names info-hash {expected.info_hash.hex()}")
        self._pins_for(scope).check(signed)
        return signed

    async def _single_flight(self, signed: SignedManifest, info: BundleInfo, seeds_again: SeedsAgain | None) -> Path:
        assert signed.info_hash is not None  # _admit compared it with the lease's
        info_hash = signed.info_hash
        flight = self._flights.get(info_hash)
        if flight is None:
            flight = asyncio.create_task(self._obtain(signed, info, seeds_again), name=f"bundle {signed.manifest.stem}")
            self._flights[info_hash] = flight
            flight.add_done_callback(lambda done: self._forget_flight(info_hash, done))
        # Shielded: one waiter giving up must not cancel the fetch the others wait for.
        return await asyncio.shield(flight)

    def _forget_flight(self, info_hash: bytes, done: asyncio.Task[Path]) -> None:
        if self._flights.get(info_hash) is done:
            del self._flights[info_hash]
        if not done.cancelled():
            done.exception()  # retrieved: waiters got it, or nobody is left to care

    async def _obtain(self, signed: SignedManifest, info: BundleInfo, seeds_again: SeedsAgain | None) -> Path:
        """Fetch (unless cached), unpack, check and keep one bundle; the flight's only body."""
        stem = f"{signed.manifest.name} {signed.manifest.version}"
        try:
            if signed.info_hash in self._index:
                return await self._unpack_cached(signed)
            return await self._fetch_and_keep(signed, info, seeds_again)
        except BundleError as exc:
            log.error("bundle %s refused: %s", stem, exc)
            raise

    async def _unpack_cached(self, signed: SignedManifest) -> Path:
        """The archive is cached and seeded but its unpacked copy went missing: unpack again."""
        assert signed.info_hash is not None
        unpacked = bundle.cache_path(self._unpacked, signed)
        if not unpacked.is_dir():
            await asyncio.to_thread(bundle.unpack, self._archive_of(signed.info_hash), signed, unpacked)
        ready_bundle(signed, unpacked)
        self._use(signed)
        return unpacked

    async def _fetch_and_keep(self, signed: SignedManifest, info: BundleInfo, seeds_again: SeedsAgain | None) -> Path:
        assert signed.info_hash is not None
        info_hash = signed.info_hash
        where = self._archives / info_hash.hex()
        unpacked = bundle.cache_path(self._unpacked, signed)
        created = False
        try:
            if where.exists():  # left by a crash before it was kept; not in the index, so not trusted
                shutil.rmtree(where)
            fetched = await self._fetch(signed, info, seeds_again)
            # Whole and hashed: from now on it is the bundle's checks that decide.
            try:
                await self._torrents.move(info_hash, where / _DATA_DIR)
            except TorrentError as exc:
                raise FetchFailed(f"could not keep bundle {signed.manifest.stem}: {exc}") from None
            self._partials.remove(info_hash)
            archive = where / _DATA_DIR / fetched.name
            if not unpacked.is_dir():
                created = True
                await asyncio.to_thread(bundle.unpack, archive, signed, unpacked)
            else:  # the same archive is cached under another info-hash
                await asyncio.to_thread(bundle.verify_archive, archive, signed)
            ready_bundle(signed, unpacked)
            # For seeding it again after a restart: the info dict the fetch verified against the
            # info-hash (hashing the 20 MB again took a CPU-starved swarm of 32 peers up to a
            # second per peer, between their last piece and holding the bundle).
            torrent_bytes = self._torrents.torrent_bytes(info_hash)
            self._keep(signed, where, torrent_bytes)
        except BaseException as exc:
            self._drop(info_hash, where, unpacked if created else None)
            if not isinstance(exc, (FetchFailed, asyncio.CancelledError)):
                self._partials.remove(info_hash)  # it came whole and was refused: nothing to go on from
            if isinstance(exc, Exception):  # the fetch announced us; we hold nothing after all
                await self._swarm.withdraw(info_hash)
            raise
        if info_hash not in self._swarm.announced:
            # The fetch announced us as a member from its start; only if that failed is it done
            # here. Waiting for a publish again (0.1-0.7 s on a busy machine) held every fetch
            # of a bundle back after it was ready.
            await self._swarm.announce(info_hash)
        for gone in self._collect_garbage(signed.manifest.name):
            await self._swarm.withdraw(gone)
        return unpacked

    async def _fetch(self, signed: SignedManifest, info: BundleInfo, seeds_again: SeedsAgain | None) -> Path:
        """The whole archive, fetched into its partial fetch's directory (going on from what an
        earlier fetch left there); FetchFailed when it would not come."""
        assert signed.info_hash is not None
        info_hash = signed.info_hash
        manifest = signed.manifest
        self._partials.prepare(info_hash)
        data_dir = self._partials.data_dir(info_hash)
        try:
            path = await self._swarm.fetch(
                info_hash,
                data_dir,
                info.seeds,
                timeout=self._fetch_timeout,
                seeds_again=seeds_again,
                metadata_file=self._partials.metadata_file(info_hash),
            )
        except TorrentError as exc:
            raise FetchFailed(f"could not fetch bundle {manifest.name} {manifest.version}: {exc}") from None
        if path.parent != data_dir or path.is_symlink() or not path.is_file():
            raise BundleError(f"could not fetch bundle {manifest.name} {manifest.version}: {path} is not a plain file")
        return path

    def _keep(self, signed: SignedManifest, where: Path, torrent_bytes: bytes) -> None:
        """Make a checked bundle part of the cache. Synchronous: no other task sees half of it."""
        assert signed.info_hash is not None
        with atomic_file(where / _MANIFEST_FILE) as f:
            f.write(bundle.encode(signed))
        with atomic_file(where / _TORRENT_FILE) as f:
            f.write(torrent_bytes)
        manifest = signed.manifest
        self._index[signed.info_hash] = _Entry(
            manifest.name, manifest.version, signed.archive_sha256, self._clock(), manifest.capabilities
        )
        self._save_index()
        log.info("bundle %s %s cached and seeded (%s)", manifest.name, manifest.version, signed.info_hash.hex())

    def _drop(self, info_hash: bytes, where: Path, unpacked: Path | None) -> None:
        """Forget a refused or failed bundle: out of the session, off the disk."""
        try:
            if info_hash in self._torrents.torrents():
                self._torrents.remove(info_hash)
        except TorrentError as exc:  # the session closed under us; nothing left to stop
            log.debug("cannot remove %s from the torrent session: %s", info_hash.hex(), exc)
        shutil.rmtree(where, ignore_errors=True)
        if unpacked is not None:
            shutil.rmtree(unpacked, ignore_errors=True)

    def _use(self, signed: SignedManifest) -> None:
        assert signed.info_hash is not None
        self._index[signed.info_hash].last_used = self._clock()
        self._save_index()

    def _pins_path(self, scope: str) -> Path:
        if not scope:
            return self._root / PINS_FILE
        if not (len(scope) <= 64 and all(c in "0123456789abcdef" for c in scope)):
            raise ValueError(f"pin scope {scope!r} is not a hex key")
        return self._root / "pins" / f"{scope}.msgpack"

    def _pins_for(self, scope: str) -> KeyPins:
        pins = self._pins.get(scope)
        if pins is None:
            pins = self._pins[scope] = KeyPins.load(self._pins_path(scope))
        return pins

    def _pin(self, signed: SignedManifest, scope: str) -> None:
        pins = self._pins_for(scope)
        if pins.owner_key(signed.manifest.name) == signed.owner_key:
            return
        pins.pin(signed)
        pins.save(self._pins_path(scope))

    # -- garbage collection --

    def _collect_garbage(self, name: str) -> list[bytes]:
        """Remove all but the `keep_versions` most recently used versions of bundle `name`;
        the info-hashes removed (their swarm records are to be withdrawn)."""
        versions = sorted(
            (h for h, entry in self._index.items() if entry.name == name),
            key=lambda h: self._index[h].last_used,
            reverse=True,
        )
        gone = versions[self._keep_versions :]
        for info_hash in gone:
            entry = self._index.pop(info_hash)
            still_used = any(e.archive_sha256 == entry.archive_sha256 for e in self._index.values())
            unpacked = None if still_used else self._unpacked / entry.archive_sha256.hex()
            self._drop(info_hash, self._archives / info_hash.hex(), unpacked)
            self._partials.remove(info_hash)
            log.info(
                "bundle %s %s removed from the cache: %d newer versions were used",
                name,
                entry.version,
                self._keep_versions,
            )
        if gone:
            self._save_index()
        return gone

    # -- restart --

    async def _restore(self, where: Path) -> _Entry | None:
        """Re-seed one cached archive if everything about it still verifies; else delete it."""
        try:
            signed, torrent_bytes, archive = self._read_cached(where)
            await asyncio.to_thread(bundle.verify_archive, archive, signed)
            await self._torrents.seed(torrent_bytes, archive.parent)
            unpacked = bundle.cache_path(self._unpacked, signed)
            if not unpacked.is_dir():
                await asyncio.to_thread(bundle.unpack, archive, signed, unpacked)
        except (BundleError, TorrentError, OSError, ValueError) as exc:
            log.warning("deleting cached bundle %s: %s", where, exc)
            if where.is_dir() and not where.is_symlink():
                self._drop(bytes.fromhex(where.name) if _is_hex_hash(where.name) else b"", where, None)
            else:
                where.unlink(missing_ok=True)
            return None
        manifest = signed.manifest
        return _Entry(manifest.name, manifest.version, signed.archive_sha256, 0.0, manifest.capabilities)

    def _read_cached(self, where: Path) -> tuple[SignedManifest, bytes, Path]:
        if not where.is_dir() or not _is_hex_hash(where.name):
            raise BundleError("not a cached bundle directory")
        info_hash = bytes.fromhex(where.name)
        signed = bundle.read_manifest(where / _MANIFEST_FILE)
        bundle.verify_manifest(signed)
        if signed.info_hash != info_hash:
            raise BundleError("its manifest names another info-hash")
        # Pins are checked when a lease asks for it (they are per coordinator); what is
        # re-seeded here is only what its signature and hashes still vouch for.
        torrent_bytes = (where / _TORRENT_FILE).read_bytes()
        if info_hash_of(torrent_bytes) != info_hash:
            raise BundleError("its .torrent has another info-hash")
        files = list((where / _DATA_DIR).iterdir())
        if len(files) != 1 or files[0].is_symlink() or not files[0].is_file():
            raise BundleError("its data directory does not hold exactly one archive")
        return signed, torrent_bytes, files[0]

    def _archive_of(self, info_hash: bytes) -> Path:
        return self._read_cached(self._archives / info_hash.hex())[2]

    def _remove_unreferenced_unpacked(self) -> None:
        kept = {entry.archive_sha256.hex() for entry in self._index.values()}
        for path in self._unpacked.iterdir():
            if path.name not in kept:
                log.warning("deleting %s: no cached archive of it verifies", path)
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    # -- the index --

    def _load_last_used(self) -> dict[bytes, float]:
        """When each cached version was last used; {} (every version equally old) if the index
        is missing or unreadable, which only changes what GC removes first."""
        path = self._root / INDEX_FILE
        try:
            obj = wire.decode(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, wire.WireError) as exc:
            log.warning("ignoring bundle index %s: %s", path, exc)
            return {}
        if not isinstance(obj, dict):
            log.warning("ignoring bundle index %s: not a map", path)
            return {}
        last_used = {}
        for key, entry in obj.items():
            if _is_hex_hash(key) and isinstance(entry, dict) and isinstance(entry.get("last_used"), float):
                last_used[bytes.fromhex(key)] = entry["last_used"]
        return last_used

    def _save_index(self) -> None:
        data = wire.encode({h.hex(): entry.to_obj() for h, entry in sorted(self._index.items())})
        with atomic_file(self._root / INDEX_FILE) as f:
            f.write(data)

    # -- the swarm --

    async def _reannounce(self) -> None:
        while True:
            await asyncio.sleep(self._announce_ttl / 3)
            try:
                seeding = set(self._torrents.torrents())
                for info_hash in [h for h in self._index if h in seeding]:
                    await self._swarm.announce(info_hash)
            except TorrentError as exc:  # the session closed before the cache did
                log.warning("bundle announcements stopped: %s", exc)
                return


def _is_hex_hash(name: str) -> bool:
    return len(name) == 40 and all(c in "0123456789abcdef" for c in name)
