"""A holder's part in the swarm of each torrent it seeds or fetches, as the DHT tells it:
announcing itself under `swarm_key(info_hash)`, withdrawing, and finding the other members (those
that hold the torrent and those fetching it) to fetch from.

The peer's bundle cache (`peer/bundles.py`) and the coordinator's seeder
(`coordinator/seeder.py`) both seed bundles and stand behind the same swarm records, so the
records are made, published and read here, once. It lives in overlay rather than beside the
bundle format in `workloads/bundle/`: nothing in it is about bundles (an info-hash, an address,
a signed record, a torrent session and a DHT node, all of this package), and peer and
coordinator, which must not import each other, both sit above it.

Records of one signer are ranked by `issued_at`, so each record for an info-hash, a withdrawal
included, is issued strictly after the last one: a clock that stands still (or steps back)
cannot leave a withdrawn member announced. Everything that talks to the DHT is best effort and
bounded by `DHT_TIMEOUT`: a DHT that does not answer costs sharing, never a seed or a fetch.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Protocol

from overlay import records
from overlay.announcements import SwarmMember, swarm_key
from overlay.dht import DhtNode
from overlay.identity import Identity
from overlay.records import RecordError, SignedRecord
from overlay.torrent import Address, TorrentError, TorrentSession
from overlay.wire import SwarmAddress

log = logging.getLogger(__name__)

DHT_TIMEOUT = 15.0  # seconds a lookup or publish may take before the caller goes on without it
# Seconds between lookups of the swarm while fetching: soon after the start, when peers that
# started together have announced themselves, then less and less often.
MEET_AFTER = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


class Listening(Protocol):
    """What announcing needs of a seed: where it listens, and what a router forwards to it.
    A `TorrentSession`, or the coordinator's own origin seed (`overlay.origin`)."""

    @property
    def listen_port(self) -> int: ...

    @property
    def mapped_port(self) -> int | None: ...

    @property
    def external_ip(self) -> str | None: ...


# ---- the pure part ------------------------------------------------------------------------


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_unspecified(host: str) -> bool:
    """Whether `host` is "0.0.0.0" or "::": where one listens, but no address to give others."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False  # a host name


def next_issue_time(previous: float | None, now: float) -> float:
    """When to issue the next record of a key whose last one was issued at `previous`: now,
    unless that would not be strictly newer."""
    return now if previous is None or now > previous else previous + 0.001


def members_in(found: Iterable[SignedRecord], me: bytes) -> list[Address]:
    """The addresses the swarm records `found` name, leaving out those `me` signed (perhaps
    before a restart) and any that are no literal IP address: a record must not make its
    reader resolve names its signer chose."""
    members = []
    for record in found:
        if record.signer == me:
            continue
        member = SwarmMember.from_record(record)
        if member is not None and is_ip(member.host):
            members.append((member.host, member.port))
    return members


# ---- the holder ---------------------------------------------------------------------------


class SwarmMembership:
    """This holder's swarm records in `dht`, for torrents seeded by `torrents` at `host` (and
    `port`, where a NAT forwards another port to ours; default: the session's listen port).

    `torrents` and `dht` belong to the caller (neither is started nor closed here). With no
    `dht`, or a `host` that is None or unspecified, nothing is announced and no member is found;
    fetching still works from the seeds the caller names.
    """

    def __init__(
        self,
        torrents: TorrentSession | Listening,
        identity: Identity,
        *,
        dht: DhtNode | None,
        host: str | None,
        ttl: float,
        port: int | None = None,
        withdrawal_ttl: float = records.WITHDRAWAL_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("ttl", ttl), ("withdrawal_ttl", withdrawal_ttl)):
            if not 0 < value <= records.MAX_TTL:
                raise ValueError(f"{name} must be in (0, {records.MAX_TTL:g}] seconds")
        self._torrents = torrents
        self._identity = identity
        self._dht = dht
        self._host = host
        self._port = port
        self._ttl = ttl
        self._withdrawal_ttl = withdrawal_ttl
        self._clock = clock
        # info-hash -> issued_at of our last record that the DHT took, so a withdrawal is newer.
        self._announced: dict[bytes, float] = {}

    @property
    def host(self) -> str | None:
        return self._host

    @property
    def can_announce(self) -> bool:
        return self._announced_host() is not None

    def _announced_host(self) -> str | None:
        """The host our records name; None when there is no DHT or no host others can reach."""
        if self._dht is None or self._host is None or is_unspecified(self._host):
            return None
        return self._host

    @property
    def announced(self) -> list[bytes]:
        """The info-hashes whose member record we published and have not withdrawn."""
        return sorted(self._announced)

    # -- our records --

    async def announce(self, info_hash: bytes) -> int:
        """Tell the DHT that we seed `info_hash`; how many DHT nodes stored the record (0 when
        it could not be announced: that is logged, never raised)."""
        host = self._announced_host()
        if host is None:
            return 0
        try:
            listen_port = self._torrents.listen_port
        except TorrentError as exc:
            log.warning("cannot announce %s: %s", info_hash.hex(), exc)
            return 0
        mapped = self._torrents.mapped_port, self._torrents.external_ip
        host, port = reachable_at(host, self._port, listen_port, mapped)
        key = swarm_key(info_hash)
        member = SwarmMember(self._identity.public_hex, host, port)
        issued_at = next_issue_time(self._announced.get(info_hash), self._clock())
        stored = await self._publish(key, records.sign(self._identity, key, member.payload(), issued_at, self._ttl))
        if stored is not None:
            self._announced[info_hash] = issued_at
        return stored or 0

    async def withdraw(self, info_hash: bytes) -> None:
        """Replace our record for `info_hash` with a withdrawal, if we announced it."""
        previous = self._announced.get(info_hash)
        if self._dht is None or previous is None:
            return
        key = swarm_key(info_hash)
        record = records.withdrawal(self._identity, key, next_issue_time(previous, self._clock()), self._withdrawal_ttl)
        if await self._publish(key, record) is not None:
            self._announced.pop(info_hash, None)

    async def withdraw_all(self) -> int:
        """Withdraw every record we announced; how many there were."""
        announced = self.announced
        await asyncio.gather(*(self.withdraw(info_hash) for info_hash in announced))
        return len(announced)

    async def _publish(self, key: str, record: SignedRecord) -> int | None:
        """How many DHT nodes stored `record`; None when publishing failed or timed out."""
        assert self._dht is not None
        try:
            async with asyncio.timeout(DHT_TIMEOUT):
                return await self._dht.publish(key, record)
        except (TimeoutError, RecordError, RuntimeError, OSError) as exc:
            log.warning("cannot publish %r in the DHT: %s", key, exc or "timed out")
            return None

    # -- the others --

    async def members(self, info_hash: bytes) -> list[Address]:
        """Every other holder of `info_hash` the DHT knows; [] without a DHT or an answer."""
        if self._dht is None:
            return []
        try:
            async with asyncio.timeout(DHT_TIMEOUT):
                found = await self._dht.lookup(swarm_key(info_hash))
        except (TimeoutError, RuntimeError, OSError) as exc:
            log.warning("cannot look up the swarm of %s in the DHT: %s", info_hash.hex(), exc or "timed out")
            return []
        return members_in(found, self._identity.public_key)

    async def sources(self, info_hash: bytes, seeds: Iterable[SwarmAddress], *, members: bool = True) -> list[Address]:
        """Where to fetch `info_hash` from: the `seeds` given, then (`members`) every other
        member, without ourselves and without repeats."""
        peers: list[Address] = []
        for seed in seeds:
            peers.extend(await resolve(seed.host, seed.port))
        if members:
            peers.extend(await self.members(info_hash))
        me: set[Address] = set()
        if self._host:
            listen_port = self._torrents.listen_port
            mapped = self._torrents.mapped_port, self._torrents.external_ip
            me = {(self._host, listen_port), reachable_at(self._host, self._port, listen_port, mapped)}
        return [peer for peer in dict.fromkeys(peers) if peer not in me]

    async def fetch(
        self,
        info_hash: bytes,
        save_dir: Path,
        seeds: Iterable[SwarmAddress],
        *,
        timeout: float,
        seeds_again: Callable[[], Awaitable[Iterable[SwarmAddress]]] | None = None,
        metadata_file: Path | None = None,
    ) -> Path:
        """Fetch the single-file torrent `info_hash` into `save_dir` from its `sources`; the
        file's path. Raises TorrentError as `TorrentSession.fetch` does.

        The fetch starts from the seeds at once (in plaintext: they are the coordinator's
        origin, which speaks no encrypted handshake) and meets the other members as the DHT
        answers. A fetcher is a member from its start: it announces itself at once (libtorrent
        serves the pieces it has) and looks the swarm up at once and again while it fetches
        (`MEET_AFTER`), adding whoever joined. Peers that start together would otherwise know only the seeds, and
        meet each other only through the seed's peer exchange, seconds later, while every piece
        comes from the seed. A fetch that fails withdraws the record it made.

        While the fetch is stalled it asks again, every few seconds, for the sources: the DHT's
        members and the seeds `seeds_again` gives (the `seeds` given first when there is no
        `seeds_again`), so that a seed that went away and came back, on another port perhaps,
        is found. `metadata_file`: see `TorrentSession.fetch`."""
        seeds = list(seeds)

        async def more_peers() -> list[Address]:
            again = list(await seeds_again()) if seeds_again is not None else seeds
            return await self.sources(info_hash, again)

        if not isinstance(self._torrents, TorrentSession):
            raise TypeError("fetching needs a TorrentSession")
        torrents = self._torrents
        # With seeds named, the fetch starts from them at once and meets the members as the DHT
        # answers (`_meet`, first at once): a lookup that waits on a node's timeout held
        # fetches back by a second (bench/net_swarm).
        peers = await self.sources(info_hash, seeds, members=not seeds)
        # The seeds a coordinator names are its origin: connected to in plaintext (overlay.origin).
        origins = [peer for seed in seeds for peer in await resolve(seed.host, seed.port) if peer in peers]
        was_announced = info_hash in self._announced
        # In the background: a DHT that is slow to answer must not hold the fetch back.
        announcing = asyncio.create_task(self.announce(info_hash), name=f"announce {info_hash.hex()}")
        meeting = asyncio.create_task(self._meet(info_hash, set(peers), torrents), name=f"meet {info_hash.hex()}")
        try:
            path = await torrents.fetch(
                info_hash,
                save_dir,
                peers,
                timeout=timeout,
                more_peers=more_peers,
                metadata_file=metadata_file,
                origins=origins,
            )
        except Exception:
            await asyncio.gather(announcing, return_exceptions=True)
            if not was_announced:
                await self.withdraw(info_hash)
            raise
        else:
            await asyncio.gather(announcing, return_exceptions=True)  # a later record is newer than it
            return path
        finally:
            meeting.cancel()
            await asyncio.gather(meeting, return_exceptions=True)

    async def _meet(self, info_hash: bytes, known: set[Address], torrents: TorrentSession) -> None:
        """Look the swarm up after each delay of `MEET_AFTER` (then every last one of them),
        and connect the fetch to the members not seen before."""
        me = (self._host, self._torrents.listen_port) if self._host else None
        for delay in itertools.chain(MEET_AFTER, itertools.repeat(MEET_AFTER[-1])):
            await asyncio.sleep(delay)
            new = [m for m in await self.members(info_hash) if m not in known and m != me]
            if not new:
                continue
            try:
                torrents.add_peers(info_hash, new)
            except TorrentError:  # not added yet, or already gone: try again next time
                continue
            known.update(new)


def reachable_at(
    host: str, port: int | None, listen_port: int, mapped: tuple[int | None, str | None] = (None, None)
) -> Address:
    """Where others reach a holder configured at `host` (and `port`, a forwarded one, if
    given) whose session listens on `listen_port`: a port the router forwards (`mapped`: the
    port and the router's outside address, from UPnP or NAT-PMP) replaces a private address
    and the listen port; an address and port the volunteer named are kept."""
    mapped_port, external_ip = mapped
    if port is not None:
        return host, port
    if mapped_port is not None and external_ip is not None and not _is_global(host) and _is_global(external_ip):
        return external_ip, mapped_port
    return host, listen_port


def _is_global(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return False


async def resolve(host: str, port: int) -> list[Address]:
    """`host` as IP addresses (libtorrent connects to addresses only); [] if it does not resolve."""
    if is_ip(host):
        return [(host, port)]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=0, proto=6)
    except OSError as exc:
        log.warning("cannot resolve seed %s: %s", host, exc)
        return []
    return list(dict.fromkeys((str(info[4][0]), port) for info in infos))
