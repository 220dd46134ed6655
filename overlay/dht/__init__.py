"""A Kademlia DHT node whose keys hold signed record sets: bmuller/kademlia, guarded at every edge.

kademlia trusts whatever arrives. The pieces here wrap it rather than replace it:

- `_RecordStorage` (a kademlia `IStorage`): a store merges the incoming record set into the
  held one through `records.merge`; a value that is not a valid set for its key is refused.
  The set carries its key name, and digest(name) must equal the kademlia key it is stored under.
  A `Ledger` charges every key to its sender and signers and refuses what would take one of
  them, or the node, past its `DhtLimits`; `SignatureChecks` remembers good signatures and
  rations the checks each sender may cause.
- `_Protocol` (a `KademliaProtocol`): shorter RPC timeout, oversized and undecodable datagrams
  dropped, every request's arguments and every response type-checked; complaints are logged at
  most once a minute per sender address. Answers are at most three times their request
  (answers.py); a newcomer is handed a bounded number of keys, one store at a time (handoff.py).
  It remembers which contacts went silent lately and which it heard from lately.
- `Traversal` (traversal.py) instead of kademlia's SpiderCrawl: alpha requests in flight at any
  time, not rounds that wait for their slowest; a request unanswered for `STALL_AFTER` stops
  holding the lookup up; nodes that went silent lately are not asked again. lookups.py drives
  it: the k closest nodes (publish, bootstrap), or every record set they hold, merged (a
  lookup goes on past the first holder, instead of keeping the most common value).
- `DhtNode`: lifecycle, a larger UDP receive buffer, bootstrap through a per-loop semaphore
  and tried again soon when it finds nobody, routing contacts saved as msgpack and reused on
  restart, the contacts silent longest pinged, a few each (jittered) round, so dead ones go.

One module per piece, each using only those before it: checks, limits (the ledger), verifying
(signature checks), answers (sizes), handoff, storage, protocol (routing and RPCs), traversal,
lookups, state (saved contacts), node. limits, verifying, answers, handoff and traversal are
pure rules.
"""

from __future__ import annotations

from overlay.dht.checks import (
    BOOTSTRAP_CONCURRENCY,
    ID_BYTES,
    MAX_DATAGRAM_BYTES,
    MAX_SAVED_CONTACTS,
    PING_INTERVAL,
    PINGS_PER_ROUND,
    SAVE_INTERVAL,
    STALL_AFTER,
    Address,
)
from overlay.dht.limits import (
    DhtLimits,
    StoreRefused,
)
from overlay.dht.lookups import (
    Lookup,
)
from overlay.dht.node import (
    DhtNode,
)
from overlay.dht.storage import (
    StorageUsage,
)

__all__ = [
    "Address",
    "ID_BYTES",
    "MAX_DATAGRAM_BYTES",
    "BOOTSTRAP_CONCURRENCY",
    "PING_INTERVAL",
    "PINGS_PER_ROUND",
    "STALL_AFTER",
    "SAVE_INTERVAL",
    "MAX_SAVED_CONTACTS",
    "Lookup",
    "DhtNode",
    "DhtLimits",
    "StoreRefused",
    "StorageUsage",
]
