"""The origin seed's server: listens, accepts fetchers (capped), serves the torrents it was
given through one upload bucket, and runs the reveal rules' clock. The I/O edge of this
package; the protocol (`peerwire`) and the rules (`reveal`) are pure.

`OriginSeeder` offers what the coordinator's seeder needs of a torrent session: `seed`,
`stats`, `listen_port` (kept across restarts, as `overlay.listen_ports` keeps libtorrent's),
`torrents`, and `async with`; `mapped_port` and `external_ip` are None (no port mapping).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import itertools
import logging
import os
import secrets
import string
import time
from collections.abc import Callable
from pathlib import Path

from overlay import listen_ports
from overlay.origin import metainfo
from overlay.origin.connection import Connection, Served
from overlay.origin.peerwire import PeerWireError
from overlay.origin.reveal import Reveal, Settings
from overlay.torrent import Address, SessionClosed, TorrentError, TorrentState, TransferStats
from overlay.torrent_settings import WIRE_SHARE

log = logging.getLogger(__name__)

MAX_PEERS = 256  # connections at once, all torrents
MAX_PER_ADDRESS = 32  # connections at once from one IP address
TICK = 0.1  # seconds between runs of the reveal rules' clock
BURST = 0.05  # seconds of the upload rate that may go out at once
_PEER_ID_PREFIX = "-OS0100-"


class Bucket:
    """Bytes per second for everything the origin sends, fair in arrival order (None: unlimited).
    Counted as the interface counts them: the rate is lowered by WIRE_SHARE for headers."""

    def __init__(self, rate: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("the upload rate must be a positive number of bytes per second")
        self._rate = rate / WIRE_SHARE if rate else None
        self._clock = clock
        self._burst = max(32 * 1024, (self._rate or 0) * BURST)
        self._tokens = self._burst
        self._at = clock()
        self._lock = asyncio.Lock()

    async def take(self, size: int) -> None:
        if self._rate is None:
            return
        async with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            self._tokens -= size
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self._rate)


class OriginSeeder:
    """Seeds single-file torrents from disk to libtorrent fetchers; `async with`, once."""

    def __init__(
        self,
        listen: Address,
        *,
        state_dir: Path,
        upload_rate: int | None = None,
        settings: Settings | None = None,
        max_peers: int = MAX_PEERS,
        max_per_address: int = MAX_PER_ADDRESS,
    ) -> None:
        self._listen = listen
        self._state_dir = state_dir
        self._bucket = Bucket(upload_rate)
        self._settings = settings or Settings()
        self._max_peers = max_peers
        self._max_per_address = max_per_address
        self._torrents: dict[bytes, Served] = {}
        self._connections: dict[int, tuple[str, asyncio.Task[None]]] = {}
        self._keys = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._ticking: asyncio.Task[None] | None = None
        self._port = 0
        self._closed = False
        alphabet = string.ascii_letters + string.digits
        suffix = "".join(secrets.choice(alphabet) for _ in range(20 - len(_PEER_ID_PREFIX)))
        self._peer_id = (_PEER_ID_PREFIX + suffix).encode("ascii")

    async def __aenter__(self) -> OriginSeeder:
        if self._server is not None or self._closed:
            raise SessionClosed("an OriginSeeder can be entered only once")
        self._state_dir.mkdir(parents=True, exist_ok=True)
        host, port = self._listen
        if port == 0:
            try:
                port = listen_ports.chosen(self._state_dir, host)
            except OSError as exc:
                raise TorrentError(str(exc)) from None
        hosts: list[str] | str = host
        if _is_unspecified(host):
            hosts = ["0.0.0.0", "::"] if listen_ports.interfaces(host, port).count(",") else ["0.0.0.0"]
        try:
            self._server = await asyncio.start_server(self._accept, hosts, port, reuse_address=True)
        except OSError as exc:
            raise TorrentError(f"cannot listen on {host}:{port}: {exc}") from None
        self._port = port
        if self._listen[1] == 0:
            listen_ports.remember(self._state_dir, port)
        self._ticking = asyncio.create_task(self._tick(), name="origin reveal clock")
        log.info("origin seed listening on %s:%d", host, port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        tasks = [task for _, task in self._connections.values()]
        if self._ticking is not None:
            tasks.append(self._ticking)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        for served in self._torrents.values():
            os.close(served.fd)
        self._torrents.clear()

    @property
    def listen_port(self) -> int:
        self._open()
        return self._port

    mapped_port: int | None = None
    external_ip: str | None = None

    def _open(self) -> None:
        if self._closed or self._server is None:
            raise SessionClosed("the origin seed is closed")

    # -- torrents --

    async def seed(self, torrent_bytes: bytes, data_dir: Path) -> None:
        """Seed a torrent whose file is in `data_dir`, after checking every v1 piece hash."""
        self._open()
        try:
            meta = metainfo.parse(torrent_bytes)
        except metainfo.MetainfoError as exc:
            raise TorrentError(f"the origin cannot seed this torrent: {exc}") from None
        if meta.info_hash in self._torrents:
            raise TorrentError(f"torrent {meta.info_hash.hex()} is already seeded")
        path = data_dir / meta.name
        if path.name != meta.name or meta.name in ("", ".", ".."):
            raise TorrentError(f"torrent {meta.info_hash.hex()} names no plain file: {meta.name!r}")
        fd = await asyncio.to_thread(_open_checked, path, meta)
        self._torrents[meta.info_hash] = Served(meta, fd, Reveal(meta.num_pieces, self._settings), {})
        log.info("origin seeding %s (%s) from %s", meta.info_hash.hex(), meta.name, data_dir)

    def torrents(self) -> list[bytes]:
        self._open()
        return sorted(self._torrents)

    def stats(self, info_hash: bytes) -> TransferStats:
        self._open()
        served = self._torrents.get(info_hash)
        if served is None:
            raise TorrentError(f"torrent {info_hash.hex()} is not seeded here")
        return TransferStats(info_hash, TorrentState.SEEDING, served.uploaded, 0, len(served.connections))

    # -- connections --

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("peername")
        ip = str(address[0]) if address else "?"
        same = sum(1 for other, _ in self._connections.values() if other == ip)
        if self._closed or len(self._connections) >= self._max_peers or same >= self._max_per_address:
            writer.transport.abort()
            return
        key = next(self._keys)
        task = asyncio.current_task()
        assert task is not None
        self._connections[key] = (ip, task)
        connection = Connection(
            key, reader, writer, peer_id=self._peer_id, find=self._torrents.get, uploads=self._bucket
        )
        try:
            await connection.run()
        except (PeerWireError, OSError, TimeoutError, ConnectionError) as exc:
            log.debug("origin: %s: %s", connection.peer, exc or type(exc).__name__)
        except asyncio.CancelledError:
            # Only close() cancels these tasks; ending quietly spares asyncio's streams a
            # logged traceback for a cancelled connection callback.
            pass
        finally:
            self._connections.pop(key, None)
            writer.transport.abort()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for served in list(self._torrents.values()):
                if not served.connections:
                    continue
                try:
                    served.dispatch(served.rules.tick(now))
                    served.introduce(now)
                except Exception:  # a bug of ours: logged, and the clock goes on for the others
                    log.exception("origin: the reveal clock failed for %s", served.meta.info_hash.hex())


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _open_checked(path: Path, meta: metainfo.Metainfo) -> int:
    """The file opened for reading, once its size and every v1 piece hash match. Blocks."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size != meta.length:
            raise TorrentError(f"{path} has {os.fstat(fd).st_size} bytes; its torrent says {meta.length}")
        for index in range(meta.num_pieces):
            data = os.pread(fd, meta.piece_size(index), index * meta.piece_length)
            if hashlib.sha1(data).digest() != meta.piece_hashes[20 * index : 20 * index + 20]:
                raise TorrentError(f"{path} does not match its torrent at piece {index}")
    except BaseException:
        os.close(fd)
        raise
    return fd
