from __future__ import annotations

import dataclasses
import typing

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


def test_every_string_is_capped_with_a_one_line_refusal():
    lease = {"unit_id": 1, "token": 2, "job_id": 3, "workload": "linkcheck", "payload": {}, "expires_at": 5}
    url = "http://a.test/" + "p" * (wire.MAX_URL - 14)
    assert wire.parse(wire.Lease, lease | {"host": url}).host == url  # a URL's cap
    with pytest.raises(wire.WireError) as refused:
        wire.parse(wire.Lease, lease | {"host": url + "p"})
    assert str(refused.value) == f"body.host is {wire.MAX_URL + 1} characters long; at most {wire.MAX_URL} are allowed"
    registration = {"name": "p", "slots": 1, "workloads": ["a", "b", "c", "w" * 65]}
    with pytest.raises(wire.WireError, match=r"^body\.workloads\[3\] is 65 characters long; at most 64 are allowed$"):
        wire.parse(wire.RegisterRequest, registration)
    with pytest.raises(wire.WireError, match=r"^body\.name is 129 characters long; at most 128 are allowed$"):
        wire.parse(wire.RegisterRequest, registration | {"workloads": [], "name": "n" * 129})
    status = {"job_id": 1, "workload": "w", "units_total": 0, "units_done": 0, "items_total": 0, "items_done": 0}
    with pytest.raises(wire.WireError, match=r"^answer\.state is 257 characters long; at most 256 are allowed$"):
        wire.parse(wire.JobStatus, status | {"state": "s" * 257}, "answer")  # the default cap
    report = {"unit_id": 1, "token": 1, "exit_code": 2}
    assert wire.parse(wire.Report, report | {"error": "e" * wire.MAX_TEXT}).error == "e" * wire.MAX_TEXT
    with pytest.raises(wire.WireError, match="body.error is 2001 characters"):
        wire.parse(wire.Report, report | {"error": "e" * (wire.MAX_TEXT + 1)})
    with pytest.raises(wire.WireError, match="too many workloads"):
        wire.parse(wire.LeaseRequest, {"max_units": 1, "workloads": ["w"] * (wire.MAX_WORKLOADS + 1)})


def _messages() -> list[type]:
    return [
        v
        for v in vars(wire).values()
        if isinstance(v, type) and dataclasses.is_dataclass(v) and v.__module__ == wire.__name__
    ]


@pytest.mark.parametrize("cls", _messages(), ids=lambda cls: cls.__name__)
def test_no_message_has_an_uncapped_string(cls):
    huge = "x" * (wire.MAX_URL + 1)  # over every cap there is
    for field in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls, include_extras=True)[field.name]
        check = wire._checker(hint)
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        is_list = typing.get_origin(hint) is list or any(typing.get_origin(a) is list for a in inner)
        value = [huge] if is_list else huge
        try:
            check(value, field.name)
        except wire.WireError as exc:
            assert "characters long" in str(exc) or "must be" in str(exc)
        else:
            raise AssertionError(f"{cls.__name__}.{field.name} takes a string of {len(huge)} characters")


def test_a_sender_clips_what_would_be_refused():
    assert wire.clip(None) is None
    assert wire.clip("short") == "short"
    clipped = wire.clip("e" * 5000)
    assert clipped is not None and len(clipped) == wire.MAX_TEXT and clipped.endswith("…")


def test_a_job_says_its_progress_in_the_words_of_its_items() -> None:
    def status(**kw: object) -> wire.JobStatus:
        return wire.JobStatus(job_id=1, workload="w", state="running", units_total=1, units_done=0, **kw)  # type: ignore[arg-type]

    assert status(items_total=10, items_done=3).progress == "3/10 URLs"
    assert status(items_total=10, items_done=3, input="records").progress == "3/10 items"
    assert status(items_total=15, items_done=7, vantage=3).progress == "7/15 answers (5 URLs from 3 vantage points)"
    # Older coordinators send neither: a job of URLs, as every job was.
    old = {
        "job_id": 1,
        "workload": "w",
        "state": "done",
        "units_total": 1,
        "units_done": 1,
        "items_total": 2,
        "items_done": 2,
    }
    assert wire.parse(wire.JobStatus, old).progress == "2/2 URLs"
