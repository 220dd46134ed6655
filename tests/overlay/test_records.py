from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from overlay import records, wire
from overlay.identity import Identity
from overlay.records import RecordError, SignedRecord

NOW = 1_700_000_000.0
KEY = "coordinators/linkcheck"
ALICE = Identity.generate()
BOB = Identity.generate()
MALLORY = Identity.generate()


def _record(who: Identity = ALICE, now: float = NOW, ttl: float = 600.0, **payload: object) -> SignedRecord:
    return records.sign(who, KEY, payload or {"addr": "10.0.0.1:7000"}, now, ttl)


def _forge(who: Identity, key: str, record: SignedRecord, **changes: Any) -> SignedRecord:
    """`record` with `changes` applied and then signed by `who`, as a liar with a key would do."""
    fields = dataclasses.replace(record, **changes)
    signed = records._signed_bytes(key, fields.signer, fields.payload, fields.issued_at, fields.expires_at)
    return dataclasses.replace(fields, signature=who.sign(signed))


def test_sign_encode_decode_check_round_trip():
    record = _record(addr="10.0.0.1:7000", slots=4)
    again = records.decode(records.encode(record))
    assert again == record
    records.check(again, KEY, NOW + 10)
    assert records.payload_of(again) == {"addr": "10.0.0.1:7000", "slots": 4}
    assert again.signer == ALICE.public_key
    assert again.expires_at == NOW + 600.0
    assert not records.is_withdrawn(again)


def test_tampered_payload_fails():
    record = dataclasses.replace(_record(), payload=wire.encode({"addr": "6.6.6.6:7000"}))
    with pytest.raises(RecordError, match="signature does not match"):
        records.check(record, KEY, NOW)


def test_other_signer_key_substituted_fails():
    record = dataclasses.replace(_record(MALLORY), signer=ALICE.public_key)
    with pytest.raises(RecordError, match="signature does not match"):
        records.check(record, KEY, NOW)


def test_replay_under_another_key_fails():
    record = _record()
    records.check(record, KEY, NOW)
    with pytest.raises(RecordError, match="signature does not match signer and key 'coordinators/other'"):
        records.check(record, "coordinators/other", NOW)


def test_expiry_and_future_and_lifetime_bounds():
    record = _record(ttl=600.0)
    records.check(record, KEY, NOW + 599.0)
    with pytest.raises(RecordError, match="expired"):
        records.check(record, KEY, NOW + 600.0)
    future = _record(now=NOW + 301.0)
    with pytest.raises(RecordError, match="too far in the future"):
        records.check(future, KEY, NOW)
    records.check(_record(now=NOW + 300.0), KEY, NOW)
    backwards = _forge(ALICE, KEY, record, expires_at=NOW)
    with pytest.raises(RecordError, match="expires_at is not after issued_at"):
        records.check(backwards, KEY, NOW - 10)
    too_long = _forge(ALICE, KEY, record, expires_at=NOW + records.MAX_TTL + 1)
    with pytest.raises(RecordError, match="ttl of 86401 s is over the maximum 86400 s"):
        records.check(too_long, KEY, NOW)


def test_sign_refuses_impossible_requests():
    with pytest.raises(ValueError, match="ttl"):
        records.sign(ALICE, KEY, {}, NOW, records.MAX_TTL + 1)
    with pytest.raises(ValueError, match="ttl"):
        records.sign(ALICE, KEY, {}, NOW, 0)
    with pytest.raises(ValueError, match="key name"):
        records.sign(ALICE, "", {}, NOW, 60)
    with pytest.raises(ValueError, match="payload encodes to"):
        records.sign(ALICE, KEY, {"blob": b"x" * records.MAX_PAYLOAD_BYTES}, NOW, 60)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc1garbage", "record is not valid msgpack"),
        (wire.encode([1, 2, 3]), "record must be a map of exactly"),
        (wire.encode({"signer": b"x"}), "record must be a map of exactly"),
        ("text", "record must be bytes"),
        (b"\x00" * (records.MAX_SET_BYTES + 1), "record is over 8137 bytes"),
    ],
)
def test_decode_refuses_malformed_bytes(data, reason):
    with pytest.raises(RecordError, match=reason):
        records.decode(data)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"signer": b"short"}, "signer must be 32 bytes"),
        ({"signature": b"\x00" * 10}, "signature must be 64 bytes"),
        ({"issued_at": 5}, "issued_at must be a finite float"),
        ({"expires_at": float("nan")}, "expires_at must be a finite float"),
        ({"payload": wire.encode([1])}, "payload is not a msgpack map"),
        ({"payload": b"\xc1"}, "payload is not msgpack"),
        ({"payload": "str"}, "payload must be at most 1024 bytes"),
    ],
)
def test_decode_refuses_wrong_field_types(change, reason):
    obj = records._to_obj(_record()) | change
    with pytest.raises(RecordError, match=reason):
        records.decode(wire.encode(obj))


def test_set_round_trip_drops_malformed_entries():
    a, b = _record(ALICE), _record(BOB)
    data = wire.encode({"key": KEY, "records": [records._to_obj(a), {"nonsense": 1}, records._to_obj(b)]})
    assert records.decode_set(data) == records.RecordSet(KEY, (a, b))
    assert records.decode_set(records.encode_set(KEY, [b])) == records.RecordSet(KEY, (b,))
    with pytest.raises(RecordError, match="record set must be a map of key, records"):
        records.decode_set(wire.encode([a.signer]))
    with pytest.raises(RecordError, match="record set records must be a list"):
        records.decode_set(wire.encode({"key": KEY, "records": b"x"}))


def test_merge_keeps_one_record_per_signer_newest_wins():
    old_a = _record(ALICE, now=NOW - 100)
    new_a = _record(ALICE, now=NOW)
    b = _record(BOB, now=NOW - 50)
    assert records.merge([old_a, b], [new_a], KEY, NOW) == [new_a, b]
    # The older record arriving later does not win.
    assert records.merge([new_a, b], [old_a], KEY, NOW) == [new_a, b]
    # Same issued_at: every node picks the same one, whatever the order.
    twin = _record(ALICE, now=NOW, ttl=900.0)
    assert records.merge([new_a], [twin], KEY, NOW) == records.merge([twin], [new_a], KEY, NOW) == [twin]


def test_merge_drops_invalid_and_expired_records_and_forged_newer_ones():
    a = _record(ALICE, now=NOW - 100)
    expired = _record(BOB, now=NOW - 700)
    forged_newer = _forge(MALLORY, KEY, a, issued_at=NOW, expires_at=NOW + 60)  # claims to be Alice
    other_key = records.sign(BOB, "elsewhere", {"x": 1}, NOW, 60)
    assert records.merge([a, expired], [forged_newer, other_key], KEY, NOW) == [a]


def test_merge_bounds_the_number_of_records_keeping_the_newest():
    people = [Identity.generate() for _ in range(20)]
    signed = [_record(p, now=NOW - i) for i, p in enumerate(people)]
    merged = records.merge([], list(reversed(signed)), KEY, NOW, max_records=16)
    assert merged == signed[:16]
    assert records.merge([], signed, KEY, NOW, max_records=3) == signed[:3]


def test_merge_drops_oldest_until_the_set_fits_the_value_limit():
    people = [Identity.generate() for _ in range(16)]
    blob = b"x" * 900
    signed = [_record(p, now=NOW - i, blob=blob) for i, p in enumerate(people)]
    merged = records.merge([], signed, KEY, NOW, max_records=16)
    assert merged == signed[: len(merged)]
    assert len(records.encode_set(KEY, merged)) <= records.MAX_SET_BYTES
    assert len(records.encode_set(KEY, signed[: len(merged) + 1])) > records.MAX_SET_BYTES
    assert len(merged) == 7


def test_withdrawal_replaces_the_signers_record():
    a = _record(ALICE, now=NOW)
    gone = records.withdrawal(ALICE, KEY, NOW + 1)
    assert records.is_withdrawn(gone)
    assert gone.expires_at == NOW + 1 + records.WITHDRAWAL_TTL
    merged = records.merge([a], [gone], KEY, NOW + 2)
    assert merged == [gone]
    assert [r for r in merged if not records.is_withdrawn(r)] == []
