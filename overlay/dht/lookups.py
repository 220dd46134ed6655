"""Lookups driven through traversal.py: find the k closest nodes to an id, or every record set
they hold for a key. The I/O around the pure traversal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kademlia.node import Node

from overlay.dht.protocol import (
    _Protocol,
)
from overlay.dht.traversal import (
    Contact,
    Traversal,
)
from overlay.records import (
    RecordError,
    SignedRecord,
    decode_set,
)

log = logging.getLogger("overlay.dht")  # one logger for the whole node

# What to do with an answer: the contacts it names (the traversal goes on to them).
_Reader = Callable[[Node, Any], list[Contact]]


async def _traverse(
    protocol: _Protocol,
    traversal: Traversal,
    ask: Callable[[Node], Awaitable[tuple[bool, Any]]],
    read: _Reader,
    stall_after: float,
) -> None:
    """Ask as the traversal says until it is done. Requests still out when it is done are left
    to finish on their own: kademlia's bookkeeping (a silent contact leaves the routing table,
    an answering one joins it) still happens."""
    loop = asyncio.get_running_loop()
    flying: dict[asyncio.Future[tuple[bool, Any]], tuple[Node, float]] = {}
    stalled: set[asyncio.Future[tuple[bool, Any]]] = set()
    try:
        while True:
            for node_id, ip, port in traversal.next():
                node = Node(node_id, ip, port)
                flying[asyncio.ensure_future(ask(node))] = (node, loop.time() + stall_after)
            if traversal.done() or not flying:
                return
            holding = [deadline for request, (_, deadline) in flying.items() if request not in stalled]
            timeout = max(0.0, min(holding) - loop.time()) if holding else None
            finished, _ = await asyncio.wait(flying, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for request in finished:
                node, _ = flying.pop(request)
                stalled.discard(request)
                answered, answer = request.result()
                if answered:
                    traversal.answered(node.id, read(node, answer))
                else:
                    traversal.failed(node.id)
            now = loop.time()
            for request, (node, deadline) in flying.items():
                if request not in stalled and deadline <= now:
                    stalled.add(request)
                    traversal.stalled(node.id)
    finally:
        for request in flying:
            protocol.keep_until_done(request)


def _contacts(answer: Any) -> list[Contact]:
    return [(node_id, ip, port) for node_id, ip, port in answer or []]


async def find_nodes(
    protocol: _Protocol, target: bytes, start: list[Node], ksize: int, alpha: int, stall_after: float
) -> tuple[list[Node], Traversal]:
    """The k closest nodes to `target` that answered, closest first."""
    traversal = Traversal(
        target, protocol.source_node.id, [tuple(n) for n in start], ksize, alpha, protocol.failed_lately
    )
    wanted = Node(target)
    await _traverse(
        protocol,
        traversal,
        lambda node: protocol.call_find_node(node, wanted),
        lambda node, answer: _contacts(answer),
        stall_after,
    )
    return [Node(*contact) for contact in traversal.closest()], traversal


@dataclass(slots=True)
class _Found:
    """What a record lookup gathered: records from every holder, and who lacked them."""

    key: str
    records: set[SignedRecord] = field(default_factory=set)
    holders: int = 0
    without: list[Node] = field(default_factory=list)

    def read(self, node: Node, answer: Any) -> list[Contact]:
        if not isinstance(answer, dict):
            self.without.append(node)
            return _contacts(answer)
        # Signatures are checked once, by the merge at the end; identical copies collapse here.
        try:
            held = decode_set(answer["value"])
        except RecordError as exc:
            log.info("ignoring a malformed record set for %r: %s", self.key, exc)
            return []
        if held.key != self.key:
            log.info("ignoring a record set for %r given for %r", held.key, self.key)
            return []
        self.holders += 1
        self.records.update(held.records)
        return []


async def find_records(
    protocol: _Protocol, target: bytes, key: str, start: list[Node], ksize: int, alpha: int, stall_after: float
) -> tuple[_Found, Traversal]:
    """Every record set the k closest nodes to `target` hold for `key` (a holder answers with its
    set instead of contacts, and the lookup goes on: kademlia's stops at the first value)."""
    traversal = Traversal(
        target, protocol.source_node.id, [tuple(n) for n in start], ksize, alpha, protocol.failed_lately
    )
    found = _Found(key)
    wanted = Node(target)
    await _traverse(protocol, traversal, lambda node: protocol.call_find_value(node, wanted), found.read, stall_after)
    return found, traversal


@dataclass(frozen=True, slots=True)
class Lookup:
    """A lookup's records (valid, unexpired, not withdrawn; newest first) and what it cost."""

    records: tuple[SignedRecord, ...]
    rounds: int  # hops: the longest chain of answers, each naming the node asked next
    rpcs: int
    holders: int  # nodes that answered with a record set
