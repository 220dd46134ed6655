"""A DHT node's storage: record sets merged, never overwritten, and refused when not valid for their key."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kademlia.storage import ForgetfulStorage
from kademlia.utils import digest

from overlay.records import (
    MAX_TTL,
    RecordError,
    SignedRecord,
    check,
    decode_set,
    encode_set,
    merge,
)

log = logging.getLogger("overlay.dht")  # one logger for the whole node


class _RecordStorage(ForgetfulStorage):
    """Kademlia storage whose values are record sets, merged on every store."""

    def __init__(self, clock: Callable[[], float], max_records: int) -> None:
        super().__init__(ttl=int(MAX_TTL))
        self._clock = clock
        self._max_records = max_records

    def store(self, dkey: bytes, value: Any) -> None:
        """Merge record set `value` into what `dkey` holds; `RecordError` if none of it is valid."""
        if not isinstance(value, bytes):
            raise RecordError(f"value is a {type(value).__name__}, not a record set")
        incoming = decode_set(value)
        if digest(incoming.key) != dkey:
            raise RecordError(f"record set names key {incoming.key!r}, not the one it is stored under")
        if not incoming.records:
            raise RecordError("empty record set")
        now = self._clock()
        valid, reasons = [], []
        for record in incoming.records:
            try:
                check(record, incoming.key, now)
            except RecordError as exc:
                reasons.append(str(exc))
            else:
                valid.append(record)
        if not valid:
            raise RecordError(f"no valid record in the set: {reasons[0]}")
        merged = merge(self.records_at(dkey), valid, incoming.key, now, self._max_records)
        super().__setitem__(dkey, encode_set(incoming.key, merged))

    def records_at(self, dkey: bytes) -> tuple[SignedRecord, ...]:
        value = self.get(dkey)
        return decode_set(value).records if value is not None else ()

    def __setitem__(self, dkey: bytes, value: Any) -> None:
        # kademlia's own callers (set_digest, republishing) cannot handle a refusal.
        try:
            self.store(dkey, value)
        except RecordError as exc:
            log.info("not storing a value under %s: %s", dkey.hex(), exc)

    def get(self, key: bytes, default: Any = None) -> Any:
        """The held set without the records that have expired since it was stored."""
        value = super().get(key)
        if value is None:
            return default
        held = decode_set(value)
        now = self._clock()
        live = [r for r in held.records if r.expires_at > now]
        if len(live) == len(held.records):
            return value
        if not live:
            del self.data[key]
            return default
        pruned = encode_set(held.key, live)
        super().__setitem__(key, pruned)
        return pruned

    def __iter__(self):
        # Through get(), so expired records are never handed to new nodes.
        return iter([(k, v) for k in list(self.data) if (v := self.get(k)) is not None])
