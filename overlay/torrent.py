"""One libtorrent session behind an asyncio surface: make, seed and fetch single-file torrents.

libtorrent is wrapped here and nowhere else; its errors and alerts become our exceptions:

    TorrentError            anything libtorrent refused or reported as failed
     ├── TorrentTimeout     a fetch made no verified progress for its timeout (e.g. the only
     │                      source serves corrupt data: libtorrent bans it, then waits forever)
     └── SessionClosed      the session was used after it closed, or ended a waiting call

Facts this module is built on were measured on this kind of machine (rates at the interface:
`_wire_settings`): loopback swarms need
`allow_multiple_connections_per_ip`; rate limits skip local peers unless
`ignore_limits_on_local_network` is off; torrents are added neither paused nor auto-managed so
that no queue limit (3 active downloads by default) holds them back; alert objects are copied
into plain values as soon as they are popped, because touching one later can segfault.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import secrets
import socket
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libtorrent as lt

from overlay.errors import OsaasError

log = logging.getLogger(__name__)
_MAX_RATE = 2**31 - 1
WIRE_SHARE = 1.06  # frames per byte of payload, at most (TCP over IPv6 at MTU 1500)
WINDOW_SECONDS = 0.25  # of a limited rate, what the peers' socket buffers may hold together
PEER_SHARE = 8  # peers a limited session is assumed to trade with at once
MIN_SOCKET_BUFFER = 8 * 1024
MAX_SOCKET_BUFFER = 4 * 1024 * 1024

Address = tuple[str, int]

_POLL_INTERVAL = 0.05
_LISTEN_TIMEOUT = 5.0
_LISTEN_GRACE = 0.5  # after one address failed to listen, how long another may still succeed
_FREE_PORT_TRIES = 20
_CHECK_TIMEOUT = 120.0
_PEER_ID_PREFIX = "-OS0100-"
_PEER_ID_FILE = "peer_id"
_PORT_FILE = "listen_port"  # the port a session chose for port 0, kept for the next start
_PEER_ID_ALPHABET = string.ascii_letters + string.digits
_ALERT_MASK = lt.alert_category.status | lt.alert_category.error | lt.alert_category.storage | lt.alert_category.peer
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

    __slots__ = ("handle", "checked", "finished", "flushed", "error")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.checked = False
        self.finished = False  # every piece passed its hash check
        self.flushed = False  # and was written to the file: readers see the whole of it
        self.error: str | None = None


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
    (libtorrent's unchoke slots; default 8). `state_dir` keeps the session's peer id across restarts.
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
            self._session.apply_settings(_wire_settings(self._upload_rate, self._download_rate))

    def rates(self) -> tuple[int, int]:
        """(upload, download) rate limits in bytes/s as libtorrent holds them (WIRE_SHARE under
        the rates given, see `_wire_settings`); 0: unlimited."""
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
            port = self._chosen_port(host)
        interface = _interfaces(host, port)
        settings: lt.settings_pack = {
            "listen_interfaces": interface,
            # Listen where asked or fail: libtorrent would otherwise try the next ports,
            # then any port the system gives.
            "max_retry_port_bind": 0,
            "listen_system_port_fallback": False,
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": self._port_mapping,
            "enable_natpmp": self._port_mapping,
            "allow_multiple_connections_per_ip": True,
            "ignore_limits_on_local_network": False,
            **({"unchoke_slots_limit": self._upload_slots} if self._upload_slots else {}),
            # A seed unchokes the peers that have least or nearly all of the torrent
            # rather than the fastest: pieces reach more hands sooner and are passed on,
            # so the seed sends fewer of them twice (bench/bundle_swarm.py at N=16:
            # 1.47-1.52x -> 1.24-1.44x of the bundle from the coordinator).
            "seed_choking_algorithm": int(lt.seed_choking_algorithm_t.anti_leech),
            # A fingerprint of 20 characters is used as the whole peer id, so peers can
            # be told apart in stats whichever side opened the connection.
            "peer_fingerprint": self._peer_id.decode("ascii"),
            "alert_mask": _ALERT_MASK | (lt.alert_category.port_mapping if self._port_mapping else 0),
        }
        settings.update(_wire_settings(self._upload_rate, self._download_rate))
        self._session = lt.session(settings)
        self._pump = asyncio.create_task(self._pump_alerts(), name=f"torrent-alerts {interface}")
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
            (self._state_dir / _PORT_FILE).write_text(f"{self.listen_port}\n")
        log.info("torrent session listening on %s:%d", host, self.listen_port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        session, self._session = self._session, None
        self._torrents.clear()
        if session is not None:
            session.pause()
            # The destructor waits for libtorrent's threads to stop, so the last reference is
            # dropped in a worker thread while the event loop keeps running.
            holder = [session]
            del session
            await asyncio.to_thread(holder.clear)

    def _chosen_port(self, host: str) -> int:
        """The port to listen on when asked for any (port 0): the one chosen last time if it is
        free, else one the system has free now. Chosen here, not by libtorrent: on an
        unspecified host (0.0.0.0) libtorrent opens a socket per interface, each on a random
        port of its own, and the one port the session reports is not reachable on every
        address; with one port named, every interface gets that port. And kept: a coordinator
        that restarts keeps seeding where its peers were fetching from."""
        saved = self._state_dir / _PORT_FILE
        try:
            remembered = int(saved.read_text().strip())
        except (OSError, ValueError):
            remembered = 0
        if 0 < remembered < 65536 and _port_is_free(host, remembered):
            return remembered
        return _free_port(host)

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

    async def fetch(self, info_hash: bytes, save_dir: Path, peers: list[Address], *, timeout: float) -> Path:
        """Download a single-file torrent by v1 info-hash from `peers`; return the file's path.

        Raises TorrentTimeout when no piece passes its hash check for `timeout` seconds (metadata
        included). On any failure the torrent leaves the session; partial data stays in save_dir.
        On success it stays, seeding.
        """
        session = self._open()
        if len(info_hash) != 20:
            raise ValueError("info_hash must be the 20-byte v1 info-hash")
        if info_hash in self._torrents:
            raise TorrentError(f"torrent {info_hash.hex()} is already in this session")
        params = lt.add_torrent_params()
        params.info_hashes = lt.info_hash_t(lt.sha1_hash(info_hash))
        params.save_path = str(save_dir)
        params.flags &= ~_STARTED
        torrent = self._add(session, params, info_hash)
        try:
            self.add_peers(info_hash, peers)
            path = await self._until_complete(torrent, save_dir, timeout)
        except BaseException:
            self._remove(info_hash)
            raise
        log.info("fetched %s to %s", info_hash.hex(), path)
        return path

    def remove(self, info_hash: bytes) -> None:
        """Stop seeding or fetching a torrent and forget it; its files stay where they are."""
        self._open()
        self._get(info_hash)
        self._remove(info_hash)
        log.info("removed %s from the session", info_hash.hex())

    def torrents(self) -> list[bytes]:
        """The v1 info-hashes of every torrent in the session (seeding or being fetched)."""
        self._open()
        return sorted(self._torrents)

    def add_peers(self, info_hash: bytes, peers: list[Address]) -> None:
        self._open()
        torrent = self._get(info_hash)
        for peer in peers:
            torrent.handle.connect_peer(peer)

    def stats(self, info_hash: bytes) -> TransferStats:
        self._open()
        torrent = self._get(info_hash)
        status = torrent.handle.status()
        return TransferStats(
            info_hash=info_hash,
            state=_state(status),
            total_upload=status.total_payload_upload,
            total_download=status.total_payload_download,
            num_peers=status.num_peers,
        )

    async def _until_complete(self, torrent: _Torrent, save_dir: Path, timeout: float) -> Path:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        verified = -1
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
                if torrent.finished and torrent.flushed:
                    return save_dir / info.name()
            if status.total_wanted_done > verified:
                verified = status.total_wanted_done
                deadline = loop.time() + timeout
            elif loop.time() >= deadline:
                raise TorrentTimeout(
                    f"torrent {_key(torrent.handle).hex()} made no progress for {timeout:g} s "
                    f"({verified} of {status.total_wanted} bytes verified)"
                )
            await asyncio.sleep(_POLL_INTERVAL)

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
                await asyncio.sleep(_POLL_INTERVAL)

        try:
            await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise TorrentTimeout(f"timed out after {timeout:g} s {what}") from None

    # -- alerts --

    async def _pump_alerts(self) -> None:
        while True:
            for alert in self._session.pop_alerts():
                try:
                    self._on_alert(alert)
                except Exception:
                    log.exception("cannot handle libtorrent alert %s", type(alert).__name__)
            await asyncio.sleep(_POLL_INTERVAL)

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
        elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
            torrent.error = alert.message()
            log.warning("torrent failed: %s", torrent.error)
        elif isinstance(alert, (lt.hash_failed_alert, lt.peer_ban_alert)):
            log.warning("%s", alert.message())


def _interfaces(host: str, port: int) -> str:
    """libtorrent's listen_interfaces for `host`: an unspecified host of either family means
    both families (where this machine has IPv6), on the one port: a peer on "0.0.0.0" could
    neither be reached over IPv6 nor connect out to an IPv6 seed."""
    if _is_unspecified(host):
        return f"0.0.0.0:{port},[::]:{port}" if _has_ipv6() else f"0.0.0.0:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _hosts_of(host: str) -> list[str]:
    """The addresses a session on `host` binds: both families' for an unspecified one."""
    if _is_unspecified(host):
        return ["0.0.0.0", "::"] if _has_ipv6() else ["0.0.0.0"]
    return [host]


def _wire_settings(upload_rate: int, download_rate: int) -> lt.settings_pack:
    """libtorrent's settings for rates that must hold at the network interface (0: unlimited).

    libtorrent's limiter counts BitTorrent's bytes and an estimate of the IP headers, while
    the interface counts whole frames: its limits are set lower by WIRE_SHARE. Connections are
    TCP only: µTP keeps its receive window in libtorrent's own buffers, so the kernel accepts
    what the limiter has not yet allowed, and its headers are not in the estimate. And each
    socket's buffers are kept to a share of the rate (`socket_buffer`), so that what several
    peers send at once cannot pile up in the kernel far ahead of the limiter; measured across
    namespaces at 250 kB/s from three peers: 1.16-1.25x of the download rate over 10 s with
    the defaults, 0.94-0.98x with these.
    """
    buffer = socket_buffer(max(upload_rate, download_rate))  # 0: the kernel's own
    return {
        "upload_rate_limit": int(upload_rate / WIRE_SHARE),
        "download_rate_limit": int(download_rate / WIRE_SHARE),
        "rate_limit_ip_overhead": True,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "recv_socket_buffer_size": buffer,
        "send_socket_buffer_size": buffer,
    }


def socket_buffer(rate: int) -> int:
    """The receive and send buffer of each peer connection for a limited `rate` (bytes/s; 0,
    unlimited: the kernel's own tuning): WINDOW_SECONDS of it over PEER_SHARE peers, at least
    MIN_SOCKET_BUFFER. A buffer caps one connection at about buffer/RTT, so a generous rate
    still gets buffers large enough for its speed."""
    if rate <= 0:
        return 0
    return int(min(max(rate * WINDOW_SECONDS / PEER_SHARE, MIN_SOCKET_BUFFER), MAX_SOCKET_BUFFER))


def _port_is_free(host: str, port: int) -> bool:
    return all(_bind_works(each, port) for each in _hosts_of(host))


def _bind_works(host: str, port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libtorrent binds
            probe.bind((host, port))
    except OSError:
        return False
    return True


def _free_port(host: str) -> int:
    """A port free on every address a session on `host` binds."""
    first = _hosts_of(host)[0]
    for _ in range(_FREE_PORT_TRIES):
        with socket.socket(socket.AF_INET6 if ":" in first else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((first, 0))
            port = int(probe.getsockname()[1])
        if _port_is_free(host, port):
            return port
    raise TorrentError(f"no port is free on every address of {host}")


def _state(status: Any) -> TorrentState:
    if status.state in _CHECKING:
        return TorrentState.CHECKING
    return TorrentState(status.state.name)
