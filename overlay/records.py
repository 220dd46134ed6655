"""Signed DHT records and the record sets a DHT key holds. Pure: no I/O, the clock is passed in.

A record is one signer's statement under one DHT key: a msgpack map with the signer's Ed25519
public key, an opaque payload (msgpack of a map), issued_at, expires_at and a signature. The
signature covers those four fields, a domain string and the key name, so a record signed for
one key is worthless under any other.

A record set is what a DHT key holds: the key name plus at most one record per signer. Sets
from different nodes are combined with `merge()`, which keeps only records that pass `check()`,
the newest record of each signer, and as many of the newest as fit kademlia's value limit.
A withdrawal is a newer record from the same signer whose payload is {"withdrawn": True}.

Errors: `RecordError` means the bytes or the record came from someone who misbehaved (or from a
clock far off); `ValueError` from `sign()` means we asked for something impossible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from overlay import wire
from overlay.errors import OsaasError
from overlay.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, verify

log = logging.getLogger(__name__)

DOMAIN = "osaas-dht-record-v1"
MAX_CLOCK_SKEW = 300.0
MAX_TTL = 86400.0
WITHDRAWAL_TTL = 600.0
# Small enough that one record cannot push many others out of a full set.
MAX_PAYLOAD_BYTES = 1024
MAX_KEY_CHARS = 200
# kademlia's request limit is 8192 bytes; the store RPC's own framing leaves 8137 for the value.
MAX_SET_BYTES = 8137
DEFAULT_MAX_RECORDS = 16

_FIELDS = frozenset({"signer", "payload", "issued_at", "expires_at", "signature"})


class RecordError(OsaasError):
    """A record or record set that is malformed, wrongly signed, expired or not yet valid."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RecordError(message)


def _payload_map(payload: bytes) -> dict[str, Any]:
    try:
        obj = wire.decode(payload)
    except wire.WireError as exc:
        raise RecordError("payload is not msgpack") from exc
    _require(isinstance(obj, dict), "payload is not a msgpack map")
    return obj


def _is_time(value: object) -> bool:
    # Strictly float: an int would pack differently and could never match a signature anyway.
    return type(value) is float and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class SignedRecord:
    signer: bytes
    payload: bytes
    issued_at: float
    expires_at: float
    signature: bytes

    def __post_init__(self) -> None:
        _require(
            isinstance(self.signer, bytes) and len(self.signer) == PUBLIC_KEY_SIZE,
            f"signer must be {PUBLIC_KEY_SIZE} bytes",
        )
        _require(
            isinstance(self.signature, bytes) and len(self.signature) == SIGNATURE_SIZE,
            f"signature must be {SIGNATURE_SIZE} bytes",
        )
        _require(_is_time(self.issued_at), "issued_at must be a finite float")
        _require(_is_time(self.expires_at), "expires_at must be a finite float")
        _require(
            isinstance(self.payload, bytes) and len(self.payload) <= MAX_PAYLOAD_BYTES,
            f"payload must be at most {MAX_PAYLOAD_BYTES} bytes",
        )
        _payload_map(self.payload)


@dataclass(frozen=True, slots=True)
class RecordSet:
    """The decoded content of one DHT value: the key name it was published under, and its records."""

    key: str
    records: tuple[SignedRecord, ...]


# ---- one record ------------------------------------------------------------------------


def _signed_bytes(key: str, signer: bytes, payload: bytes, issued_at: float, expires_at: float) -> bytes:
    return wire.encode([DOMAIN, key, signer, payload, issued_at, expires_at])


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
        raise ValueError(f"a DHT key name must be 1..{MAX_KEY_CHARS} characters")


def sign(identity: Identity, key: str, payload: dict[str, Any], now: float, ttl: float) -> SignedRecord:
    """`identity`'s record of `payload` under DHT key `key`, valid from `now` for `ttl` seconds."""
    _check_key(key)
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be in (0, {MAX_TTL:g}] seconds")
    body = wire.encode(payload)
    if len(body) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload encodes to {len(body)} bytes, over {MAX_PAYLOAD_BYTES}")
    issued_at = float(now)
    expires_at = issued_at + float(ttl)
    signer = identity.public_key
    signature = identity.sign(_signed_bytes(key, signer, body, issued_at, expires_at))
    return SignedRecord(signer, body, issued_at, expires_at, signature)


def withdrawal(identity: Identity, key: str, now: float, ttl: float = WITHDRAWAL_TTL) -> SignedRecord:
    """A record that replaces `identity`'s earlier one under `key` (issued before `now`)."""
    return sign(identity, key, {"withdrawn": True}, now, ttl)


def _to_obj(record: SignedRecord) -> dict[str, Any]:
    return {
        "signer": record.signer,
        "payload": record.payload,
        "issued_at": record.issued_at,
        "expires_at": record.expires_at,
        "signature": record.signature,
    }


def _from_obj(obj: Any) -> SignedRecord:
    _require(
        isinstance(obj, dict) and obj.keys() == _FIELDS,
        "record must be a map of exactly " + ", ".join(sorted(_FIELDS)),
    )
    return SignedRecord(obj["signer"], obj["payload"], obj["issued_at"], obj["expires_at"], obj["signature"])


def _unpack(data: bytes, what: str) -> Any:
    _require(isinstance(data, bytes), f"{what} must be bytes")
    _require(len(data) <= MAX_SET_BYTES, f"{what} is over {MAX_SET_BYTES} bytes")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise RecordError(f"{what} is not valid msgpack ({type(exc).__name__})") from exc


def encode(record: SignedRecord) -> bytes:
    return wire.encode(_to_obj(record))


def decode(data: bytes) -> SignedRecord:
    return _from_obj(_unpack(data, "record"))


def check(record: SignedRecord, key: str, now: float) -> None:
    """Raise `RecordError` unless `record` is `record.signer`'s, made for `key`, and valid at `now`."""
    check_times(record, now)
    # Checked last: it is the expensive part.
    _require(signature_matches(record, key), f"signature does not match signer and key {key!r}")


def check_times(record: SignedRecord, now: float) -> None:
    """Everything `check` asks but the signature: cheap, so it runs before any signature work."""
    lifetime = record.expires_at - record.issued_at
    _require(lifetime > 0, "expires_at is not after issued_at")
    _require(lifetime <= MAX_TTL, f"ttl of {lifetime:.0f} s is over the maximum {MAX_TTL:.0f} s")
    _require(record.issued_at <= now + MAX_CLOCK_SKEW, "issued_at is too far in the future")
    _require(record.expires_at > now, "record has expired")


def signed_bytes(record: SignedRecord, key: str) -> bytes:
    """What `record`'s signature covers when it is stored under `key`."""
    return _signed_bytes(key, record.signer, record.payload, record.issued_at, record.expires_at)


def signature_matches(record: SignedRecord, key: str) -> bool:
    return verify(record.signer, signed_bytes(record, key), record.signature)


def payload_of(record: SignedRecord) -> dict[str, Any]:
    return _payload_map(record.payload)


def is_withdrawn(record: SignedRecord) -> bool:
    return payload_of(record).get("withdrawn") is True


# ---- record sets -----------------------------------------------------------------------


def encode_set(key: str, records: Iterable[SignedRecord]) -> bytes:
    _check_key(key)
    return wire.encode({"key": key, "records": [_to_obj(r) for r in records]})


def decode_set(data: bytes) -> RecordSet:
    """Parse a DHT value. Malformed entries are dropped (and logged); a malformed set raises."""
    obj = _unpack(data, "record set")
    _require(isinstance(obj, dict) and obj.keys() == {"key", "records"}, "record set must be a map of key, records")
    key, entries = obj["key"], obj["records"]
    _require(
        isinstance(key, str) and 0 < len(key) <= MAX_KEY_CHARS,
        f"record set key must be 1..{MAX_KEY_CHARS} characters",
    )
    _require(isinstance(entries, list), "record set records must be a list")
    records = []
    for entry in entries:
        try:
            records.append(_from_obj(entry))
        except RecordError as exc:
            log.info("dropping a malformed record in the set for %r: %s", key, exc)
    return RecordSet(key, tuple(records))


def _rank(record: SignedRecord) -> tuple[float, float, bytes]:
    # The signature breaks ties so every node picks the same winner.
    return (record.issued_at, record.expires_at, record.signature)


def merge(
    existing: Sequence[SignedRecord],
    incoming: Sequence[SignedRecord],
    key: str,
    now: float,
    max_records: int = DEFAULT_MAX_RECORDS,
    check_record: Callable[[SignedRecord, str, float], None] = check,
) -> list[SignedRecord]:
    """The record set `key` should hold at `now`: valid records only, the newest per signer, at
    most `max_records` of the newest, and no more than fit in `MAX_SET_BYTES`. Newest first.

    `check_record` lets a caller that has already checked some signatures (a DHT node caches
    them) skip checking them again; it must raise `RecordError` as `check` does."""
    if max_records < 1:
        raise ValueError("max_records must be at least 1")
    newest: dict[bytes, SignedRecord] = {}
    for record in (*existing, *incoming):
        held = newest.get(record.signer)
        # Only a record that would win needs its signature checked.
        if held is not None and _rank(record) <= _rank(held):
            continue
        try:
            check_record(record, key, now)
        except RecordError as exc:
            log.debug("dropping a record by %s under %r: %s", record.signer.hex()[:16], key, exc)
            continue
        newest[record.signer] = record
    kept = sorted(newest.values(), key=_rank, reverse=True)[:max_records]
    while len(encode_set(key, kept)) > MAX_SET_BYTES:
        dropped = kept.pop()
        log.debug("record set for %r is full: dropping %s's record", key, dropped.signer.hex()[:16])
    return kept
