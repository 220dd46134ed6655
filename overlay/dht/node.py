"""`DhtNode`: lifecycle, bootstrap, periodic pings and saves around the guarded kademlia pieces."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import socket
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kademlia.node import Node
from kademlia.utils import digest

from overlay.dht.checks import (
    BOOTSTRAP_ATTEMPTS,
    BOOTSTRAP_CONCURRENCY,
    MAX_SAVED_CONTACTS,
    PING_CONCURRENCY,
    PING_INTERVAL,
    PINGS_PER_ROUND,
    RECEIVE_BUFFER_BYTES,
    SAVE_INTERVAL,
    STALL_AFTER,
    Address,
)
from overlay.dht.limits import (
    DhtLimits,
    Ledger,
)
from overlay.dht.lookups import (
    Lookup,
    find_nodes,
    find_records,
)
from overlay.dht.protocol import (
    _Server,
)
from overlay.dht.state import (
    _load_state,
    _Saved,
    _write_state,
)
from overlay.dht.storage import (
    StorageUsage,
    _RecordStorage,
)
from overlay.dht.verifying import (
    SignatureChecks,
)
from overlay.records import (
    DEFAULT_MAX_RECORDS,
    RecordError,
    SignedRecord,
    check,
    encode_set,
    is_withdrawn,
    merge,
)

log = logging.getLogger("overlay.dht")  # one logger for the whole node

_bootstrap_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _bootstrap_slot() -> asyncio.Semaphore:
    # One semaphore per event loop: an asyncio.Semaphore is bound to the loop it first waits in.
    loop = asyncio.get_running_loop()
    slot = _bootstrap_slots.get(loop)
    if slot is None:
        slot = _bootstrap_slots[loop] = asyncio.Semaphore(BOOTSTRAP_CONCURRENCY)
    return slot


def _widen_receive_buffer(server: _Server) -> None:
    """Ask for a larger UDP receive buffer (the kernel caps it at net.core.rmem_max): the ~200 kB
    default holds only a few hundred datagrams, and a node that many others ask at once (a
    bootstrap node in a flash crowd) drops the rest."""
    sock = server.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class DhtNode:
    """One DHT node on `listen` (an IP address and port; port 0 picks one).

    Use as `async with DhtNode(...) as node:`, or `await start()` and `await close()`. A closed
    node cannot be started again. Bootstrap addresses must be IP addresses, not host names.
    `stall_after`: how long a lookup waits for one node's answer before it stops holding the
    lookup up (traversal.py); `rpc_timeout`: when it counts as silent and leaves the routing
    table. `limits` bound what it stores and does for others (limits.py; docs/security.md). A
    `client_only` node looks things up without joining: the nodes it asks do not add it to
    their routing tables (`osaas dht lookup`, which leaves at once).
    """

    def __init__(
        self,
        listen: Address,
        bootstrap: Sequence[Address] = (),
        *,
        state_path: Path | None = None,
        rpc_timeout: float = 1.0,
        stall_after: float = STALL_AFTER,
        max_records: int = DEFAULT_MAX_RECORDS,
        clock: Callable[[], float] = time.time,
        ping_interval: float = PING_INTERVAL,
        save_interval: float = SAVE_INTERVAL,
        limits: DhtLimits | None = None,
        client_only: bool = False,
    ) -> None:
        self._listen = listen
        self._client_only = client_only  # asks, never joins: others keep it out of their tables
        self._bootstrap = tuple(bootstrap)
        self._state_path = state_path
        self._rpc_timeout = rpc_timeout
        self._stall_after = min(stall_after, rpc_timeout)
        self._max_records = max_records
        self._clock = clock
        self._ping_interval = ping_interval
        self._save_interval = save_interval
        self._limits = limits or DhtLimits()
        self._checks = SignatureChecks(self._limits)
        self._state = _State.NEW
        self._server: _Server | None = None
        self._saved: _Saved = _Saved(None, ())
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> DhtNode:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen, then join through the saved contacts and the bootstrap addresses."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"DhtNode is {self._state.value}; it can be started once")
        self._state = _State.OPEN
        if self._state_path is not None:
            self._saved = _load_state(self._state_path)
        storage = _RecordStorage(self._clock, self._max_records, Ledger(self._limits), self._checks)
        self._server = _Server(storage, self._saved.node_id, self._rpc_timeout, self._client_only)
        try:
            await self._server.listen(self._listen[1], interface=self._listen[0])
        except OSError:
            await self.close()
            raise
        _widen_receive_buffer(self._server)
        await self._join()
        self._tasks = [
            asyncio.create_task(self._every(self._ping_interval, self._maintain)),
            asyncio.create_task(self._every(self._save_interval, self._save_state)),
        ]

    async def close(self) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._server is not None and self._server.protocol is not None:
            await self._save_state()
            self._server.protocol.shutdown()
        if self._server is not None:
            self._server.stop()

    @property
    def address(self) -> Address:
        server = self._open()
        host, port = server.transport.get_extra_info("sockname")[:2]
        return (host, port)

    @property
    def node_id(self) -> bytes:
        """This node's Kademlia id: which keys it holds depends on it."""
        return bytes(self._open().node.id)

    def neighbours(self) -> list[Address]:
        """Every contact in the routing table, closest to this node first."""
        server = self._open()
        return [(n.ip, n.port) for n in self._contacts(server)]

    def usage(self) -> StorageUsage:
        """What this node holds for others, and the signature checks it has made."""
        return self._open().storage.usage()

    @property
    def handed_off(self) -> int:
        """Stores this node has sent to newcomers it met (at most `limits.handoff_keys` each)."""
        return self._open().protocol.handed_off

    async def bootstrap_again(self) -> int:
        """Rejoin through current, saved and bootstrap contacts; the number of nodes found."""
        self._open()
        return await self._join()

    async def publish(self, key: str, record: SignedRecord) -> int:
        """Store `record` on the k nodes closest to `key`; how many accepted it (0: none did).

        Raises `RecordError` if `record` is not valid for `key` now: that is the caller's bug.
        """
        server = self._open()
        check(record, key, self._clock())
        dkey = digest(key)
        target = Node(dkey)
        value = encode_set(key, [record])
        nearest = server.protocol.router.find_neighbors(target)
        if not nearest:
            # Alone (the first node of a network): keep it here, where joining nodes will look.
            self._keep_here(server, dkey, value, key)
            log.info("no other DHT node known yet: %r kept on this node only", key)
            return 0
        closest, _ = await find_nodes(server.protocol, dkey, nearest, server.ksize, server.alpha, self._stall_after)
        # As kademlia's set(): keep a copy here too when this node is among the closest.
        if not closest or server.node.distance_to(target) < max(n.distance_to(target) for n in closest):
            self._keep_here(server, dkey, value, key)
        answers = await asyncio.gather(*(server.protocol.call_store(n, dkey, value) for n in closest))
        stored = sum(1 for answered, accepted in answers if answered and accepted is True)
        log.info("published %r by %s to %d of %d nodes", key, record.signer.hex()[:16], stored, len(closest))
        return stored

    async def lookup(self, key: str) -> list[SignedRecord]:
        """The valid, unexpired, not withdrawn records under `key`, merged from every node asked."""
        return list((await self.lookup_detailed(key)).records)

    async def lookup_detailed(self, key: str) -> Lookup:
        server = self._open()
        now = self._clock()
        dkey = digest(key)
        target = Node(dkey)
        nearest = server.protocol.router.find_neighbors(target)
        found, traversal = await find_records(
            server.protocol, dkey, key, nearest, server.ksize, server.alpha, self._stall_after
        )
        # Signatures already seen good (ours, or in earlier lookups) are not checked again.
        merged = merge(
            server.storage.records_at(dkey), list(found.records), key, now, self._max_records, self._checks.check
        )
        # As kademlia's get(): give the nearest node that lacked the set a copy.
        if merged and found.without:
            nearest_without = min(found.without, key=target.distance_to)
            await server.protocol.call_store(nearest_without, dkey, encode_set(key, merged))
        live = tuple(r for r in merged if not is_withdrawn(r))
        return Lookup(live, traversal.rounds, traversal.rpcs, found.holders)

    async def ping_contacts(self, quiet_for: float = 0.0, at_most: int | None = None) -> int:
        """Ping the contacts not heard from in the last `quiet_for` seconds (all of them by
        default), the longest silent first, at most `at_most` of them, a few at a time; kademlia
        drops those that do not answer. How many were dropped."""
        server = self._open()
        protocol = server.protocol
        quiet = [n for n in self._contacts(server) if not (quiet_for and protocol.heard_lately(n.id, quiet_for))]
        quiet.sort(key=lambda n: protocol.last_heard(n.id))
        quiet = quiet[:at_most]
        dropped = 0
        # All at once, a node's answers would arrive together and could overflow its buffer.
        for batch in range(0, len(quiet), PING_CONCURRENCY):
            answers = await asyncio.gather(*(protocol.call_ping(n) for n in quiet[batch : batch + PING_CONCURRENCY]))
            dropped += sum(1 for answered, _ in answers if not answered)
        return dropped

    async def _maintain(self) -> None:
        """Evict dead contacts, a few each round: those silent longest. Contacts also go when a
        lookup finds them silent, and a silent one costs a lookup little (traversal.py), so the
        whole table need not be pinged every round: with thousands of nodes on one machine, or
        a flash crowd whose nodes all got their contacts at once, that was most of the traffic.
        A node left with none (its bootstrap node was not up yet, or the network went away)
        keeps trying to join."""
        await self.ping_contacts(quiet_for=self._ping_interval, at_most=PINGS_PER_ROUND)
        if not self.neighbours():
            await self._join()

    # -- helpers

    def _open(self) -> _Server:
        if self._state is not _State.OPEN or self._server is None:
            raise RuntimeError(f"DhtNode is {self._state.value}")
        return self._server

    @staticmethod
    def _keep_here(server: _Server, dkey: bytes, value: bytes, key: str) -> None:
        try:
            server.storage.store(dkey, value)
        except RecordError as exc:  # full of others' keys: the record still goes to the others
            log.warning("not keeping %r on this node: %s", key, exc)

    @staticmethod
    def _contacts(server: _Server) -> list[Node]:
        return server.protocol.router.find_neighbors(server.node, k=MAX_SAVED_CONTACTS)

    async def _join(self) -> int:
        server = self._open()
        me = self.address
        candidates = [*self.neighbours(), *self._saved.contacts, *self._bootstrap]
        addresses = list(dict.fromkeys(a for a in candidates if a != me))
        if not addresses:
            return 0
        pause = self._rpc_timeout
        for attempt in range(1, BOOTSTRAP_ATTEMPTS + 1):
            async with _bootstrap_slot():
                # As kademlia's bootstrap(), through our lookup: ping every address, then look
                # ourselves up through those that answered.
                answering = await asyncio.gather(*(server.bootstrap_node(a) for a in addresses))
                start = [node for node in answering if node is not None]
                found, _ = await find_nodes(
                    server.protocol, server.node.id, start, server.ksize, server.alpha, self._stall_after
                )
            if found:
                return len(found)
            if attempt < BOOTSTRAP_ATTEMPTS:
                # A flash crowd of newcomers can swamp the bootstrap nodes: come back soon, not
                # all at once, rather than at the next maintenance round.
                await asyncio.sleep(pause * random.uniform(0.5, 1.5))
                pause *= 2
        log.warning("DHT bootstrap through %d addresses found no nodes", len(addresses))
        return 0

    async def _save_state(self) -> None:
        if self._state_path is None or self._server is None:
            return
        contacts = tuple((n.ip, n.port) for n in self._contacts(self._server))
        if not contacts:
            # An isolated moment must not erase the contacts a restart would need.
            return
        self._saved = _Saved(self._server.node.id, contacts)
        try:
            _write_state(self._state_path, self._saved)
        except OSError as exc:
            log.warning("cannot save DHT state to %s: %s", self._state_path, exc)

    @staticmethod
    async def _every(interval: float, action: Callable[[], Any]) -> None:
        while True:
            # Jittered, so that nodes started together (a flash crowd) do not ping in step.
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))
            try:
                await action()
            except Exception:  # one failed round must not end the maintenance
                log.exception("DHT maintenance failed; will try again")
