"""A Kademlia DHT node whose keys hold signed record sets: bmuller/kademlia, guarded at every edge.

kademlia trusts whatever arrives. The pieces here wrap it rather than replace it:

- `_RecordStorage` (a kademlia `ForgetfulStorage`): a store merges the incoming record set into
  the held one through `records.merge`; a value that is not a valid set for its key is refused.
  The set carries its key name, and digest(name) must equal the kademlia key it is stored under.
- `_Protocol` (a `KademliaProtocol`): shorter RPC timeout, oversized and undecodable datagrams
  dropped, every request's arguments and every response type-checked; complaints are logged at
  most once a minute per sender address.
- `_RecordCrawl` (a `ValueSpiderCrawl`): asks all of the k closest nodes and merges every record
  set it is given, instead of stopping at the first answer and keeping the most common value.
- `DhtNode`: lifecycle, bootstrap through a per-loop semaphore, routing contacts saved as
  msgpack and reused on restart, the routing table pinged periodically so dead contacts go.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import ipaddress
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kademlia.crawling import NodeSpiderCrawl, RPCFindResponse, ValueSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable
from kademlia.storage import ForgetfulStorage
from kademlia.utils import digest

from overlay import wire
from overlay.files import atomic_file
from overlay.records import (
    DEFAULT_MAX_RECORDS,
    MAX_SET_BYTES,
    MAX_TTL,
    RecordError,
    SignedRecord,
    check,
    decode_set,
    encode_set,
    is_withdrawn,
    merge,
)

log = logging.getLogger(__name__)

Address = tuple[str, int]

ID_BYTES = 20
# rpcudp refuses to send a request body over 8192 bytes; add its type byte and message id.
MAX_DATAGRAM_BYTES = 1 + ID_BYTES + 8192
# Hundreds of simultaneous bootstraps overflow the UDP receive buffer and leave nodes with
# empty routing tables, silently (LIBRARIES.md); 20 at a time gave no failures.
BOOTSTRAP_CONCURRENCY = 20
PING_INTERVAL = 30.0
SAVE_INTERVAL = 60.0
MAX_SAVED_CONTACTS = 200
_COMPLAINT_INTERVAL = 60.0
_MAX_COMPLAINERS = 4096
_MAX_NODES_IN_ANSWER = 64

_REQUEST = b"\x00"
_RESPONSE = b"\x01"


# ---- validation of what arrives ---------------------------------------------------------


def _is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == ID_BYTES


def _is_value(value: object) -> bool:
    return isinstance(value, bytes) and len(value) <= MAX_SET_BYTES


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


# Only these RPCs are served (rpcudp would dispatch to any rpc_* method, e.g. rpc_stun).
_ARGUMENT_CHECKS: dict[str, tuple[Callable[[object], bool], ...]] = {
    "ping": (_is_id,),
    "store": (_is_id, _is_id, _is_value),
    "find_node": (_is_id, _is_id),
    "find_value": (_is_id, _is_id),
}


def _request_problem(data: Any) -> str | None:
    """Why a decoded request is not one we serve, or None when it is."""
    if not isinstance(data, list) or len(data) != 2:
        return "request is not a [name, arguments] pair"
    name, args = data
    checks = _ARGUMENT_CHECKS.get(name) if isinstance(name, str) else None
    if checks is None:
        return f"unknown rpc {str(name)[:40]!r}"
    if not isinstance(args, list) or len(args) != len(checks):
        return f"rpc {name} takes {len(checks)} arguments"
    if not all(fits(arg) for fits, arg in zip(checks, args, strict=True)):
        return f"rpc {name} has arguments of the wrong type"
    return None


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _is_ip(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _node_triples(answer: Any) -> list[list[Any]] | None:
    """The well-formed [id, ip, port] entries of a find_node answer; None if it is no list."""
    if not isinstance(answer, list) or len(answer) > _MAX_NODES_IN_ANSWER:
        return None
    return [
        entry
        for entry in answer
        if isinstance(entry, list) and len(entry) == 3 and _is_id(entry[0]) and _is_ip(entry[1]) and _is_port(entry[2])
    ]


def _found_value(answer: Any) -> Any:
    """A find_value answer as kademlia expects it, or None when it is malformed."""
    if isinstance(answer, dict):
        return answer if answer.keys() == {"value"} and _is_value(answer["value"]) else None
    return _node_triples(answer)


class _Complaints:
    """Decides when a misbehaving sender is worth another log line: once a minute per host."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, host: str, now: float) -> bool:
        last = self._last.get(host)
        if last is not None and now - last < _COMPLAINT_INTERVAL:
            return False
        if len(self._last) >= _MAX_COMPLAINERS:
            self._last.clear()  # forgetting only means a few extra log lines
        self._last[host] = now
        return True


# ---- storage ---------------------------------------------------------------------------


class _RecordStorage(ForgetfulStorage):
    """Kademlia storage whose values are record sets, merged on every store."""

    def __init__(self, clock: Callable[[], float], max_records: int) -> None:
        super().__init__(ttl=int(MAX_TTL))
        self._clock = clock
        self._max_records = max_records

    def store(self, dkey: bytes, value: Any) -> None:
        """Merge record set `value` into what `dkey` holds; `RecordError` if none of it is valid."""
        if not isinstance(value, bytes):
            raise RecordError(f"value is a {type(value).__name__}, not a record set")
        incoming = decode_set(value)
        if digest(incoming.key) != dkey:
            raise RecordError(f"record set names key {incoming.key!r}, not the one it is stored under")
        if not incoming.records:
            raise RecordError("empty record set")
        now = self._clock()
        valid, reasons = [], []
        for record in incoming.records:
            try:
                check(record, incoming.key, now)
            except RecordError as exc:
                reasons.append(str(exc))
            else:
                valid.append(record)
        if not valid:
            raise RecordError(f"no valid record in the set: {reasons[0]}")
        merged = merge(self.records_at(dkey), valid, incoming.key, now, self._max_records)
        super().__setitem__(dkey, encode_set(incoming.key, merged))

    def records_at(self, dkey: bytes) -> tuple[SignedRecord, ...]:
        value = self.get(dkey)
        return decode_set(value).records if value is not None else ()

    def __setitem__(self, dkey: bytes, value: Any) -> None:
        # kademlia's own callers (set_digest, republishing) cannot handle a refusal.
        try:
            self.store(dkey, value)
        except RecordError as exc:
            log.info("not storing a value under %s: %s", dkey.hex(), exc)

    def get(self, key: bytes, default: Any = None) -> Any:
        """The held set without the records that have expired since it was stored."""
        value = super().get(key)
        if value is None:
            return default
        held = decode_set(value)
        now = self._clock()
        live = [r for r in held.records if r.expires_at > now]
        if len(live) == len(held.records):
            return value
        if not live:
            del self.data[key]
            return default
        pruned = encode_set(held.key, live)
        super().__setitem__(key, pruned)
        return pruned

    def __iter__(self):
        # Through get(), so expired records are never handed to new nodes.
        return iter([(k, v) for k in list(self.data) if (v := self.get(k)) is not None])


# ---- routing ---------------------------------------------------------------------------


class _RoutingTable(RoutingTable):
    def find_neighbors(self, node: Node, k: int | None = None, exclude: Node | None = None) -> list[Node]:
        """The k contacts closest to `node`, from every bucket.

        kademlia's TableTraverser stops early when the buckets beside the target's are empty
        (it gives up on the left once it has looked there last), so a node whose table held 19
        contacts could return none for a key and find nothing.
        """
        contacts = [
            contact
            for bucket in self.buckets
            for contact in bucket.get_nodes()
            if contact.id != node.id and (exclude is None or not contact.same_home_as(exclude))
        ]
        return heapq.nsmallest(k or self.ksize, contacts, key=node.distance_to)


# ---- protocol --------------------------------------------------------------------------


class _Protocol(KademliaProtocol):
    def __init__(self, source_node: Node, storage: _RecordStorage, ksize: int, rpc_timeout: float) -> None:
        super().__init__(source_node, storage, ksize)
        self.router = _RoutingTable(self, ksize, source_node)
        self._wait_timeout = rpc_timeout
        self._complaints = _Complaints()

    def _complain(self, address: Address, problem: str) -> None:
        if self._complaints.due(address[0], time.monotonic()):
            log.warning("%s:%s misbehaves (%s); further complaints muted for a minute", *address[:2], problem)

    def _closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def shutdown(self) -> None:
        """Fail every call still waiting for an answer, so nothing waits out its timeout."""
        for future, timeout in self._outstanding.values():
            timeout.cancel()
            if not future.done():
                future.set_result((False, None))
        self._outstanding.clear()

    # -- inbound: everything that arrives is checked before rpcudp or kademlia sees it

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if len(data) > MAX_DATAGRAM_BYTES:
            self._complain(addr, f"oversized datagram of {len(data)} bytes")
            return
        super().datagram_received(data, addr)

    async def _solve_datagram(self, datagram: bytes, address: Address) -> None:
        if len(datagram) < 1 + ID_BYTES + 1:
            self._complain(address, "datagram too short")
            return
        kind = datagram[:1]
        if kind not in (_REQUEST, _RESPONSE):
            self._complain(address, "unknown message type")
            return
        if kind == _RESPONSE and datagram[1 : 1 + ID_BYTES] not in self._outstanding:
            # Late answers to timed-out calls land here too, so this is not worth a warning.
            log.debug("ignoring an unexpected response from %s:%s", *address[:2])
            return
        try:
            await super()._solve_datagram(datagram, address)
        except Exception as exc:  # umsgpack raises many unrelated types on garbage
            self._complain(address, f"undecodable datagram ({type(exc).__name__})")

    async def _accept_request(self, msg_id: bytes, data: Any, address: Address) -> None:
        problem = _request_problem(data)
        if problem is not None:
            self._complain(address, problem)
            return
        if self._closed():
            return
        await super()._accept_request(msg_id, data, address)

    def rpc_store(self, sender: Address, nodeid: bytes, key: bytes, value: Any) -> bool:
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        try:
            self.storage.store(key, value)
        except RecordError as exc:
            self._complain(sender, f"refused store: {exc}")
            return False
        return True

    # -- outbound: answers are type-checked; a malformed one counts as no answer

    async def _call(self, node: Node, name: str, fits: Callable[[Any], Any], *args: Any) -> tuple[bool, Any]:
        if self._closed():
            return (False, None)
        answered, answer = await getattr(self, name)((node.ip, node.port), self.source_node.id, *args)
        if answered:
            cleaned = fits(answer)
            if cleaned is None:
                self._complain((node.ip, node.port), f"malformed answer to {name}")
                answered, answer = False, None
            else:
                answer = cleaned
        return self.handle_call_response((answered, answer), node)

    async def call_ping(self, node_to_ask: Node) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "ping", lambda a: a if _is_id(a) else None)

    async def call_store(self, node_to_ask: Node, key: bytes, value: bytes) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "store", lambda a: a if _is_bool(a) else None, key, value)

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "find_node", _node_triples, node_to_find.id)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "find_value", _found_value, node_to_find.id)


class _Server(Server):
    def __init__(self, storage: _RecordStorage, node_id: bytes | None, rpc_timeout: float) -> None:
        super().__init__(storage=storage, node_id=node_id)
        self._rpc_timeout = rpc_timeout

    def _create_protocol(self) -> _Protocol:
        return _Protocol(self.node, self.storage, self.ksize, self._rpc_timeout)

    async def bootstrap_node(self, addr: Address) -> Node | None:
        # kademlia's version trusts the pong to carry a node id.
        answered, node_id = await self.protocol.ping(addr, self.node.id)
        return Node(node_id, addr[0], addr[1]) if answered and _is_id(node_id) else None


# ---- lookups ---------------------------------------------------------------------------


class _RecordCrawl(ValueSpiderCrawl):
    """A value crawl that goes on to the k closest nodes and keeps every record it is given."""

    def __init__(self, protocol: _Protocol, target: Node, peers: list[Node], ksize: int, alpha: int, key: str) -> None:
        super().__init__(protocol, target, peers, ksize, alpha)
        self.key = key
        self.found: set[SignedRecord] = set()
        self.rounds = 0
        self.rpcs = 0
        self.holders = 0

    async def find(self) -> set[SignedRecord]:
        self.rounds += 1
        return await self._find(self._ask)

    def _ask(self, peer: Node, target: Node) -> Any:
        self.rpcs += 1
        return self.protocol.call_find_value(peer, target)

    async def _nodes_found(self, responses: dict[bytes, Any]) -> set[SignedRecord]:
        silent = []
        for peer_id, answer in responses.items():
            response = RPCFindResponse(answer)
            if not response.happened():
                silent.append(peer_id)
            elif response.has_value():
                self._keep(response.get_value())
            else:
                peer = self.nearest.get_node(peer_id)
                if peer is not None:
                    self.nearest_without_value.push(peer)
                self.nearest.push(response.get_node_list())
        self.nearest.remove(silent)
        if self.nearest.have_contacted_all():
            return self.found
        return await self.find()

    def _keep(self, value: bytes) -> None:
        # Signatures are checked once, by the merge at the end; identical copies collapse here.
        try:
            held = decode_set(value)
        except RecordError as exc:
            log.info("ignoring a malformed record set for %r: %s", self.key, exc)
            return
        if held.key != self.key:
            log.info("ignoring a record set for %r given for %r", held.key, self.key)
            return
        self.holders += 1
        self.found.update(held.records)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A lookup's records (valid, unexpired, not withdrawn; newest first) and what it cost."""

    records: tuple[SignedRecord, ...]
    rounds: int  # crawl rounds: each asks up to alpha nodes in parallel
    rpcs: int
    holders: int  # nodes that answered with a record set


# ---- saved routing state ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Saved:
    node_id: bytes | None
    contacts: tuple[Address, ...]


def _parse_state(data: bytes) -> _Saved:
    obj = wire.decode(data)
    if not isinstance(obj, dict) or not _is_id(obj.get("node_id")) or not isinstance(obj.get("contacts"), list):
        raise wire.WireError("state must be a map of node_id, contacts")
    contacts = tuple(
        (c[0], c[1])
        for c in obj["contacts"][:MAX_SAVED_CONTACTS]
        if isinstance(c, list) and len(c) == 2 and _is_ip(c[0]) and _is_port(c[1])
    )
    return _Saved(obj["node_id"], contacts)


def _load_state(path: Path) -> _Saved:
    try:
        return _parse_state(path.read_bytes())
    except FileNotFoundError:
        return _Saved(None, ())
    except (OSError, wire.WireError) as exc:
        log.warning("ignoring unreadable DHT state %s: %s", path, exc)
        return _Saved(None, ())


def _write_state(path: Path, state: _Saved) -> None:
    data = wire.encode({"node_id": state.node_id, "contacts": [list(c) for c in state.contacts]})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(data)


# ---- the node --------------------------------------------------------------------------

_bootstrap_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _bootstrap_slot() -> asyncio.Semaphore:
    # One semaphore per event loop: an asyncio.Semaphore is bound to the loop it first waits in.
    loop = asyncio.get_running_loop()
    slot = _bootstrap_slots.get(loop)
    if slot is None:
        slot = _bootstrap_slots[loop] = asyncio.Semaphore(BOOTSTRAP_CONCURRENCY)
    return slot


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class DhtNode:
    """One DHT node on `listen` (an IP address and port; port 0 picks one).

    Use as `async with DhtNode(...) as node:`, or `await start()` and `await close()`. A closed
    node cannot be started again. Bootstrap addresses must be IP addresses, not host names.
    """

    def __init__(
        self,
        listen: Address,
        bootstrap: Sequence[Address] = (),
        *,
        state_path: Path | None = None,
        rpc_timeout: float = 1.0,
        max_records: int = DEFAULT_MAX_RECORDS,
        clock: Callable[[], float] = time.time,
        ping_interval: float = PING_INTERVAL,
        save_interval: float = SAVE_INTERVAL,
    ) -> None:
        self._listen = listen
        self._bootstrap = tuple(bootstrap)
        self._state_path = state_path
        self._rpc_timeout = rpc_timeout
        self._max_records = max_records
        self._clock = clock
        self._ping_interval = ping_interval
        self._save_interval = save_interval
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
        storage = _RecordStorage(self._clock, self._max_records)
        self._server = _Server(storage, self._saved.node_id, self._rpc_timeout)
        try:
            await self._server.listen(self._listen[1], interface=self._listen[0])
        except OSError:
            await self.close()
            raise
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

    def neighbours(self) -> list[Address]:
        """Every contact in the routing table, closest to this node first."""
        server = self._open()
        return [(n.ip, n.port) for n in self._contacts(server)]

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
            server.storage.store(dkey, value)
            log.info("no other DHT node known yet: %r kept on this node only", key)
            return 0
        closest = await NodeSpiderCrawl(server.protocol, target, nearest, server.ksize, server.alpha).find()
        # As kademlia's set(): keep a copy here too when this node is among the closest.
        if not closest or server.node.distance_to(target) < max(n.distance_to(target) for n in closest):
            server.storage.store(dkey, value)
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
        crawl = _RecordCrawl(server.protocol, target, nearest, server.ksize, server.alpha, key)
        if nearest:
            await crawl.find()
        merged = merge(server.storage.records_at(dkey), list(crawl.found), key, now, self._max_records)
        # As kademlia's get(): give the nearest node that lacked the set a copy.
        nearest_without = crawl.nearest_without_value.popleft()
        if merged and nearest_without is not None:
            await server.protocol.call_store(nearest_without, dkey, encode_set(key, merged))
        live = tuple(r for r in merged if not is_withdrawn(r))
        return Lookup(live, crawl.rounds, crawl.rpcs, crawl.holders)

    async def ping_contacts(self) -> int:
        """Ping every contact; kademlia drops those that do not answer. How many were dropped."""
        server = self._open()
        answers = await asyncio.gather(*(server.protocol.call_ping(n) for n in self._contacts(server)))
        return sum(1 for answered, _ in answers if not answered)

    async def _maintain(self) -> None:
        """Evict dead contacts; a node left with none (its bootstrap node was not up yet, or
        the network went away) keeps trying to join."""
        await self.ping_contacts()
        if not self.neighbours():
            await self._join()

    # -- helpers

    def _open(self) -> _Server:
        if self._state is not _State.OPEN or self._server is None:
            raise RuntimeError(f"DhtNode is {self._state.value}")
        return self._server

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
        async with _bootstrap_slot():
            found = await server.bootstrap(addresses)
        if not found:
            log.warning("DHT bootstrap through %d addresses found no nodes", len(addresses))
        return len(found)

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
            await asyncio.sleep(interval)
            try:
                await action()
            except Exception:  # one failed round must not end the maintenance
                log.exception("DHT maintenance failed; will try again")
