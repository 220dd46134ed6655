"""Bundle distribution benchmark: BitTorrent swarm vs plain HTTP from the coordinator.

    python -m bench.bundle_swarm [--size-mb 20] [--peers 4 8 16] [--seed-rate 2MB]

A 20 MB bundle (incompressible bytes) is built and signed. For each N:

- swarm: the coordinator's own seeder (coordinator.seeder.BundleSeeder: super-seeding, few
  upload slots) limited to `--seed-rate` upload, and N real peer bundle caches
  (peer.bundles.BundleCache, each with its own libtorrent session at the default peer upload
  budget and its own DHT node), all asked for the bundle at once. They fetch by info-hash from the seed and from the swarm members they
  find in the DHT, verify, unpack. Printed: the seed's uploaded payload / bundle size, and the
  seconds until every peer holds a verified, unpacked copy.
- http (the anchor, same run): N clients download the archive at once from an aiohttp server
  whose total upload is held to the same rate by one token bucket.

Targets at N=16: seed upload <= 1.5x the bundle (the floor is 1x), time to all <= 0.5x HTTP.
Everything runs on 127.0.0.1 in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from aiohttp import web

from coordinator.seeder import BundleSeeder
from coordinator.store import PublishedBundle
from overlay import wire
from overlay.dht import DhtNode
from overlay.identity import Identity
from overlay.torrent import TorrentSession
from peer.agent import DEFAULT_BUNDLE_UPLOAD_RATE
from peer.bundles import BundleCache
from workloads import bundle

HOST = "127.0.0.1"
CHUNK = 64 * 1024


def _rate(text: str) -> int:
    units = {"KB": 1000, "MB": 1000**2}
    for suffix, factor in units.items():
        if text.upper().endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def build_bundle(root: Path, size: int, owner: Identity) -> bundle.BuiltBundle:
    source = root / "source"
    (source / "payload").mkdir(parents=True)
    (source / "bundle.toml").write_text('name = "bench"\nversion = "1.0"\nentrypoint = ["python3", "-m", "bench"]\n')
    with open(source / "payload" / "data.bin", "wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(left, 1 << 20)))
            left -= 1 << 20
    return bundle.build(source, owner, root / "out")


# ---- the swarm -------------------------------------------------------------------------


def published_bundle(signed: bundle.SignedManifest) -> PublishedBundle:
    """The store's record of `signed`, as the coordinator keeps a version it published now."""
    assert signed.info_hash is not None
    return PublishedBundle(
        signed.manifest.name,
        signed.manifest.version,
        signed.owner_key.hex(),
        signed.info_hash,
        signed.archive_sha256,
        bundle.encode(signed),
        time.time(),
    )


async def swarm_run(built: bundle.BuiltBundle, peers: int, seed_rate: int, root: Path) -> tuple[float, float]:
    """(seed upload / bundle size, seconds until all peers have it)."""
    signed = built.signed
    assert signed.info_hash is not None
    size = built.archive_path.stat().st_size
    async with AsyncExitStack() as stack:
        seed = await stack.enter_async_context(
            BundleSeeder((HOST, 0), identity=Identity.generate(), state_dir=root / "seed", upload_rate=seed_rate)
        )
        published = published_bundle(signed)
        await seed.seed(published, built.archive_path.parent, built.torrent_path.read_bytes())
        bootstrap = await stack.enter_async_context(DhtNode((HOST, 0)))
        caches = []
        for i in range(peers):
            dht = await stack.enter_async_context(DhtNode((HOST, 0), [bootstrap.address]))
            torrents = await stack.enter_async_context(
                TorrentSession((HOST, 0), upload_rate=DEFAULT_BUNDLE_UPLOAD_RATE, state_dir=root / f"p{i}" / "t")
            )
            cache = BundleCache(
                root / f"p{i}" / "bundles",
                torrents,
                identity=Identity.generate(),
                dht=dht,
                announce_host=HOST,
                fetch_timeout=120.0,
            )
            await cache.start()
            stack.push_async_callback(cache.close)
            caches.append(cache)
        ref = wire.BundleRef(signed.manifest.name, signed.manifest.version, signed.info_hash)
        info = wire.BundleInfo(
            ref.name, ref.version, ref.info_hash, bundle.encode(signed), [wire.SwarmAddress(HOST, seed.listen_port)]
        )
        began = time.perf_counter()
        await asyncio.gather(*(cache.ensure(ref, info) for cache in caches))
        elapsed = time.perf_counter() - began
        uploaded = seed.stats(signed.info_hash).total_upload
    return uploaded / size, elapsed


# ---- the HTTP anchor -------------------------------------------------------------------


class _Bucket:
    """One token bucket shared by every response: the server's total upload rate."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._tokens = 0.0
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, amount: int) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._tokens + (now - self._last) * self._rate, float(CHUNK))
                self._last = now
                if self._tokens >= amount:
                    self._tokens -= amount
                    return
                await asyncio.sleep((amount - self._tokens) / self._rate)


async def http_run(archive: Path, peers: int, rate: int) -> float:
    """Seconds until `peers` concurrent downloads of `archive` are complete."""
    data = archive.read_bytes()
    bucket = _Bucket(rate)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        for offset in range(0, len(data), CHUNK):
            piece = data[offset : offset + CHUNK]
            await bucket.take(len(piece))
            await response.write(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/bundle.tar", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:

            async def download() -> None:
                async with session.get(f"http://{HOST}:{port}/bundle.tar") as response:
                    got = 0
                    async for chunk in response.content.iter_chunked(CHUNK):
                        got += len(chunk)
                    if got != len(data):
                        raise RuntimeError(f"HTTP download got {got} of {len(data)} bytes")

            began = time.perf_counter()
            await asyncio.gather(*(download() for _ in range(peers)))
            return time.perf_counter() - began
    finally:
        await runner.cleanup()


async def main(args: argparse.Namespace) -> None:
    # Dozens of DHT nodes on one loop time out on each other now and then; kademlia and rpcudp
    # log each one, which would bury the table.
    for noisy in ("kademlia", "rpcudp"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    owner = Identity.generate()
    with tempfile.TemporaryDirectory(prefix="osaas-bench-bundle-") as tmp:
        root = Path(tmp)
        built = build_bundle(root / "bundle", args.size_mb * 1_000_000, owner)
        size = built.archive_path.stat().st_size
        print(
            f"bundle: {size / 1e6:.1f} MB, seed upload limited to {args.seed_rate / 1e6:.1f} MB/s, "
            f"peer upload budget {DEFAULT_BUNDLE_UPLOAD_RATE / 1e6:.1f} MB/s"
        )
        print(f"{'N':>3} | {'seed upload / size':>18} | {'swarm s':>8} | {'HTTP s':>8} | {'swarm / HTTP':>12}")
        for n in args.peers:
            ratio, swarm_s = await swarm_run(built, n, args.seed_rate, root / f"swarm-{n}")
            http_s = await http_run(built.archive_path, n, args.seed_rate)
            print(
                f"{n:>3} | {ratio:>17.2f}x | {swarm_s:>8.1f} | {http_s:>8.1f} | {swarm_s / http_s:>12.2f}", flush=True
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=20)
    parser.add_argument("--peers", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--seed-rate", type=_rate, default=2_000_000)
    asyncio.run(main(parser.parse_args()))
