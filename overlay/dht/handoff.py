"""Which keys a node hands a newcomer it has just met. Pure.

Kademlia (section 2.5 of the paper; kademlia's `welcome_if_new`) gives a new node the values it
should now hold: those it is among the k closest to, when this node is the closest holder. The
library did that for every stored key at once, one store RPC each, all in flight together: a
node holding 3,000 junk keys sent 3,000 stores to every newcomer, whose UDP buffer overflowed
and whose bootstrap failed. (It also compared distances to the digest of the already digested
key, so its choice of keys was random.)

Here a newcomer is handed at most `DhtLimits.handoff_keys` keys, the ones nearest to it, sent
one after another (see protocol.py), and only while few newcomers are being served at once.
A key it misses is no loss: lookups find values on any of the k closest nodes, and a lookup
gives the nearest node that lacked a set a copy.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable


def distance(a: bytes, b: bytes) -> int:
    """Kademlia's XOR distance between two 20-byte ids (node ids and key digests alike)."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def handoff_keys(
    newcomer: bytes,
    me: bytes,
    held: Iterable[bytes],
    closest_known: Callable[[bytes], list[bytes]],
    limit: int,
) -> list[bytes]:
    """Of the `limit` held keys nearest to `newcomer`, those it should get from this node:
    the newcomer is nearer the key than the farthest of the k contacts closest to it
    (`closest_known`, nearest first) and this node is nearer than every one of them."""
    target = int.from_bytes(newcomer, "big")
    nearest = heapq.nsmallest(limit, held, key=lambda dkey: int.from_bytes(dkey, "big") ^ target)
    chosen = []
    for dkey in nearest:
        contacts = closest_known(dkey)
        if not contacts or (
            distance(newcomer, dkey) < distance(contacts[-1], dkey) and distance(me, dkey) < distance(contacts[0], dkey)
        ):
            chosen.append(dkey)
    return chosen
