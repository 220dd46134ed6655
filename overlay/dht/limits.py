"""How much a DHT node stores and for whom: the limits, and the ledger that enforces them. Pure.

kademlia stores whatever arrives. Here every key a node holds is charged to the sender that
first stored it (its UDP source address; None for the node itself) and to every signer with a
record in it, and a store is refused when it would take a sender, a signer or the node past
its limit.

The eviction policy is: none. A store that does not fit is refused; nothing stored is pushed out
to make room. Evicting "the heaviest sender" looks fairer, but a store needs no answer, so its
source address can be forged: an attacker who spreads junk over many forged addresses makes the
honest nodes the heaviest senders, and their records the ones evicted. Refusing keeps the one
promise that matters, that what a well-behaved sender stored stays until its records expire.
The price: a node filled to its caps refuses new keys until the junk expires (records live at
most `records.MAX_TTL`); the other k-1 nodes closest to a key still hold it, and a sender's quota
is a small share of the caps, so it takes many addresses to fill a node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from overlay.records import MAX_SET_BYTES, RecordError

Sender = tuple[str, int]  # a UDP source address


class StoreRefused(RecordError):
    """A store that would take a sender, a signer or the node past its limits."""


@dataclass(frozen=True, slots=True)
class DhtLimits:
    """What one DHT node holds and does for others. The defaults fit a network of hundreds of
    nodes and thousands of keys (each node holds the keys it is among the k closest to), with
    room to spare; see docs/security.md "DHT limits"."""

    max_keys: int = 2048
    max_bytes: int = 4 * 1024 * 1024  # stored record sets, each at most MAX_SET_BYTES
    sender_keys: int = 128  # new keys one source address may add
    sender_bytes: int = 256 * 1024
    signer_keys: int = 128  # keys one signer may have records in
    handoff_keys: int = 32  # keys pushed to one newcomer
    handoffs: int = 4  # newcomers being handed keys at once
    sender_checks_per_second: float = 200.0  # signature checks a sender may cause
    sender_check_burst: float = 1000.0
    total_checks_per_second: float = 2000.0  # ~11% of one core at ~55 us a check
    total_check_burst: float = 4000.0
    verified_cache: int = 8192  # signatures remembered as good

    def __post_init__(self) -> None:
        if self.max_bytes < MAX_SET_BYTES or self.sender_bytes < MAX_SET_BYTES:
            raise ValueError(f"byte limits must hold at least one record set ({MAX_SET_BYTES} bytes)")
        counts = (self.max_keys, self.sender_keys, self.signer_keys, self.handoffs, self.verified_cache)
        if min(counts) < 1 or self.handoff_keys < 0:
            raise ValueError("key, handoff and cache limits must be positive")
        if min(self.sender_checks_per_second, self.sender_check_burst, self.total_check_burst) <= 0:
            raise ValueError("signature check rates must be positive")


@dataclass(frozen=True, slots=True)
class _Entry:
    sender: Sender | None
    size: int
    signers: frozenset[bytes]
    first_expiry: float  # when its first record expires: until then, a read need not look inside
    expires_at: float  # when its last record expires


class Ledger:
    """Who holds what on one node: per key, per sender, per signer, and in all."""

    def __init__(self, limits: DhtLimits) -> None:
        self.limits = limits
        self.bytes = 0
        self._entries: dict[bytes, _Entry] = {}
        self._sender_keys: Counter[Sender] = Counter()
        self._sender_bytes: Counter[Sender] = Counter()
        self._signer_keys: Counter[bytes] = Counter()
        self._next_expiry = float("inf")

    @property
    def keys(self) -> int:
        return len(self._entries)

    def __contains__(self, dkey: bytes) -> bool:
        return dkey in self._entries

    def held_by(self, sender: Sender) -> tuple[int, int]:
        """The keys and bytes charged to `sender`."""
        return self._sender_keys[sender], self._sender_bytes[sender]

    def _new_key_refusal(self, dkey: bytes, sender: Sender | None) -> str | None:
        """Why `sender` may not add `dkey` now (None: it may). Cheap: asked before any signature work."""
        if dkey in self._entries:
            return None
        if len(self._entries) >= self.limits.max_keys:
            return f"this node holds its maximum of {self.limits.max_keys} keys"
        if sender is not None and self._sender_keys[sender] >= self.limits.sender_keys:
            return f"sender holds its quota of {self.limits.sender_keys} keys"
        return None

    def signer_is_full(self, dkey: bytes, signer: bytes) -> bool:
        """True when `signer` has no record in `dkey` yet and may not add one to another key."""
        held = self._entries.get(dkey)
        if held is not None and signer in held.signers:
            return False
        return self._signer_keys[signer] >= self.limits.signer_keys

    def refusal(self, dkey: bytes, sender: Sender | None, size: int) -> str | None:
        """Why `dkey` may not hold `size` bytes stored by `sender` (None: it may)."""
        problem = self._new_key_refusal(dkey, sender)
        if problem is not None:
            return problem
        held = self._entries.get(dkey)
        grows = size - (held.size if held is not None else 0)
        if grows > 0 and self.bytes + grows > self.limits.max_bytes:
            return f"this node holds its maximum of {self.limits.max_bytes} bytes"
        if held is None and sender is not None and self._sender_bytes[sender] + size > self.limits.sender_bytes:
            return f"sender holds its quota of {self.limits.sender_bytes} bytes"
        return None

    def all_live(self, dkey: bytes, now: float) -> bool:
        """True when no record held under `dkey` has expired by `now`."""
        entry = self._entries.get(dkey)
        return entry is not None and now < entry.first_expiry

    def charge(
        self, dkey: bytes, sender: Sender | None, size: int, signers: Iterable[bytes], expiries: Iterable[float]
    ) -> None:
        """Record that `dkey` now holds `size` bytes; a held key stays charged to its first sender."""
        held = self._entries.get(dkey)
        if held is not None:
            sender = held.sender
            self.release(dkey)
        times = sorted(expiries)
        expires_at = times[-1]
        entry = _Entry(sender, size, frozenset(signers), times[0], expires_at)
        self._entries[dkey] = entry
        self.bytes += size
        if sender is not None:
            self._sender_keys[sender] += 1
            self._sender_bytes[sender] += size
        self._signer_keys.update(entry.signers)
        self._next_expiry = min(self._next_expiry, expires_at)

    def release(self, dkey: bytes) -> None:
        entry = self._entries.pop(dkey, None)
        if entry is None:
            return
        self.bytes -= entry.size
        if entry.sender is not None:
            self._sender_keys[entry.sender] -= 1
            self._sender_bytes[entry.sender] -= entry.size
            if self._sender_keys[entry.sender] == 0:  # forget senders, or the counters grow forever
                del self._sender_keys[entry.sender]
                del self._sender_bytes[entry.sender]
        self._signer_keys.subtract(entry.signers)
        for signer in entry.signers:
            if self._signer_keys[signer] <= 0:
                del self._signer_keys[signer]

    def expired(self, now: float) -> list[bytes]:
        """The keys whose every record has expired by `now`; scans only when one may have."""
        if now < self._next_expiry:
            return []
        gone = [dkey for dkey, entry in self._entries.items() if entry.expires_at <= now]
        self._next_expiry = min(
            (e.expires_at for k, e in self._entries.items() if e.expires_at > now), default=float("inf")
        )
        return gone
