"""Real libtorrent sessions on 127.0.0.1 (no DHT, LSD, UPnP or NAT-PMP), one event loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest

from overlay.torrent import (
    SessionClosed,
    TorrentError,
    TorrentSession,
    TorrentState,
    TorrentTimeout,
    info_hash_of,
    info_hashes_of,
    make_torrent,
)

pytestmark = pytest.mark.swarm

HOST = "127.0.0.1"
FILE_SIZE = 2 * 1024 * 1024
SEED_UPLOAD_RATE = 300_000
DOWNLOADERS = 4
# Generous bounds so that a stall fails the test instead of hanging it; never asserted as speed.
FETCH_TIMEOUT = 30.0
STALL_TIMEOUT = 3.0
UNKNOWN_HASH = bytes(range(1, 21))  # libtorrent refuses the all-zero info-hash itself


def _session(tmp_path: Path, name: str, upload_rate: int | None = None) -> TorrentSession:
    return TorrentSession((HOST, 0), state_dir=tmp_path / name / "state", upload_rate=upload_rate)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "seed" / "data" / "bundle.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(FILE_SIZE))
    return path


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))


@pytest.fixture
async def seed(tmp_path: Path) -> AsyncIterator[TorrentSession]:
    async with _session(tmp_path, "seed", upload_rate=SEED_UPLOAD_RATE) as session:
        yield session


def test_make_torrent_hashes_one_file(bundle: Path) -> None:
    torrent = make_torrent(bundle)
    decoded: Any = lt.bdecode(torrent)  # any bencoded value, to the type checker
    info = decoded[b"info"]
    hashes = info_hashes_of(torrent)
    assert info[b"name"] == b"bundle.bin"
    assert info[b"length"] == FILE_SIZE
    assert info_hash_of(torrent) == hashes.v1 == hashlib.sha1(lt.bencode(info)).digest()
    assert hashes.v2 == hashlib.sha256(lt.bencode(info)).digest()


def test_make_torrent_refuses_a_directory_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(TorrentError, match="not a regular file"):
        make_torrent(tmp_path)
    with pytest.raises(TorrentError, match="not a valid .torrent"):
        info_hash_of(b"garbage")


async def test_downloaders_trade_pieces_and_get_identical_bytes(
    tmp_path: Path, bundle: Path, seed: TorrentSession
) -> None:
    torrent = make_torrent(bundle)
    info_hash = info_hash_of(torrent)
    await seed.seed(torrent, bundle.parent)
    assert seed.stats(info_hash).state == TorrentState.SEEDING
    seed_address = (HOST, seed.listen_port)

    async with AsyncExitStack() as stack:
        downloaders = [
            await stack.enter_async_context(_session(tmp_path, f"downloader{i}")) for i in range(DOWNLOADERS)
        ]
        paths = await asyncio.gather(
            *(
                d.fetch(info_hash, tmp_path / f"downloader{i}" / "data", [seed_address], timeout=FETCH_TIMEOUT)
                for i, d in enumerate(downloaders)
            )
        )
        expected = bundle.read_bytes()
        for i, path in enumerate(paths):
            assert path == tmp_path / f"downloader{i}" / "data" / "bundle.bin"
            assert path.read_bytes() == expected

        for d in downloaders:
            assert d.stats(info_hash).state == TorrentState.SEEDING
        # Downloaders passed pieces on to each other (each one's own payload counter says so).
        assert sum(d.stats(info_hash).total_upload for d in downloaders) > 0
        # The rate-limited seed cannot have sent each downloader its own copy.
        assert seed.stats(info_hash).total_upload < DOWNLOADERS * FILE_SIZE


async def test_corrupt_source_is_refused_and_never_complete(tmp_path: Path, bundle: Path, seed: TorrentSession) -> None:
    torrent = make_torrent(bundle)
    info_hash = info_hash_of(torrent)
    await seed.seed(torrent, bundle.parent)
    # Corrupted after the seed's own check passed, so it serves one bad piece.
    _flip_byte(bundle, FILE_SIZE // 2)
    save_dir = tmp_path / "downloader" / "data"

    async with _session(tmp_path, "downloader") as downloader:
        # libtorrent either bans the source and stalls, or (hybrid v1+v2 torrents) notices that
        # the piece's v1 and v2 hashes disagree and fails the torrent: both refuse the data.
        with pytest.raises(TorrentError, match="made no progress|hashes do not describe the same data"):
            await downloader.fetch(info_hash, save_dir, [(HOST, seed.listen_port)], timeout=STALL_TIMEOUT)
        with pytest.raises(TorrentError, match="not in this session"):
            downloader.stats(info_hash)
    assert seed.stats(info_hash).total_upload > 0


async def test_seed_refuses_data_that_fails_its_hash_check(tmp_path: Path, bundle: Path, seed: TorrentSession) -> None:
    torrent = make_torrent(bundle)
    _flip_byte(bundle, 0)
    with pytest.raises(TorrentError, match=r"does not match torrent .*: \d+ of 2097152 bytes"):
        await seed.seed(torrent, bundle.parent)
    bundle.unlink()
    with pytest.raises(TorrentError, match="does not match torrent .*: 0 of 2097152 bytes"):
        await seed.seed(torrent, bundle.parent)
    with pytest.raises(TorrentError, match="not in this session"):
        seed.stats(info_hash_of(torrent))


async def test_removed_torrent_is_no_longer_seeded_and_can_come_back(
    tmp_path: Path, bundle: Path, seed: TorrentSession
) -> None:
    torrent = make_torrent(bundle)
    info_hash = info_hash_of(torrent)
    assert seed.torrents() == []
    await seed.seed(torrent, bundle.parent)
    assert seed.torrents() == [info_hash]

    seed.remove(info_hash)
    assert seed.torrents() == []
    assert bundle.is_file()  # the data stays where it was
    with pytest.raises(TorrentError, match="not in this session"):
        seed.remove(info_hash)
    async with _session(tmp_path, "downloader") as downloader:
        with pytest.raises(TorrentTimeout):
            await downloader.fetch(
                info_hash, tmp_path / "downloader" / "data", [(HOST, seed.listen_port)], timeout=STALL_TIMEOUT
            )

    await seed.seed(torrent, bundle.parent)
    assert seed.torrents() == [info_hash]


async def test_fetch_without_peers_times_out(tmp_path: Path) -> None:
    async with _session(tmp_path, "alone") as session:
        with pytest.raises(TorrentTimeout):
            await session.fetch(UNKNOWN_HASH, tmp_path / "data", [], timeout=0.5)
        with pytest.raises(ValueError):
            await session.fetch(UNKNOWN_HASH[:19], tmp_path / "data", [], timeout=0.5)


async def test_closed_session_refuses_use(tmp_path: Path, bundle: Path) -> None:
    torrent = make_torrent(bundle)
    session = _session(tmp_path, "closing")
    async with session:
        waiting = asyncio.create_task(session.fetch(UNKNOWN_HASH, tmp_path / "data", [], timeout=FETCH_TIMEOUT))
        await asyncio.sleep(0.2)
    with pytest.raises(SessionClosed):
        await waiting
    with pytest.raises(SessionClosed):
        _ = session.listen_port
    with pytest.raises(SessionClosed):
        await session.seed(torrent, bundle.parent)
    with pytest.raises(SessionClosed):
        await session.fetch(UNKNOWN_HASH, tmp_path / "data", [], timeout=1.0)
    with pytest.raises(SessionClosed):
        session.stats(UNKNOWN_HASH)
    with pytest.raises(SessionClosed):
        session.add_peers(UNKNOWN_HASH, [(HOST, 1)])
    with pytest.raises(SessionClosed):
        session.remove(UNKNOWN_HASH)
    with pytest.raises(SessionClosed):
        session.torrents()
    with pytest.raises(SessionClosed):
        async with session:
            pass


async def test_a_taken_port_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TorrentError, match=f"cannot listen on {HOST}:{port}"):
            async with TorrentSession((HOST, port), state_dir=tmp_path / "state"):
                pass


async def test_peer_id_survives_a_restart(tmp_path: Path) -> None:
    async with _session(tmp_path, "node") as first:
        peer_id = first.peer_id
    async with _session(tmp_path, "node") as second:
        assert second.peer_id == peer_id
    assert len(peer_id) == 20


async def test_a_session_keeps_its_port_across_restarts(tmp_path: Path) -> None:
    # A coordinator that restarts keeps seeding where its peers were fetching from.
    async with TorrentSession((HOST, 0), state_dir=tmp_path / "state") as first:
        port = first.listen_port
    async with TorrentSession((HOST, 0), state_dir=tmp_path / "state") as again:
        assert again.listen_port == port
    # Taken meanwhile by someone else: another port, no failure.
    with socket.socket() as squatter:
        squatter.bind((HOST, port))
        squatter.listen()
        async with TorrentSession((HOST, 0), state_dir=tmp_path / "state") as moved:
            assert moved.listen_port != port
