"""One libtorrent session behind an asyncio surface: make, seed and fetch single-file torrents.

libtorrent is wrapped here and nowhere else; its errors and alerts become our exceptions:

    TorrentError            anything libtorrent refused or reported as failed
     ├── TorrentTimeout     a fetch made no verified progress for its timeout (e.g. the only
     │                      source serves corrupt data: libtorrent bans it, then waits forever)
     └── SessionClosed      the session was used after it closed, or ended a waiting call

Facts this module is built on were measured on this kind of machine (rates at the interface:
`torrent_settings`): loopback swarms need
`allow_multiple_connections_per_ip`; rate limits skip local peers unless
`ignore_limits_on_local_network` is off; torrents are added neither paused nor auto-managed so
that no queue limit (3 active downloads by default) holds them back; alert objects are copied
into plain values as soon as they are popped, because touching one later can segfault.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import socket
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libtorrent as lt

from overlay import listen_ports
from overlay.errors import OsaasError
from overlay.fetch_stalls import StallAsker
from overlay.torrent_metadata import read_metadata, torrent_of, write_metadata
from overlay.torrent_settings import session_settings, wire_settings

log = logging.getLogger(__name__)
_MAX_RATE = 2**31 - 1

Address = tuple[str, int]

# The session wakes the event loop when alerts arrive (`set_alert_fd`); these are the times
# between looks that nothing else prompts: alerts (a safety net), a fetch's progress, what a
# wait waits for. Polling every 50 ms cost each idle session ~2.6 ms of CPU a second, and 32
# fetching peers 20 libtorrent status calls a second each, on a 2-core machine.
_ALERT_SAFETY_INTERVAL = 1.0
_STATUS_INTERVAL = 0.25
ASK_AGAIN = 5.0  # seconds a fetch may get neither a byte nor a piece before it asks for peers again
_LISTEN_TIMEOUT = 5.0
_LISTEN_GRACE = 0.5  # after one address failed to listen, how long another may still succeed
_CHECK_TIMEOUT = 120.0
_PEER_ID_PREFIX = "-OS0100-"
_PEER_ID_FILE = "peer_id"
_PEER_ID_ALPHABET = string.ascii_letters + string.digits
# connect_peer's flags (libtorrent's pex_flags: encryption 1, utp 4, holepunch 8; default 13)
# for a peer known not to speak encrypted handshakes.
_PEX_PLAINTEXT = 12
_STARTED = lt.torrent_flags.paused | lt.torrent_flags.auto_managed
_CHECKING = {
    lt.torrent_status.states.queued_for_checking,
    lt.torrent_status.states.checking_files,
    lt.torrent_status.states.checking_resume_data,
    # Unused by libtorrent 2.x, but still in its enum: reported as checking, not as a crash.
    lt.torrent_status.states.allocating,
}


class TorrentError(OsaasError):
    """libtorrent refused an operation or reported a torrent as failed."""


class TorrentTimeout(TorrentError):
    """A fetch made no verified progress for as long as its timeout allowed."""


class SessionClosed(TorrentError):
    """The session is closed: it refuses use, and calls waiting when it closed end with this."""


class TorrentState(enum.Enum):
    CHECKING = "checking"
    DOWNLOADING_METADATA = "downloading_metadata"
    DOWNLOADING = "downloading"
    FINISHED = "finished"
    SEEDING = "seeding"


@dataclass(frozen=True, slots=True)
class InfoHashes:
    v1: bytes
    v2: bytes | None


@dataclass(frozen=True, slots=True)
class TransferStats:
    """A torrent's payload counters since it was added to this session.

    Who sent what is not tracked: libtorrent's per-block alerts proved an unreliable tally (a
    128 KiB fetch on a busy machine counted no block at all). A source's own `total_upload` says
    what it gave.
    """

    info_hash: bytes
    state: TorrentState
    total_upload: int
    total_download: int
    num_peers: int


class _Torrent:
    """What this session tracks for one torrent beside libtorrent's handle."""

    __slots__ = ("handle", "checked", "finished", "flushed", "error", "moved", "carried")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.checked = False
        self.finished = False  # every piece passed its hash check
        self.flushed = False  # and was written to the file: readers see the whole of it
        self.error: str | None = None
        self.moved: str | None = None  # "" once its files moved, else why they could not
        # Payload (down, up) counted before a pause, which zeroes libtorrent's counters.
        self.carried = (0, 0)

    def payload(self, status: Any) -> tuple[int, int]:
        """Payload bytes (down, up) since the torrent was added, across reconnects."""
        down, up = self.carried
        return down + status.total_payload_download, up + status.total_payload_upload


# ---- torrent files ----------------------------------------------------------------------


def make_torrent(path: Path) -> bytes:
    """Hash one file into a bencoded hybrid (v1 + v2) .torrent; blocks while it reads the file."""
    if not path.is_file():
        raise TorrentError(f"{path} is not a regular file; only single files are shared")
    try:
        creator = lt.create_torrent(lt.list_files(str(path)), 0, 0)
        lt.set_piece_hashes(creator, str(path.parent))
        return bytes(lt.bencode(creator.generate()))
    except RuntimeError as exc:
        raise TorrentError(f"cannot make a torrent of {path}: {exc}") from exc


def info_hashes_of(torrent_bytes: bytes) -> InfoHashes:
    hashes = _parse(torrent_bytes).info_hashes()
    return InfoHashes(v1=hashes.v1.to_bytes(), v2=hashes.v2.to_bytes() if hashes.has_v2() else None)


def info_hash_of(torrent_bytes: bytes) -> bytes:
    """The v1 (SHA-1, 20 bytes) info-hash: what `fetch` and `stats` take."""
    return info_hashes_of(torrent_bytes).v1


def payload_size(torrent_bytes: bytes) -> int:
    """Bytes of content the torrent describes."""
    return int(_parse(torrent_bytes).total_size())


def _parse(torrent_bytes: bytes) -> Any:
    try:
        return lt.torrent_info(torrent_bytes)
    except RuntimeError as exc:
        raise TorrentError(f"not a valid .torrent: {exc}") from exc


def _key(handle: Any) -> bytes:
    return bytes(handle.info_hashes().v1.to_bytes())


# ---- the session --------------------------------------------------------------------------


class TorrentSession:
    """One libtorrent session on one address; use as `async with`, once.

    `upload_rate` and `download_rate` are bytes per second for the whole session and also hold
    for peers on the local network. `upload_slots` caps how many peers are sent data at once
    (libtorrent's unchoke slots; default: no cap, every interested peer is sent data).
    `state_dir` keeps the session's peer id across restarts.
    `port_mapping` asks the local router to forward the listen port (UPnP and NAT-PMP, off by
    default): `mapped_port` and `external_ip` then say what the router reported.
    """

    def __init__(
        self,
        listen: Address,
        *,
        upload_rate: int | None = None,
        download_rate: int | None = None,
        upload_slots: int | None = None,
        state_dir: Path,
        port_mapping: bool = False,
    ) -> None:
        for name, rate in (("upload_rate", upload_rate), ("download_rate", download_rate)):
            if rate is not None and rate <= 0:
                raise ValueError(f"{name} must be a positive number of bytes per second")
        if upload_slots is not None and upload_slots < 1:
            raise ValueError("upload_slots must be at least 1")
        self._upload_slots = upload_slots
        self._port_mapping = port_mapping
        self._mapped_port: int | None = None
        self._external_ip: str | None = None
        self._listen = listen
        # libtorrent keeps rates in a C int; 0 means unlimited, and so does anything above it.
        self._upload_rate = min(upload_rate or 0, _MAX_RATE)
        self._download_rate = min(download_rate or 0, _MAX_RATE)
        self._state_dir = state_dir
        self._session: Any = None
        self._pump: asyncio.Task[None] | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None  # (read, write) ends
        self._changed = asyncio.Event()  # set (and replaced) whenever alerts were handled
        self._torrents: dict[bytes, _Torrent] = {}
        self._listen_error: str | None = None
        self._listening = False
        self._closed = False
        self._peer_id = b""

    def set_rates(self, *, upload_rate: int | None, download_rate: int | None) -> None:
        """Change the session's rate limits (bytes/s; None: unlimited), e.g. when the
        volunteer changes the budget while the peer runs."""
        for name, rate in (("upload_rate", upload_rate), ("download_rate", download_rate)):
            if rate is not None and rate <= 0:
                raise ValueError(f"{name} must be a positive number of bytes per second")
        rates = min(upload_rate or 0, _MAX_RATE), min(download_rate or 0, _MAX_RATE)
        if rates == (self._upload_rate, self._download_rate):
            return
        self._upload_rate, self._download_rate = rates
        if self._session is not None and not self._closed:
            self._session.apply_settings(wire_settings(self._upload_rate, self._download_rate))

    def rates(self) -> tuple[int, int]:
        """(upload, download) rate limits in bytes/s as libtorrent holds them (WIRE_SHARE under
        the rates given, see `torrent_settings.wire_settings`); 0: unlimited."""
        if self._session is None or self._closed:
            return self._upload_rate, self._download_rate
        settings = self._session.get_settings()
        return settings["upload_rate_limit"], settings["download_rate_limit"]

    # -- lifecycle --

    async def __aenter__(self) -> TorrentSession:
        if self._session is not None or self._closed:
            raise SessionClosed("a TorrentSession can be entered only once")
        self._peer_id = self._load_peer_id()
        host, port = self._listen
        if port == 0:
            try:
                port = listen_ports.chosen(self._state_dir, host)
            except OSError as exc:
                raise TorrentError(str(exc)) from None
        interface = listen_ports.interfaces(host, port)
        settings = session_settings(
            interface,
            peer_id=self._peer_id,
            port_mapping=self._port_mapping,
            upload_slots=self._upload_slots,
            rates=(self._upload_rate, self._download_rate),
        )
        self._session = lt.session(settings)
        self._start_pump(interface)
        try:
            await self._wait(
                lambda: self._listening or self._listen_error is not None, _LISTEN_TIMEOUT, f"listening on {interface}"
            )
            if not self._listening:  # one address failed: did another (the other family) listen?
                with contextlib.suppress(TorrentTimeout):
                    await self._wait(lambda: self._listening, _LISTEN_GRACE, f"listening on {interface}")
            if not self._listening:
                raise TorrentError(f"cannot listen on {interface}: {self._listen_error}")
        except BaseException:
            await self.close()
            raise
        if self._listen[1] == 0:
            listen_ports.remember(self._state_dir, self.listen_port)
        log.info("torrent session listening on %s:%d", host, self.listen_port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._notify()  # waiters see the session closed
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            asyncio.get_running_loop().remove_reader(wakeup[0].fileno())
        session, self._session = self._session, None
        self._torrents.clear()
        try:
            if session is not None:
                session.pause()
                # The destructor waits for libtorrent's threads to stop, so the last reference is
                # dropped in a worker thread while the event loop keeps running.
                holder = [session]
                del session
                await asyncio.to_thread(holder.clear)
        finally:
            # Only now: until the session is gone, libtorrent may still write to the socket.
            if wakeup is not None:
                for end in wakeup:
                    end.close()

    def _load_peer_id(self) -> bytes:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        path = self._state_dir / _PEER_ID_FILE
        try:
            saved = path.read_bytes()
        except FileNotFoundError:
            saved = b""
        prefix = _PEER_ID_PREFIX.encode("ascii")
        if len(saved) == 20 and saved.startswith(prefix) and saved[len(prefix) :].isalnum():
            return saved
        length = 20 - len(_PEER_ID_PREFIX)
        suffix = "".join(secrets.choice(_PEER_ID_ALPHABET) for _ in range(length))
        peer_id = (_PEER_ID_PREFIX + suffix).encode("ascii")
        path.write_bytes(peer_id)
        return peer_id

    @property
    def listen_port(self) -> int:
        return int(self._open().listen_port())

    @property
    def port_mapping_enabled(self) -> bool:
        """Whether libtorrent asks the router for port forwarding (UPnP, NAT-PMP)."""
        settings = self._open().get_settings()
        return bool(settings["enable_upnp"] and settings["enable_natpmp"])

    @property
    def mapped_port(self) -> int | None:
        """The TCP port the router forwards to ours (port mapping on and granted), else None."""
        return self._mapped_port

    @property
    def external_ip(self) -> str | None:
        """The address the router says it has outside (port mapping on), else None."""
        return self._external_ip

    @property
    def peer_id(self) -> bytes:
        self._open()
        return self._peer_id

    def _open(self) -> Any:
        if self._closed or self._session is None:
            raise SessionClosed("the torrent session is closed")
        return self._session

    # -- torrents --

    async def seed(self, torrent_bytes: bytes, data_dir: Path, *, super_seed: bool = False) -> None:
        """Seed a torrent whose file is already in `data_dir`, after checking every piece of it.

        `super_seed` makes this session offer each piece to one peer at a time, until it has
        seen that piece passed on: an origin with many fetchers then uploads little more than
        one copy and lets the fetchers trade the rest among themselves.
        """
        session = self._open()
        info = _parse(torrent_bytes)
        key = bytes(info.info_hashes().v1.to_bytes())
        if key in self._torrents:
            raise TorrentError(f"torrent {key.hex()} is already in this session")
        params = lt.add_torrent_params()
        params.ti = info
        params.save_path = str(data_dir)
        params.flags &= ~_STARTED
        torrent = self._add(session, params, key)
        try:
            await self._wait(
                lambda: torrent.checked or torrent.error is not None, _CHECK_TIMEOUT, f"checking {key.hex()}"
            )
            self._raise_if_failed(torrent)
            status = torrent.handle.status()
            if not status.is_seeding:
                raise TorrentError(
                    f"data in {data_dir} does not match torrent {key.hex()}: "
                    f"{status.total_wanted_done} of {status.total_wanted} bytes verified"
                )
            if super_seed:
                torrent.handle.set_flags(lt.torrent_flags.super_seeding)
        except BaseException:
            self._remove(key)
            raise
        log.info("seeding %s (%s) from %s", key.hex(), info.name(), data_dir)

    async def fetch(
        self,
        info_hash: bytes,
        save_dir: Path,
        peers: list[Address],
        *,
        timeout: float,
        more_peers: Callable[[], Awaitable[list[Address]]] | None = None,
        ask_again: float = ASK_AGAIN,
        metadata_file: Path | None = None,
        origins: list[Address] | None = None,
    ) -> Path:
        """Download a single-file torrent by v1 info-hash from `peers`; return the file's path.
        `origins` (seeds that speak plaintext only) are connected to first, without encryption.

        While neither a byte nor a verified piece has come for `ask_again` seconds, `more_peers`
        is asked for addresses, again every `ask_again` seconds until progress resumes, and the
        fetch connects again to each of them (`connect_again`, which also drops stuck
        connections): libtorrent itself waits a minute or more before it tries a peer that
        went away again, keeps a connection to a seed that was killed until its peer timeout,
        and never learns of a seed's new port.

        `metadata_file` keeps the torrent's info dict once it is known, so that a later fetch of
        the same info-hash into the same `save_dir` goes on from what is there: the file is
        hashed when the torrent is added, and only pieces that pass count. A metadata file of
        another torrent, or one that does not parse, is ignored.

        Raises TorrentTimeout when no piece passes its hash check for `timeout` seconds (metadata
        included). On any failure the torrent leaves the session; partial data stays in save_dir.
        On success it stays, seeding.
        """
        session = self._open()
        if len(info_hash) != 20:
            raise ValueError("info_hash must be the 20-byte v1 info-hash")
        if ask_again <= 0:
            raise ValueError("ask_again must be a positive number of seconds")
        if info_hash in self._torrents:
            raise TorrentError(f"torrent {info_hash.hex()} is already in this session")
        params = lt.add_torrent_params()
        known = read_metadata(metadata_file, info_hash) if metadata_file is not None else None
        if known is not None:
            params.ti = known  # libtorrent checks the pieces already in save_dir
        else:
            params.info_hashes = lt.info_hash_t(lt.sha1_hash(info_hash))
        params.save_path = str(save_dir)
        params.flags &= ~_STARTED
        # Added paused and resumed once its peers are known: libtorrent connects to them at the
        # resume at once, where a running torrent waits for its session's once-a-second tick
        # (measured on loopback: 0.05-0.76 s after connect_peer, now 1-2 ms).
        params.flags |= lt.torrent_flags.paused
        torrent = self._add(session, params, info_hash)
        asker = StallAsker(
            info_hash.hex(),
            more_peers,
            lambda peers: self._connect_again_if_there(info_hash, peers, ask_again),
            ask_again,
        )
        try:
            if origins:
                self.add_peers(info_hash, origins, plaintext=True)
            self.add_peers(info_hash, [peer for peer in peers if peer not in (origins or [])])
            torrent.handle.resume()
            path = await self._until_complete(
                torrent, save_dir, timeout, asker, None if known is not None else metadata_file
            )
        except BaseException:
            self._remove(info_hash)
            raise
        finally:
            await asker.close()
        log.info("fetched %s to %s", info_hash.hex(), path)
        return path

    async def move(self, info_hash: bytes, save_dir: Path) -> None:
        """Move a torrent's file into `save_dir`; it goes on seeding from there."""
        self._open()
        torrent = self._get(info_hash)
        torrent.moved = None
        torrent.handle.move_storage(str(save_dir), lt.move_flags_t.always_replace_files)
        await self._wait(lambda: torrent.moved is not None, _CHECK_TIMEOUT, f"moving {info_hash.hex()}")
        if torrent.moved:
            raise TorrentError(f"cannot move torrent {info_hash.hex()} to {save_dir}: {torrent.moved}")

    def remove(self, info_hash: bytes) -> None:
        """Stop seeding or fetching a torrent and forget it; its files stay where they are."""
        self._open()
        self._get(info_hash)
        self._remove(info_hash)
        log.info("removed %s from the session", info_hash.hex())

    def torrent_bytes(self, info_hash: bytes) -> bytes:
        """A .torrent of a torrent in the session whose metadata is known (seeding, or fetched
        far enough): its info dict as it came, so it has the same info-hash. TorrentError when
        the metadata is not known yet."""
        self._open()
        handle = self._get(info_hash).handle
        info = handle.torrent_file()
        if info is None:
            raise TorrentError(f"the metadata of torrent {info_hash.hex()} is not known yet")
        return torrent_of(info)

    def torrents(self) -> list[bytes]:
        """The v1 info-hashes of every torrent in the session (seeding or being fetched)."""
        self._open()
        return sorted(self._torrents)

    def add_peers(self, info_hash: bytes, peers: list[Address], *, plaintext: bool = False) -> None:
        """Connect to `peers`; `plaintext`: offer them no encrypted handshake first (the
        coordinator's own origin seed speaks plaintext only: libtorrent would try encryption,
        be refused and try again in plaintext a second later)."""
        self._open()
        torrent = self._get(info_hash)
        for peer in peers:
            if plaintext:
                torrent.handle.connect_peer(peer, 0, _PEX_PLAINTEXT)
            else:
                torrent.handle.connect_peer(peer)

    def connect_again(self, info_hash: bytes, peers: list[Address], *, idle: float) -> bool:
        """Connect to `peers` again, known or not. First drop the torrent's connections when one
        of them is stuck: it unchoked us, has requests of ours outstanding and sent nothing for
        `idle` seconds (measured: a seed killed mid-transfer stayed so, its socket unread, until
        libtorrent's peer timeout, and connecting to its address again did nothing meanwhile).
        Only then: a peer that merely chokes us keeps its place in the queue (dropping every
        connection each few seconds kept peers of a super-seeding coordinator from ever being
        unchoked). Whether connections were dropped; what the torrent has stays either way."""
        self._open()
        torrent = self._get(info_hash)
        handle = torrent.handle
        stuck = any(_stuck(peer, idle) for peer in handle.get_peer_info())
        if stuck:
            torrent.carried = torrent.payload(handle.status())  # the pause zeroes the counters
            handle.pause()  # libtorrent carries these out in order: drop, go on, connect
            handle.resume()
        for peer in peers:
            handle.connect_peer(peer)
        return stuck

    def _connect_again_if_there(self, info_hash: bytes, peers: list[Address], idle: float) -> bool:
        try:
            dropped = self.connect_again(info_hash, peers, idle=idle)
        except TorrentError:
            return False  # the fetch ended meanwhile
        if dropped:
            log.info("fetch of %s: dropped its connections, one was stuck", info_hash.hex())
        return True

    def stats(self, info_hash: bytes) -> TransferStats:
        self._open()
        torrent = self._get(info_hash)
        status = torrent.handle.status()
        down, up = torrent.payload(status)
        return TransferStats(
            info_hash=info_hash, state=_state(status), total_upload=up, total_download=down, num_peers=status.num_peers
        )

    async def _until_complete(
        self, torrent: _Torrent, save_dir: Path, timeout: float, asker: StallAsker, metadata_file: Path | None
    ) -> Path:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        verified = received = -1
        while True:
            self._open()
            self._raise_if_failed(torrent)
            status = torrent.handle.status()
            if status.has_metadata:
                info = torrent.handle.torrent_file()
                if info.num_files() != 1:
                    raise TorrentError(
                        f"torrent {_key(torrent.handle).hex()} has {info.num_files()} files; "
                        "only single files are fetched"
                    )
                if metadata_file is not None:
                    write_metadata(metadata_file, info)
                    metadata_file = None
                if status.is_seeding and not torrent.finished:
                    # Whole at its check (a resumed fetch whose last piece had come): no
                    # torrent_finished_alert comes for it, but the flush is still asked for.
                    torrent.finished = True
                    torrent.handle.flush_cache()
                if torrent.finished and torrent.flushed:
                    return save_dir / info.name()
            now = loop.time()
            if (down := torrent.payload(status)[0]) > received:
                received = down
                asker.progressed(now)
            if status.total_wanted_done > verified:
                verified = status.total_wanted_done
                deadline = now + timeout
                asker.progressed(now)
            elif now >= deadline:
                raise TorrentTimeout(
                    f"torrent {_key(torrent.handle).hex()} made no progress for {timeout:g} s "
                    f"({verified} of {status.total_wanted} bytes verified)"
                )
            else:
                asker.stalled(now)
            await self._next_change(_STATUS_INTERVAL)

    def _add(self, session: Any, params: Any, key: bytes) -> _Torrent:
        try:
            handle = session.add_torrent(params)
        except RuntimeError as exc:
            raise TorrentError(f"libtorrent refused torrent {key.hex()}: {exc}") from exc
        torrent = _Torrent(handle)
        self._torrents[key] = torrent
        return torrent

    def _remove(self, key: bytes) -> None:
        torrent = self._torrents.pop(key, None)
        if torrent is not None and self._session is not None:
            self._session.remove_torrent(torrent.handle)

    def _get(self, info_hash: bytes) -> _Torrent:
        try:
            return self._torrents[info_hash]
        except KeyError:
            raise TorrentError(f"torrent {info_hash.hex()} is not in this session") from None

    @staticmethod
    def _raise_if_failed(torrent: _Torrent) -> None:
        if torrent.error is not None:
            raise TorrentError(torrent.error)

    async def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        async def poll() -> None:
            while not done():
                self._open()
                await self._next_change(_STATUS_INTERVAL)

        try:
            await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise TorrentTimeout(f"timed out after {timeout:g} s {what}") from None

    # -- alerts --

    def _start_pump(self, interface: str) -> None:
        """Have libtorrent wake the event loop when alerts arrive: it writes a byte to a socket
        each time its queue of alerts becomes non-empty; the loop reads that socket and pops
        them. A slow task pops too, in case a wakeup was ever lost."""
        read_end, write_end = socket.socketpair()
        for end in (read_end, write_end):
            end.setblocking(False)  # a full buffer must never block libtorrent's thread
        self._wakeup = read_end, write_end
        asyncio.get_running_loop().add_reader(read_end.fileno(), self._on_wakeup)
        self._session.set_alert_fd(write_end.fileno())
        self._pump = asyncio.create_task(self._pump_alerts(), name=f"torrent-alerts {interface}")

    def _on_wakeup(self) -> None:
        if self._wakeup is not None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while self._wakeup[0].recv(4096):
                    pass
        self._pop_alerts()

    async def _pump_alerts(self) -> None:
        while True:
            self._pop_alerts()  # at once too: alerts made before the socket was set wake no one
            await asyncio.sleep(_ALERT_SAFETY_INTERVAL)

    def _pop_alerts(self) -> None:
        if self._session is None:
            return
        alerts = self._session.pop_alerts()
        for alert in alerts:
            try:
                self._on_alert(alert)
            except Exception:
                log.exception("cannot handle libtorrent alert %s", type(alert).__name__)
        if alerts:
            self._notify()

    def _notify(self) -> None:
        """Wake whoever waits for the session's state to change (`_next_change`)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _next_change(self, at_most: float) -> None:
        """Until alerts were handled or the session closed, or `at_most` seconds passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._changed.wait()

    def _on_port_mapping(self, alert: Any) -> bool:
        """Keep what the router reported; whether `alert` was about port mapping."""
        if isinstance(alert, lt.portmap_alert):
            if alert.map_protocol == lt.portmap_protocol.tcp and alert.external_port > 0:
                self._mapped_port = int(alert.external_port)
                log.info("the router forwards port %d to this session", self._mapped_port)
            return True
        if isinstance(alert, lt.portmap_error_alert):
            log.warning("port mapping failed: %s", alert.message())
            return True
        if isinstance(alert, lt.external_ip_alert):
            self._external_ip = str(alert.external_address)
            return True
        return False

    def _on_alert(self, alert: Any) -> None:
        """Copy what is needed out of one alert; the alert itself must not be kept."""
        if isinstance(alert, lt.listen_succeeded_alert):
            if alert.socket_type == lt.socket_type_t.tcp:
                self._listening = True
            return
        if isinstance(alert, lt.listen_failed_alert):
            if self._listen_error is None:
                self._listen_error = alert.message()
            log.warning("%s", alert.message())
            return
        if self._port_mapping and self._on_port_mapping(alert):
            return
        if not isinstance(alert, lt.torrent_alert):
            return
        torrent = self._torrents.get(_key(alert.handle))
        if torrent is None:
            return
        if isinstance(alert, lt.torrent_checked_alert):
            torrent.checked = True
        elif isinstance(alert, lt.torrent_finished_alert):
            # Finished means hashed, not written: pieces may still wait in libtorrent's store
            # buffer, and a reader of the file would see holes. Ask for the flush and wait.
            torrent.finished = True
            torrent.handle.flush_cache()
        elif isinstance(alert, lt.cache_flushed_alert):
            torrent.flushed = torrent.finished
        elif isinstance(alert, lt.storage_moved_alert):
            torrent.moved = ""
        elif isinstance(alert, lt.storage_moved_failed_alert):
            torrent.moved = alert.message() or "libtorrent gave no reason"
        elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
            torrent.error = alert.message()
            log.warning("torrent failed: %s", torrent.error)
        elif isinstance(alert, (lt.hash_failed_alert, lt.peer_ban_alert)):
            log.warning("%s", alert.message())


def _stuck(peer: Any, idle: float) -> bool:
    """Whether a connection unchoked us, has our requests outstanding, and was silent `idle` s."""
    last = peer.last_active
    silent = last.total_seconds() if hasattr(last, "total_seconds") else float(last)
    return not peer.flags & lt.peer_info.remote_choked and peer.download_queue_length > 0 and silent >= idle


def _state(status: Any) -> TorrentState:
    if status.state in _CHECKING:
        return TorrentState.CHECKING
    return TorrentState(status.state.name)
