"""The swarm of `bench.trust_sim`: what a key answers with, the kinds of key, a key as the
simulated coordinator knows it, and drawing keys in proportion to their weights."""

from __future__ import annotations

import bisect
import itertools
import random
from array import array
from dataclasses import dataclass, field

from coordinator.reputation import Observed, PeerRecord
from coordinator.verdicts import Answer

OK, BROKEN, TIMEOUT = 0, 1, 2  # answer values; a truth of REGION is "ok" but down from some networks
REGION = 2
VALUES = ("ok", "broken", "timeout")
HONEST, FAB_OK, FAB_BROKEN, INFLATED, LINKS, VERSION, DELAY = (
    "honest",
    "fabricated ok",
    "fabricated broken",
    "inflated capacity",
    "injected links",
    "forged version",
    "huge crawl delay",
)
LIARS = (FAB_OK, FAB_BROKEN, INFLATED, LINKS, VERSION, DELAY)
KIND_SHARE = 0.10  # of the keys, for each kind of liar


@dataclass(slots=True)
class Peer:
    id: int
    kind: str
    network: int
    claimed: float
    real: float
    joined: int
    wave: bool = False
    record: PeerRecord = field(default_factory=PeerRecord)
    online: bool = True
    quarantined_at: int | None = None
    units: int = 0  # units it reported (refused ones too)
    answers: int = 0  # answers it gave, first and later
    looks: int = 0  # answers to other keys' items since its last known answer among them
    items: array[int] = field(default_factory=lambda: array("i"))  # items it answered
    cache: tuple[Answer, ...] = ()  # its Answer for each value
    seen: Observed = Observed()  # what the coordinator saw it do, up to the last tick
    folded: int = 0  # of its answers, those counted in `seen`

    def __post_init__(self) -> None:
        net = f"net-{self.network}"
        self.cache = tuple(Answer(str(self.id), net, VALUES[v], v != OK, v != TIMEOUT) for v in range(3))


@dataclass(slots=True)
class Draw:
    """Keys in proportion to a weight: cumulative sums for bisect."""

    peers: list[Peer]
    cum: list[float]

    @classmethod
    def of(cls, peers: list[Peer], weights: list[float]) -> Draw:
        pairs = [(p, w) for p, w in zip(peers, weights, strict=True) if w > 0]
        return cls([p for p, _ in pairs], list(itertools.accumulate(w for _, w in pairs)))

    def pick(self, rng: random.Random) -> Peer | None:
        if not self.cum:
            return None
        return self.peers[min(bisect.bisect_right(self.cum, rng.random() * self.cum[-1]), len(self.peers) - 1)]
