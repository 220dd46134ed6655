"""The routing table and the RPC protocol, guarded: short timeouts, every datagram and answer type-checked."""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from typing import Any

from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable

from overlay.dht.checks import (
    _REQUEST,
    _RESPONSE,
    ID_BYTES,
    MAX_DATAGRAM_BYTES,
    Address,
    _Complaints,
    _found_value,
    _is_bool,
    _is_id,
    _node_triples,
    _request_problem,
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
