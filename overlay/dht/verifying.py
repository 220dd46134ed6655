"""Signature checks that cannot be turned into a CPU flood: remembered when good, rationed per sender.

An Ed25519 check costs ~55 us here, and one store datagram can carry ~40 records, so a sender
sending valid-looking stores as fast as it can would keep a core busy. Two things stop that:

- A signature found good is remembered (a bounded LRU of digests of what it covers, with the
  signature): records that arrive again (replication, republishing, a replayed store) and the
  records a node already holds cost a hash, not a check.
- A check that is not remembered costs the sender a token from its own bucket and one from the
  node's total bucket; with either empty the store is refused before any check is made. The
  total bucket bounds the work many (possibly forged) addresses can cause together.

Checks the node makes for itself (its lookups, its own publishes) use the memory but no bucket.

Some keys have a rule of their own besides the record's signature (overlay.announcements
`admission_problem`: a coordinator's record must carry the network's certificate of its key).
Its certificate signatures go through the same memory and buckets.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from overlay.announcements import admission_problem
from overlay.dht.limits import DhtLimits, Sender, StoreRefused
from overlay.identity import verify
from overlay.records import RecordError, SignedRecord, check_times, signed_bytes

_MAX_BUCKETS = 4096  # senders remembered; a forgotten one starts again with a full bucket


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up. Pure: the time is passed in."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class SignatureChecks:
    """`records.check`, with good signatures remembered and the work rationed per sender."""

    def __init__(self, limits: DhtLimits, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._monotonic = monotonic
        self._good: OrderedDict[bytes, None] = OrderedDict()
        self._buckets: OrderedDict[Sender, TokenBucket] = OrderedDict()
        self._total = TokenBucket.full(limits.total_checks_per_second, limits.total_check_burst, monotonic())
        self.made = 0  # signature checks actually made, for tests and operators

    def check(self, record: SignedRecord, key: str, now: float, sender: Sender | None = None) -> None:
        """Raise `RecordError` unless `record` is valid for `key` at `now`; `StoreRefused` when
        `sender` (None: this node) has used up its signature checks."""
        check_times(record, now)
        if not self._verified(record.signer, signed_bytes(record, key), record.signature, sender):
            raise RecordError(f"signature does not match signer and key {key!r}")
        problem = admission_problem(
            record,
            key,
            now,
            lambda public_key, message, signature: self._verified(public_key, message, signature, sender),
        )
        if problem is not None:
            raise RecordError(problem)

    def _verified(self, public_key: bytes, message: bytes, signature: bytes, sender: Sender | None) -> bool:
        """`verify`, remembered when good; a check not remembered is rationed (StoreRefused)."""
        digest = hashlib.blake2b(public_key + message + signature, digest_size=20).digest()
        if digest in self._good:
            self._good.move_to_end(digest)
            return True
        if sender is not None:
            self._ration(sender)
        self.made += 1
        if not verify(public_key, message, signature):
            return False
        self._good[digest] = None
        if len(self._good) > self._limits.verified_cache:
            self._good.popitem(last=False)
        return True

    def _ration(self, sender: Sender) -> None:
        now = self._monotonic()
        bucket = self._buckets.get(sender)
        if bucket is None:
            limits = self._limits
            bucket = TokenBucket.full(limits.sender_checks_per_second, limits.sender_check_burst, now)
            self._buckets[sender] = bucket
            if len(self._buckets) > _MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(sender)
        if not bucket.take(now):
            raise StoreRefused(
                f"sender is over its {self._limits.sender_checks_per_second:g} signature checks a second"
            )
        if not self._total.take(now):
            raise StoreRefused("this node is over its signature checks a second for everyone")
