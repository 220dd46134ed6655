"""A bundle fetch that loses its seed: it asks again for where to fetch from while it is stalled,
and a fetch cut short (stalled out, or the peer stopped) keeps its verified pieces for the next
one. Real libtorrent sessions on 127.0.0.1, bundles built and signed for real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from overlay.identity import Identity
from overlay.torrent import TorrentSession
from overlay.wire import SwarmAddress
from peer import partial_fetches
from peer.bundles import BundleCache, FetchFailed
from tests.peer.test_bundle_cache import FETCH_TIMEOUT, HOST, STALL_TIMEOUT, _build, _flip_byte, _info, _ref

pytestmark = pytest.mark.swarm

BUNDLE_BYTES = 2 * 1024 * 1024
SLOW_SEED = 250_000  # bytes/s: slow enough that the seed can be stopped part way


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


def _session(tmp_path: Path, name: str, upload_rate: int | None = None) -> TorrentSession:
    return TorrentSession((HOST, 0), state_dir=tmp_path / name / "torrent", upload_rate=upload_rate)


async def _until_part_came(torrents: TorrentSession, info_hash: bytes, size: int) -> None:
    """Wait (bounded) until the fetch has a quarter of the bundle but not all of it."""
    for _ in range(600):
        try:
            if torrents.stats(info_hash).total_download >= size // 4:
                return
        except Exception:  # not in the session yet
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the fetch never got going")


async def test_a_seed_that_comes_back_on_another_port_is_found_and_the_fetch_goes_on(
    tmp_path: Path, stack: AsyncExitStack
) -> None:
    built = _build(tmp_path, "moved", "1.0", data_bytes=BUNDLE_BYTES)
    size = built.archive_path.stat().st_size
    info_hash = _ref(built).info_hash
    first = await stack.enter_async_context(_session(tmp_path, "first", upload_rate=SLOW_SEED))
    await first.seed(built.torrent_path.read_bytes(), built.archive_path.parent)
    info = _info(built, [first])
    seeds = list(info.seeds)  # what the coordinator says when asked again

    async def seeds_again() -> list[SwarmAddress]:
        return list(seeds)

    torrents = await stack.enter_async_context(_session(tmp_path, "peer"))
    # A no-progress timeout far longer than the test: the fetch must not need it.
    cache = await stack.enter_async_context(
        BundleCache(tmp_path / "peer" / "bundles", torrents, identity=Identity.generate(), fetch_timeout=FETCH_TIMEOUT)
    )
    fetch = asyncio.create_task(cache.ensure(_ref(built), info, "", seeds_again))
    await _until_part_came(torrents, info_hash, size)
    await first.close()  # the coordinator restarts...
    second = await stack.enter_async_context(_session(tmp_path, "second"))  # ...seeding elsewhere
    await second.seed(built.torrent_path.read_bytes(), built.archive_path.parent)
    assert second.listen_port != int(info.seeds[0].port)
    seeds[:] = [SwarmAddress(HOST, second.listen_port)]

    ready = await fetch
    assert (ready.root / "data.bin").read_bytes() == (tmp_path / "src" / "moved-1.0" / "data.bin").read_bytes()
    # It asked again and found the seed's new address; what it had stayed.
    assert 0 < second.stats(info_hash).total_upload < size
    assert not (cache.root / "partial" / info_hash.hex()).exists()


@pytest.mark.parametrize("cut_short_by", ["stall", "restart"])
async def test_a_fetch_cut_short_goes_on_from_its_verified_pieces(
    tmp_path: Path, stack: AsyncExitStack, cut_short_by: str
) -> None:
    built = _build(tmp_path, "resumed", "1.0", data_bytes=BUNDLE_BYTES)
    size = built.archive_path.stat().st_size
    info_hash = _ref(built).info_hash
    root = tmp_path / "peer" / "bundles"
    async with _session(tmp_path, "first", upload_rate=SLOW_SEED) as first:
        await first.seed(built.torrent_path.read_bytes(), built.archive_path.parent)
        info = _info(built, [first])
        async with _session(tmp_path, "peer") as torrents:
            async with BundleCache(root, torrents, identity=Identity.generate(), fetch_timeout=STALL_TIMEOUT) as cache:
                fetch = asyncio.create_task(cache.ensure(_ref(built), info))
                await _until_part_came(torrents, info_hash, size)
                if cut_short_by == "stall":
                    await first.close()
                    with pytest.raises(FetchFailed, match="made no progress"):
                        await fetch
                else:  # the peer stops mid-fetch
                    fetch.cancel()
                    await asyncio.gather(fetch, return_exceptions=True)
    partial = root / "partial" / info_hash.hex()
    (kept,) = (partial / "data").iterdir()
    assert (partial / "torrent").is_file()
    assert list((root / "archives").iterdir()) == []  # nothing of it is trusted yet
    # Whatever lies in a partial fetch is checked again: a piece damaged since counts for nothing.
    _flip_byte(kept, 100)

    second = await stack.enter_async_context(_session(tmp_path, "second"))
    await second.seed(built.torrent_path.read_bytes(), built.archive_path.parent)
    torrents = await stack.enter_async_context(_session(tmp_path, "peer"))
    cache = await stack.enter_async_context(
        BundleCache(root, torrents, identity=Identity.generate(), fetch_timeout=FETCH_TIMEOUT)
    )
    ready = await cache.ensure(_ref(built), _info(built, [second]))

    assert (ready.root / "data.bin").read_bytes() == (tmp_path / "src" / "resumed-1.0" / "data.bin").read_bytes()
    sent = second.stats(info_hash).total_upload
    assert 0 < sent < size, f"the second seed sent {sent} of {size} bytes: the fetch started over"
    assert not partial.exists()


async def test_kept_metadata_of_another_torrent_is_not_used(tmp_path: Path, stack: AsyncExitStack) -> None:
    wanted = _build(tmp_path, "wanted", "1.0", data_bytes=64 * 1024)
    other = _build(tmp_path, "other", "1.0", data_bytes=64 * 1024)
    root = tmp_path / "peer" / "bundles"
    partial = root / "partial" / _ref(wanted).info_hash.hex()
    (partial / "data").mkdir(parents=True)
    (partial / "torrent").write_bytes(other.torrent_path.read_bytes())  # not the torrent it is kept for
    (partial / "data" / other.archive_path.name).write_bytes(other.archive_path.read_bytes())
    seed = await stack.enter_async_context(_session(tmp_path, "seed"))
    await seed.seed(wanted.torrent_path.read_bytes(), wanted.archive_path.parent)
    torrents = await stack.enter_async_context(_session(tmp_path, "peer"))
    cache = await stack.enter_async_context(
        BundleCache(root, torrents, identity=Identity.generate(), fetch_timeout=FETCH_TIMEOUT)
    )
    ready = await cache.ensure(_ref(wanted), _info(wanted, [seed]))
    assert ready.root.name == wanted.signed.archive_sha256.hex()
    assert seed.stats(_ref(wanted).info_hash).total_upload >= wanted.archive_path.stat().st_size


def test_partial_fetches_are_bounded_in_number_and_age() -> None:
    now = 1_000_000.0
    day = 24 * 3600.0
    found = [("a", now - 10), ("b", now - 20), ("c", now - 30), ("old", now - 4 * day)]
    assert partial_fetches.to_remove(found, now, keep=2, max_age=3 * day) == {"c", "old"}
    assert partial_fetches.to_remove(found, now, keep=0, max_age=3 * day) == {"a", "b", "c", "old"}
    assert partial_fetches.to_remove([], now) == set()


async def test_a_partial_fetch_holding_a_link_is_deleted_not_followed(tmp_path: Path, stack: AsyncExitStack) -> None:
    built = _build(tmp_path, "linked", "1.0", data_bytes=64 * 1024)
    root = tmp_path / "peer" / "bundles"
    partial = root / "partial" / _ref(built).info_hash.hex()
    (partial / "data").mkdir(parents=True)
    (partial / "torrent").write_bytes(built.torrent_path.read_bytes())
    victim = tmp_path / "victim"
    victim.write_text("the volunteer's file")
    (partial / "data" / built.archive_path.name).symlink_to(victim)  # libtorrent would write through it
    seed = await stack.enter_async_context(_session(tmp_path, "seed"))
    await seed.seed(built.torrent_path.read_bytes(), built.archive_path.parent)
    torrents = await stack.enter_async_context(_session(tmp_path, "peer"))
    cache = await stack.enter_async_context(
        BundleCache(root, torrents, identity=Identity.generate(), fetch_timeout=FETCH_TIMEOUT)
    )
    ready = await cache.ensure(_ref(built), _info(built, [seed]))
    assert ready.root.name == built.signed.archive_sha256.hex()
    assert victim.read_text() == "the volunteer's file"
