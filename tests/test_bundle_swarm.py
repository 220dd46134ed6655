"""One coordinator seeding, four peers fetching: the coordinator (`coordinator.api.serve` with
its seeder, upload capped) gets a 2 MB bundle from its owner over HTTP; four peer bundle caches,
each with its own libtorrent session and DHT node, ask the coordinator's API where the bundle is
and fetch it by info-hash. With the seed held to 300 kB/s, peers trade pieces: at least one
peer receives payload from another peer, not only from the coordinator.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from coordinator.sql import SqlStore
from osaas import owner
from overlay.dht import DhtNode
from overlay.identity import Identity
from overlay.torrent import TorrentSession
from overlay.wire import BundleRef
from peer.bundles import BundleCache
from peer.client import CoordinatorClient
from tests.sites import coordinator
from workloads import bundle

pytestmark = pytest.mark.timeout(180)

HOST = "127.0.0.1"
PEERS = 4


def build_large(root: Path, owner_key: Identity) -> bundle.BuiltBundle:
    source = root / "source"
    source.mkdir(parents=True)
    (source / "bundle.toml").write_text('name = "big"\nversion = "1.0"\nentrypoint = ["python3", "-m", "big"]\n')
    (source / "data.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    return bundle.build(source, owner_key, root / "dist")


async def test_peers_fetch_from_the_coordinator_and_from_each_other(tmp_path: Path) -> None:
    key = Identity.generate()
    built = build_large(tmp_path / "owner", key)
    db = tmp_path / "coordinator.sqlite"
    async with AsyncExitStack() as stack:
        coordinator_dht = await stack.enter_async_context(DhtNode((HOST, 0)))
        url = await stack.enter_async_context(
            coordinator(db, dht=coordinator_dht, network="swarm", torrent_listen=(HOST, 0), bundle_upload_rate=300_000)
        )
        async with SqlStore(db) as store:
            await store.add_owner("owner", key.public_hex, time.time())
        session = await stack.enter_async_context(aiohttp.ClientSession())
        status = await owner.publish(session, url, key, built)
        assert status.stable == "1.0"

        caches: list[tuple[BundleCache, TorrentSession]] = []
        for i in range(PEERS):
            dht = await stack.enter_async_context(DhtNode((HOST, 0), [coordinator_dht.address]))
            torrents = await stack.enter_async_context(
                TorrentSession((HOST, 0), state_dir=tmp_path / f"peer-{i}" / "torrent")
            )
            cache = BundleCache(
                tmp_path / f"peer-{i}" / "bundles", torrents, identity=Identity.generate(), dht=dht, announce_host=HOST
            )
            await stack.enter_async_context(cache)
            caches.append((cache, torrents))

        peer_identity = Identity.generate()
        client = CoordinatorClient(url, peer_identity, session)
        info = await client.bundle_info("big", "1.0")
        scope = await client.public_key()
        assert info.seeds and info.seeds[0].host == HOST
        signed = built.signed
        assert signed.info_hash is not None
        ref = BundleRef("big", "1.0", signed.info_hash)
        readies = await asyncio.gather(*(cache.ensure(ref, info, scope) for cache, _ in caches))

        original = (tmp_path / "owner" / "source" / "data.bin").read_bytes()
        for ready in readies:
            assert (ready.root / "data.bin").read_bytes() == original
        uploaded = [torrents.stats(signed.info_hash).total_upload for _, torrents in caches]
        assert sum(uploaded) > 0, f"every piece came from the coordinator: peers uploaded {uploaded}"
