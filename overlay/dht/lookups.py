"""Lookups that ask all of the k closest nodes and merge every record set they are given."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kademlia.crawling import RPCFindResponse, ValueSpiderCrawl
from kademlia.node import Node

from overlay.dht.protocol import (
    _Protocol,
)
from overlay.records import (
    RecordError,
    SignedRecord,
    decode_set,
)

log = logging.getLogger("overlay.dht")  # one logger for the whole node


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
