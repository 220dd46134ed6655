"""A DHT node's storage: record sets merged, never overwritten, refused when not valid for their key
or when they would take a sender, a signer or the node past its limits (limits.py)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kademlia.storage import IStorage
from kademlia.utils import digest

from overlay.dht.limits import Ledger, Sender, StoreRefused
from overlay.dht.verifying import SignatureChecks
from overlay.records import (
    RecordError,
    SignedRecord,
    check_times,
    decode_set,
    encode_set,
    merge,
)

log = logging.getLogger("overlay.dht")  # one logger for the whole node


@dataclass(frozen=True, slots=True)
class StorageUsage:
    """What a node holds for others and the signature checks it has made, as its ledger counts them."""

    keys: int
    bytes: int
    signature_checks: int


def _times_only(record: SignedRecord, key: str, now: float) -> None:
    # For merges of records whose signatures were checked as they arrived.
    check_times(record, now)


class _RecordStorage(IStorage):
    """Kademlia storage whose values are record sets, merged on every store and accounted for."""

    def __init__(self, clock: Callable[[], float], max_records: int, ledger: Ledger, checks: SignatureChecks) -> None:
        self._clock = clock
        self._max_records = max_records
        self.ledger = ledger
        self.checks = checks
        # dkey -> (time.monotonic() when stored, the encoded set), oldest first: kademlia
        # republishes what was stored over an hour ago (iter_older_than).
        self._data: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()

    def usage(self) -> StorageUsage:
        return StorageUsage(self.ledger.keys, self.ledger.bytes, self.checks.made)

    def store(self, dkey: bytes, value: Any, sender: Sender | None = None) -> None:
        """Merge record set `value` into what `dkey` holds, for `sender` (None: this node).

        Raises `StoreRefused` when a limit says no, `RecordError` if none of the set is valid.
        The cheap refusals come first, so a sender over its quota costs no signature checks.
        """
        if not isinstance(value, bytes):
            raise RecordError(f"value is a {type(value).__name__}, not a record set")
        now = self._clock()
        self._forget_expired(now)
        # A new key's set will be at most the size it arrived in: refused now if that is too much.
        problem = None if dkey in self.ledger else self.ledger.refusal(dkey, sender, len(value))
        if problem is not None:
            raise StoreRefused(problem)
        incoming = decode_set(value)
        if digest(incoming.key) != dkey:
            raise RecordError(f"record set names key {incoming.key!r}, not the one it is stored under")
        if not incoming.records:
            raise RecordError("empty record set")
        valid, reasons = [], []
        for record in incoming.records:
            if self.ledger.signer_is_full(dkey, record.signer):
                reasons.append(f"signer {record.signer.hex()[:16]} has records in its quota of keys")
                continue
            try:
                self.checks.check(record, incoming.key, now, sender)
            except StoreRefused:
                raise
            except RecordError as exc:
                reasons.append(str(exc))
            else:
                valid.append(record)
        if not valid:
            raise RecordError(f"no valid record in the set: {reasons[0]}")
        merged = merge(self.records_at(dkey), valid, incoming.key, now, self._max_records, _times_only)
        encoded = encode_set(incoming.key, merged)
        problem = self.ledger.refusal(dkey, sender, len(encoded))
        if problem is not None:
            raise StoreRefused(problem)
        self._put(dkey, encoded, merged, sender, time.monotonic())

    def records_at(self, dkey: bytes) -> tuple[SignedRecord, ...]:
        value = self.get(dkey)
        return decode_set(value).records if value is not None else ()

    def stored_keys(self) -> list[bytes]:
        return list(self._data)

    # -- kademlia's IStorage

    def __setitem__(self, dkey: bytes, value: Any) -> None:
        # kademlia's own callers (set_digest, republishing) cannot handle a refusal.
        try:
            self.store(dkey, value)
        except RecordError as exc:
            log.info("not storing a value under %s: %s", dkey.hex(), exc)

    def __getitem__(self, dkey: bytes) -> bytes:
        value = self.get(dkey)
        if value is None:
            raise KeyError(dkey)
        return value

    def get(self, key: bytes, default: Any = None) -> Any:
        """The held set without the records that have expired since it was stored."""
        held = self._data.get(key)
        if held is None:
            return default
        stored_at, value = held
        now = self._clock()
        if self.ledger.all_live(key, now):
            return value
        decoded = decode_set(value)
        live = [r for r in decoded.records if r.expires_at > now]
        if not live:
            self._drop(key)
            return default
        pruned = encode_set(decoded.key, live)
        self._put(key, pruned, live, None, stored_at)  # a held key stays charged to its first sender
        return pruned

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        born_before = time.monotonic() - seconds_old
        old = [dkey for dkey, (stored_at, _) in self._data.items() if stored_at <= born_before]
        return [(dkey, value) for dkey in old if (value := self.get(dkey)) is not None]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        # Through get(), so expired records are never handed to new nodes.
        self._forget_expired(self._clock())
        return iter([(k, v) for k in list(self._data) if (v := self.get(k)) is not None])

    # -- helpers

    def _put(self, dkey: bytes, value: bytes, held: list[SignedRecord], sender: Sender | None, at: float) -> None:
        self.ledger.charge(dkey, sender, len(value), (r.signer for r in held), (r.expires_at for r in held))
        self._data.pop(dkey, None)
        self._data[dkey] = (at, value)

    def _drop(self, dkey: bytes) -> None:
        self._data.pop(dkey, None)
        self.ledger.release(dkey)

    def _forget_expired(self, now: float) -> None:
        for dkey in self.ledger.expired(now):
            self._drop(dkey)
