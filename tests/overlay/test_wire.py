from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay import wire
from overlay.identity import Identity, IdentityError, verify


def test_identity_persists_and_signs(tmp_path):
    path = tmp_path / "id.key"
    first = Identity.load_or_create(path)
    again = Identity.load_or_create(path)
    assert first.public_key == again.public_key
    assert path.stat().st_mode & 0o777 == 0o600
    signature = first.sign(b"hello")
    assert verify(first.public_key, b"hello", signature)
    assert not verify(first.public_key, b"hullo", signature)
    assert not verify(Identity.generate().public_key, b"hello", signature)
    assert not verify(b"short", b"hello", signature)


def test_corrupt_identity_file_is_a_clear_error(tmp_path):
    path = tmp_path / "id.key"
    path.write_text("not hex at all")
    with pytest.raises(IdentityError, match="cannot read identity key"):
        Identity.load(path)
    path.write_text("abcd")
    with pytest.raises(IdentityError, match="32 bytes"):
        Identity.load(path)


COORDINATOR = Identity.generate().public_hex


def test_signed_request_round_trip_and_tampering():
    me = Identity.generate()
    headers = wire.sign_request(me, "POST", "/v1/reports", b"body", 1000.0, COORDINATOR)
    signed = wire.verify_request(headers, "POST", "/v1/reports", b"body", 1010.0, COORDINATOR)
    assert (signed.signer, signed.audience, signed.sent_at) == (me.public_hex, COORDINATOR, 1000.0)
    assert signed.nonce == headers[wire.NONCE_HEADER] and len(signed.nonce) == 2 * wire.NONCE_BYTES
    for method, path, body, now in [
        ("POST", "/v1/reports", b"bodY", 1000.0),
        ("POST", "/v1/leases", b"body", 1000.0),
        ("PUT", "/v1/reports", b"body", 1000.0),
        ("POST", "/v1/reports", b"body", 1000.0 + wire.MAX_CLOCK_SKEW + 1),
    ]:
        with pytest.raises(wire.WireError) as exc:
            wire.verify_request(headers, method, path, body, now, COORDINATOR)
        assert exc.value.code == "bad_signature"
    with pytest.raises(wire.WireError) as exc:
        wire.verify_request({}, "POST", "/v1/reports", b"body", 1000.0, COORDINATOR)
    assert exc.value.code == "unsigned"
    forged = dict(headers) | {wire.KEY_HEADER: Identity.generate().public_hex}
    with pytest.raises(wire.WireError):
        wire.verify_request(forged, "POST", "/v1/reports", b"body", 1000.0, COORDINATOR)
    with pytest.raises(wire.WireError):
        wire.verify_request(
            dict(headers) | {wire.TIMESTAMP_HEADER: "nan"}, "POST", "/v1/reports", b"body", 1000.0, COORDINATOR
        )


def test_a_signature_names_its_coordinator_and_a_fresh_nonce():
    me = Identity.generate()
    other = Identity.generate().public_hex
    headers = wire.sign_request(me, "POST", "/v1/jobs", b"body", 1000.0, COORDINATOR)
    with pytest.raises(wire.WireError) as exc:
        wire.verify_request(headers, "POST", "/v1/jobs", b"body", 1000.0, other)
    assert (exc.value.code, exc.value.http_status) == ("wrong_audience", 401)
    # Naming the other coordinator in the header does not help: the signature covers it.
    with pytest.raises(wire.WireError) as exc:
        wire.verify_request(headers | {wire.AUDIENCE_HEADER: other}, "POST", "/v1/jobs", b"body", 1000.0, other)
    assert exc.value.code == "bad_signature"
    again = wire.sign_request(me, "POST", "/v1/jobs", b"body", 1000.0, COORDINATOR)
    assert again[wire.NONCE_HEADER] != headers[wire.NONCE_HEADER]


def test_parse_validates_every_field():
    lease = {"unit_id": 1, "token": 2, "job_id": 3, "workload": "linkcheck", "payload": {}, "expires_at": 5}
    parsed = wire.parse(wire.LeaseResponse, {"leases": [lease]})
    assert parsed.leases[0].expires_at == 5.0
    bad_cases = [
        ({"leases": [lease | {"token": "2"}]}, "body.leases[0].token must be an integer"),
        ({"leases": [lease | {"token": True}]}, "body.leases[0].token must be an integer"),
        ({"leases": lease}, "body.leases must be a list"),
        ({}, "body.leases is missing"),
        ([], "body must be a map"),
        ({"leases": [lease | {"expires_at": float("inf")}]}, "must be a finite number"),
    ]
    for obj, message in bad_cases:
        with pytest.raises(wire.WireError, match=message.replace("[", r"\[").replace("]", r"\]")):
            wire.parse(wire.LeaseResponse, obj)
    with pytest.raises(wire.WireError, match="slots must be 1..256"):
        wire.parse(wire.RegisterRequest, {"name": "p", "slots": 0, "workloads": []})
    with pytest.raises(wire.WireError, match="exit_code"):
        wire.parse(wire.Report, {"unit_id": 1, "token": 1, "exit_code": 9})
    for delay, message in (
        (-1.0, "crawl_delay must be at least 0"),
        (float("nan"), "must be a finite number"),
        ("1", "must be a finite number"),
    ):
        with pytest.raises(wire.WireError, match=message):
            wire.parse(wire.Report, {"unit_id": 1, "token": 1, "exit_code": 0, "crawl_delay": delay})
    assert wire.parse(wire.Report, {"unit_id": 1, "token": 1, "exit_code": 0, "crawl_delay": 2}).crawl_delay == 2.0


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_garbage_bytes_never_escape_as_anything_but_wire_error(data):
    try:
        obj = wire.decode(data)
    except wire.WireError:
        return
    for cls in (wire.Report, wire.LeaseRequest, wire.RegisterRequest, wire.JobSubmit):
        try:
            wire.parse(cls, obj)
        except wire.WireError:
            pass


@settings(max_examples=100)
@given(
    st.dictionaries(
        st.sampled_from(["unit_id", "token", "exit_code", "payload", "error", "extra"]),
        st.one_of(
            st.none(),
            st.integers(-(2**63), 2**64 - 1),
            st.text(),
            st.binary(),
            st.lists(st.integers(0, 9)),
            st.floats(),
            st.booleans(),
        ),
    )
)
def test_wrong_types_are_wire_errors(obj):
    try:
        report = wire.parse(wire.Report, msgpack.unpackb(msgpack.packb(obj)))
    except wire.WireError:
        return
    assert isinstance(report.unit_id, int) and isinstance(report.token, int)
