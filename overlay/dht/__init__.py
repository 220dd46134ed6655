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
- `_RecordCrawl` (a `ValueSpiderCrawl`): asks all of the k closest nodes and merges every record
  set it is given, instead of stopping at the first answer and keeping the most common value.
- `DhtNode`: lifecycle, bootstrap through a per-loop semaphore, routing contacts saved as
  msgpack and reused on restart, the routing table pinged periodically so dead contacts go.

One module per piece, each using only those before it: checks, limits (the ledger), verifying
(signature checks), answers (sizes), handoff, storage, protocol (routing and RPCs), lookups,
state (saved contacts), node. limits, verifying, answers and handoff are pure rules.
"""

from __future__ import annotations

from overlay.dht.checks import (
    BOOTSTRAP_CONCURRENCY,
    ID_BYTES,
    MAX_DATAGRAM_BYTES,
    MAX_SAVED_CONTACTS,
    PING_INTERVAL,
    SAVE_INTERVAL,
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
    "SAVE_INTERVAL",
    "MAX_SAVED_CONTACTS",
    "Lookup",
    "DhtNode",
    "DhtLimits",
    "StoreRefused",
    "StorageUsage",
]
