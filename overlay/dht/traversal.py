"""An iterative Kademlia lookup as a state machine: whom to ask next, and when it is done. Pure.

kademlia's SpiderCrawl works in rounds: it asks alpha nodes, waits for every one of them, then
asks the next alpha. One node that does not answer holds the whole round for the RPC timeout,
so with 10% of the nodes gone most lookups waited a second or more, and a lookup that met dead
nodes round after round took many seconds. A node that is gone is also asked again by every
lookup that hears of it from a node that has not noticed yet.

Here up to `alpha` requests are in flight at any time, and each answer frees a lane at once. A
request unanswered after a short while is *stalled*: it stops holding a lane (another node is
asked in its place) and stops holding the end of the lookup, but an answer that still comes
counts. The lookup is done when the `k` closest nodes that answered have been found: no node
closer than the k-th of them is waiting to be asked or waiting for an answer (stalled ones
aside once any node has answered: until then they are waited for, or a slow moment, when
every request stalls, would end a lookup with nothing). A holder answers a record lookup with
its records, not contacts, so a lookup that started among the holders may end with fewer than
k answers: waiting for the stalled ones then would cost the full RPC timeout whenever one of
the closest nodes is gone. Nodes the caller knows to have just failed (`skip`) are never asked.

`rounds` are hops: a node from our own routing table is at hop 1, a node named in an answer of
a node at hop h is at hop h + 1, and a lookup's rounds are the highest hop it asked.

The driver (lookups.py) sends the requests and reports what came back: `answered`, `failed`,
`stalled`.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Contact = tuple[bytes, str, int]  # node id, IP address, port, as find_node answers carry them


class _Asked(enum.Enum):
    NOT_YET = "not yet"
    WAITING = "waiting"  # asked, and still holding a lane
    STALLED = "stalled"  # asked, unanswered for a while: holds neither a lane nor the end
    ANSWERED = "answered"
    FAILED = "failed"


@dataclass(slots=True)
class _Candidate:
    contact: Contact
    distance: int
    hop: int
    asked: _Asked = _Asked.NOT_YET


class Traversal:
    """The nodes a lookup for `target` has heard of, closest first, and what became of each."""

    def __init__(
        self,
        target: bytes,
        me: bytes,
        start: Iterable[Contact],
        k: int,
        alpha: int,
        skip: Callable[[bytes], bool] = lambda node_id: False,
    ) -> None:
        if k < 1 or alpha < 1:
            raise ValueError("k and alpha must be positive")
        self._target = int.from_bytes(target, "big")
        self._me = me
        self._k = k
        self._alpha = alpha
        self._skip = skip
        self._by_id: dict[bytes, _Candidate] = {}
        self._sorted: list[_Candidate] = []  # closest first
        self.rpcs = 0
        self.rounds = 0
        self._add(start, 1)

    # -- what the driver reports

    def answered(self, node_id: bytes, contacts: Iterable[Contact] = ()) -> None:
        """`node_id` answered, naming `contacts` (none when it answered with a value)."""
        candidate = self._by_id.get(node_id)
        if candidate is None or candidate.asked is _Asked.NOT_YET:
            return
        candidate.asked = _Asked.ANSWERED
        self._add(contacts, candidate.hop + 1)

    def failed(self, node_id: bytes) -> None:
        candidate = self._by_id.get(node_id)
        if candidate is not None and candidate.asked in (_Asked.WAITING, _Asked.STALLED):
            candidate.asked = _Asked.FAILED

    def stalled(self, node_id: bytes) -> None:
        candidate = self._by_id.get(node_id)
        if candidate is not None and candidate.asked is _Asked.WAITING:
            candidate.asked = _Asked.STALLED

    # -- what the driver asks

    def next(self) -> list[Contact]:
        """The nodes to ask now (marked as asked): the closest not asked yet, while fewer than
        alpha requests hold a lane and they could still be among the k closest."""
        chosen: list[Contact] = []
        lanes = self._alpha - sum(1 for c in self._sorted if c.asked is _Asked.WAITING)
        if lanes <= 0:
            return chosen
        for candidate in self._within_reach():
            if candidate.asked is _Asked.NOT_YET:
                candidate.asked = _Asked.WAITING
                self.rpcs += 1
                self.rounds = max(self.rounds, candidate.hop)
                chosen.append(candidate.contact)
                if len(chosen) == lanes:
                    break
        return chosen

    def done(self) -> bool:
        """True when no node that could be among the k closest is left to ask or to wait for:
        stalled requests are waited for only while no node has answered."""
        reach = list(self._within_reach())
        if any(c.asked in (_Asked.NOT_YET, _Asked.WAITING) for c in reach):
            return False
        return any(c.asked is _Asked.ANSWERED for c in reach) or not any(c.asked is _Asked.STALLED for c in reach)

    def closest(self) -> list[Contact]:
        """The k closest nodes that answered, closest first."""
        return [c.contact for c in self._sorted if c.asked is _Asked.ANSWERED][: self._k]

    # -- helpers

    def _within_reach(self) -> Iterable[_Candidate]:
        """Candidates closer than the k-th closest that answered (all of them until k have)."""
        answered = 0
        for candidate in self._sorted:
            if answered >= self._k:
                return
            if candidate.asked is _Asked.ANSWERED:
                answered += 1
            yield candidate

    def _add(self, contacts: Iterable[Contact], hop: int) -> None:
        for contact in contacts:
            node_id = contact[0]
            if node_id == self._me or node_id in self._by_id or self._skip(node_id):
                continue
            distance = int.from_bytes(node_id, "big") ^ self._target
            candidate = _Candidate(contact, distance, hop)
            self._by_id[node_id] = candidate
            bisect.insort(self._sorted, candidate, key=lambda c: c.distance)
