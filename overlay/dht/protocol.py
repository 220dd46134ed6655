"""The routing table and the RPC protocol, guarded: short timeouts, every datagram and answer
type-checked, answers no larger than three times their request, keys handed to newcomers bounded."""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import umsgpack
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable

from overlay.dht.answers import (
    REQUEST_BYTES,
    answer_budget,
    fit_contacts,
    fit_value,
)
from overlay.dht.checks import (
    _REQUEST,
    _RESPONSE,
    FAILED_MEMORY,
    ID_BYTES,
    MAX_DATAGRAM_BYTES,
    MAX_REMEMBERED_NODES,
    Address,
    _Complaints,
    _found_value,
    _is_bool,
    _is_id,
    _node_triples,
    _request_problem,
)
from overlay.dht.handoff import (
    handoff_keys,
)
from overlay.dht.storage import (
    _RecordStorage,
)
from overlay.records import (
    RecordError,
)

log = logging.getLogger("overlay.dht")  # one logger for the whole node


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


# The last bytes of a request from a client-only node (`osaas dht lookup`): it asks and leaves,
# so the nodes it asks must not add it to their routing tables (and then ping it for ever and
# log its departure). The mark rides in the padding, which every node ignores; a node that
# does not know it just adds the client, as before. Faking it only keeps oneself out.
CLIENT_ONLY_MARK = b"\x00osaas-client-only"


class _Protocol(KademliaProtocol):
    storage: _RecordStorage

    def __init__(
        self, source_node: Node, storage: _RecordStorage, ksize: int, rpc_timeout: float, client_only: bool = False
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self._client_only = client_only
        self.router = _RoutingTable(self, ksize, source_node)
        self._wait_timeout = rpc_timeout
        self._complaints = _Complaints()
        self._handoffs: set[asyncio.Task[None]] = set()
        self.handed_off = 0  # stores sent to newcomers, for tests and operators
        # Node id -> when a call to it went unanswered, oldest first: lookups do not ask these
        # again for a while, though other nodes, which have not noticed yet, name them.
        self._failed: OrderedDict[bytes, float] = OrderedDict()
        self._leftovers: set[asyncio.Future[Any]] = set()  # lookups' requests still out
        # Node id -> when it last answered us or asked us something, least recent first.
        self._heard: OrderedDict[bytes, float] = OrderedDict()

    def _complain(self, address: Address, problem: str) -> None:
        if self._complaints.due(address[0], time.monotonic()):
            log.warning("%s:%s misbehaves (%s); further complaints muted for a minute", *address[:2], problem)

    def _closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    # -- contacts that went silent

    def failed_lately(self, node_id: bytes) -> bool:
        """True when a call to `node_id` went unanswered in the last `FAILED_MEMORY` seconds and
        nothing has been heard from it since."""
        failed_at = self._failed.get(node_id)
        if failed_at is None:
            return False
        if time.monotonic() - failed_at < FAILED_MEMORY:
            return True
        del self._failed[node_id]
        return False

    def heard_lately(self, node_id: bytes, seconds: float) -> bool:
        """True when `node_id` answered us or asked us something in the last `seconds`."""
        heard_at = self._heard.get(node_id)
        return heard_at is not None and time.monotonic() - heard_at < seconds

    def last_heard(self, node_id: bytes) -> float:
        """When `node_id` last answered us or asked us something (monotonic; -inf: never)."""
        return self._heard.get(node_id, float("-inf"))

    def heard_from(self, node_id: bytes) -> None:
        """`node_id` answered us or asked us something: it is alive (not to be skipped)."""
        self._failed.pop(node_id, None)
        self._heard[node_id] = time.monotonic()
        self._heard.move_to_end(node_id)
        while len(self._heard) > MAX_REMEMBERED_NODES:
            self._heard.popitem(last=False)

    def handle_call_response(self, result: tuple[bool, Any], node: Node) -> tuple[bool, Any]:
        if result[0]:
            self.heard_from(node.id)
        else:
            self._failed[node.id] = time.monotonic()
            self._failed.move_to_end(node.id)
            while len(self._failed) > MAX_REMEMBERED_NODES:
                self._failed.popitem(last=False)
        return super().handle_call_response(result, node)

    def keep_until_done(self, request: asyncio.Future[Any]) -> None:
        """Hold a request a finished lookup left out, so it is not collected before it ends."""
        self._leftovers.add(request)
        request.add_done_callback(self._leftovers.discard)

    def shutdown(self) -> None:
        """Stop handing keys to newcomers, and fail every call still waiting for an answer, so
        nothing waits out its timeout."""
        for task in self._handoffs:
            task.cancel()
        for future, timeout in self._outstanding.values():
            timeout.cancel()
            if not future.done():
                future.set_result((False, None))
        self._outstanding.clear()

    # -- inbound: everything that arrives is checked before kademlia sees it

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if len(data) > MAX_DATAGRAM_BYTES:
            self._complain(addr, f"oversized datagram of {len(data)} bytes")
            return
        super().datagram_received(data, addr)

    async def _solve_datagram(self, datagram: bytes, address: Address) -> None:
        if len(datagram) < 1 + ID_BYTES + 1:
            self._complain(address, "datagram too short")
            return
        kind, msg_id = datagram[:1], datagram[1 : 1 + ID_BYTES]
        if kind not in (_REQUEST, _RESPONSE):
            self._complain(address, "unknown message type")
            return
        if kind == _RESPONSE and msg_id not in self._outstanding:
            # Late answers to timed-out calls land here too, so this is not worth a warning.
            log.debug("ignoring an unexpected response from %s:%s", *address[:2])
            return
        try:
            # As rpcudp: the first msgpack object counts, padding after it is ignored.
            data = umsgpack.unpackb(datagram[1 + ID_BYTES :])
        except Exception as exc:  # umsgpack raises many unrelated types on garbage
            self._complain(address, f"undecodable datagram ({type(exc).__name__})")
            return
        if kind == _RESPONSE:
            self._accept_response(msg_id, data, address)
        else:
            self._answer(msg_id, data, address, len(datagram), datagram.endswith(CLIENT_ONLY_MARK))

    def _answer(self, msg_id: bytes, data: Any, address: Address, request_bytes: int, from_client: bool) -> None:
        problem = _request_problem(data)
        if problem is not None:
            self._complain(address, problem)
            return
        if self._closed():
            return
        name, args = data
        budget = answer_budget(request_bytes)
        answer = self._serve(name, address, args, budget, from_client)
        datagram = _RESPONSE + msg_id + umsgpack.packb(answer)
        if len(datagram) > budget:  # every answer below is fitted; this would be our bug
            log.error("not sending a %d-byte answer to a %d-byte %s request", len(datagram), request_bytes, name)
            return
        self.transport.sendto(datagram, address)

    def _serve(self, name: str, sender: Address, args: list[Any], budget: int, from_client: bool = False) -> Any:
        # Back (or never gone: an answer was lost). A forged request can only keep a silent node
        # in our table a while longer, where a lookup that asks it stalls briefly (traversal.py).
        self.heard_from(args[0])
        if not from_client:
            self.welcome_if_new(Node(args[0], sender[0], sender[1]))
        if name == "ping":
            return self.source_node.id
        if name == "store":
            return self._store(sender, args[1], args[2])
        if name == "find_value":
            value = self.storage.get(args[1])
            answer = fit_value(value, budget) if value is not None else None
            if answer is not None:
                return answer
        exclude = Node(args[0], sender[0], sender[1])
        contacts = [tuple(n) for n in self.router.find_neighbors(Node(args[1]), exclude=exclude)]
        return fit_contacts(contacts, budget)

    def _store(self, sender: Address, key: bytes, value: bytes) -> bool:
        try:
            self.storage.store(key, value, sender)
        except RecordError as exc:  # StoreRefused too: over a limit is misbehaving as well
            self._complain(sender, f"refused store: {exc}")
            return False
        return True

    # -- handing keys to newcomers

    def welcome_if_new(self, node: Node) -> None:
        """Add a node not seen before to the routing table and hand it, in the background, the
        keys it should hold from us: a bounded number, one store at a time (handoff.py)."""
        if not self.router.is_new_node(node):
            return
        limits = self.storage.ledger.limits
        if len(self._handoffs) < limits.handoffs and not self._closed():
            keys = handoff_keys(
                node.id,
                self.source_node.id,
                self.storage.stored_keys(),
                lambda dkey: [n.id for n in self.router.find_neighbors(Node(dkey))],
                limits.handoff_keys,
            )
            if keys:
                task = asyncio.ensure_future(self._hand_off(node, keys))
                self._handoffs.add(task)
                task.add_done_callback(self._handoffs.discard)
        else:
            log.debug("not handing keys to %s:%s: busy with %d newcomers", node.ip, node.port, len(self._handoffs))
        self.router.add_contact(node)

    async def _hand_off(self, node: Node, keys: list[bytes]) -> None:
        # The request that introduced it may have come from a forged address: a store to an
        # address that never asked is an amplifier, a ping is not. Only the node that has the id
        # at that address answers with it.
        answered, node_id = await self.call_ping(node)
        if not answered or node_id != node.id:
            return
        for dkey in keys:
            value = self.storage.get(dkey)
            if value is None:
                continue
            self.handed_off += 1
            answered, _ = await self.call_store(node, dkey, value)
            if not answered:  # gone, or never there (a forged address): stop sending it stores
                return

    # -- outbound: answers are type-checked; a malformed one counts as no answer

    async def _call(self, node: Node, name: str, fits: Callable[[Any], Any], *args: Any) -> tuple[bool, Any]:
        if self._closed():
            return (False, None)
        answered, answer = await self._request((node.ip, node.port), name, self.source_node.id, *args)
        if answered:
            cleaned = fits(answer)
            if cleaned is None:
                self._complain((node.ip, node.port), f"malformed answer to {name}")
                answered, answer = False, None
            else:
                answer = cleaned
        return self.handle_call_response((answered, answer), node)

    def _request(self, address: Address, name: str, *args: Any) -> asyncio.Future[tuple[bool, Any]]:
        """rpcudp's request, padded so that the largest answer we accept fits three times it (answers.py)."""
        msg_id = os.urandom(ID_BYTES)
        datagram = _REQUEST + msg_id + umsgpack.packb([name, list(args)])
        datagram += bytes(max(0, REQUEST_BYTES.get(name, 0) - len(datagram)))
        if self._client_only:
            datagram += CLIENT_ONLY_MARK
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        self._outstanding[msg_id] = (future, loop.call_later(self._wait_timeout, self._timeout, msg_id))
        self.transport.sendto(datagram, address)
        return future

    async def ping_address(self, address: Address, node_id: bytes) -> tuple[bool, Any]:
        """A ping to an address whose node is not known yet (bootstrapping)."""
        if self._closed():
            return (False, None)
        return await self._request(address, "ping", node_id)

    async def call_ping(self, node_to_ask: Node) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "ping", lambda a: a if _is_id(a) else None)

    async def call_store(self, node_to_ask: Node, key: bytes, value: bytes) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "store", lambda a: a if _is_bool(a) else None, key, value)

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "find_node", _node_triples, node_to_find.id)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "find_value", _found_value, node_to_find.id)


class _Server(Server):
    def __init__(
        self, storage: _RecordStorage, node_id: bytes | None, rpc_timeout: float, client_only: bool = False
    ) -> None:
        super().__init__(storage=storage, node_id=node_id)
        self._rpc_timeout = rpc_timeout
        self._client_only = client_only

    def _create_protocol(self) -> _Protocol:
        return _Protocol(self.node, self.storage, self.ksize, self._rpc_timeout, self._client_only)

    async def bootstrap_node(self, addr: Address) -> Node | None:
        # kademlia's version trusts the pong to carry a node id, and sends its ping unpadded
        # and unmarked (a client-only node would join the bootstrap node's table).
        answered, node_id = await self.protocol.ping_address(addr, self.node.id)
        if not (answered and _is_id(node_id)):
            return None
        self.protocol.heard_from(node_id)  # a lookup that found it silent before may ask it now
        return Node(node_id, addr[0], addr[1])
