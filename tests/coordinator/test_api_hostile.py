"""Hostile input to every endpoint: garbage, wrong types, forged signatures, huge bodies.

The answer is always a clear msgpack error, never a 500, and the server keeps serving.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.host_pacing import DEFAULT_MIN_DELAY
from overlay.identity import Identity
from overlay.wire import (
    AUDIENCE_HEADER,
    CONTENT_TYPE,
    MAX_BODY,
    MAX_CLOCK_SKEW,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    decode,
    encode,
    sign_request,
)
from tests.coordinator.conftest import MSGPACK, Clock, Peer, audience, get, item, post, submit

SIGNED = ["/v1/peers/register", "/v1/leases", "/v1/leases/renew", "/v1/leases/release", "/v1/reports"]
POSTS = [*SIGNED, "/v1/jobs"]
FIELDS = [
    "name",
    "slots",
    "workloads",
    "version",
    "max_units",
    "unit_id",
    "token",
    "exit_code",
    "payload",
    "error",
    "workload",
    "input",
    "urls",
    "depth",
    "items",
]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.sampled_from(FIELDS), inner, max_size=4)
    ),
    max_leaves=12,
)
_maps = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), _values, max_size=6)
_hostile_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


async def post_signed(client: TestClient, peer: Peer, path: str, body: bytes) -> tuple[int, Any]:
    headers = sign_request(peer.identity, "POST", path, body, peer.clock(), audience(client)) | MSGPACK
    async with client.post(path, data=body, headers=headers) as resp:
        assert resp.content_type == CONTENT_TYPE
        return resp.status, decode(await resp.read())


def assert_error(status: int, body: Any) -> None:
    assert 400 <= status < 500, (status, body)
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    message = body["error"]["message"]
    assert isinstance(message, str) and message and "\n" not in message


@_hostile_settings
@given(path=st.sampled_from(POSTS), body=st.binary(max_size=300))
async def test_garbage_bytes(client: TestClient, peer: Peer, path: str, body: bytes) -> None:
    assert_error(*await post_signed(client, peer, path, body))


TEMPLATES: dict[str, dict[str, Any]] = {
    "/v1/peers/register": {"name": "p", "slots": 1, "workloads": ["linkcheck"], "version": "1"},
    "/v1/leases": {"max_units": 1, "workloads": ["linkcheck"]},
    "/v1/leases/renew": {"unit_id": 1, "token": 1},
    "/v1/leases/release": {"unit_id": 1, "token": 1},
    "/v1/reports": {"unit_id": 1, "token": 1, "exit_code": 0, "payload": {"items": []}, "error": None},
    "/v1/jobs": {"workload": "linkcheck", "input": {"urls": ["http://a.test/"], "depth": 1}},
}


@st.composite
def _mutated(draw: st.DrawFn, path: str) -> dict[str, Any]:
    """A valid message with one field dropped or replaced by a random value."""
    message = dict(TEMPLATES[path])
    name = draw(st.sampled_from(sorted(message)))
    if draw(st.booleans()):
        del message[name]
    else:
        message[name] = draw(_values)
    return message


@_hostile_settings
@given(data=st.data(), path=st.sampled_from(POSTS))
async def test_wrong_typed_maps(client: TestClient, peer: Peer, data: st.DataObject, path: str) -> None:
    obj = data.draw(_mutated(path) | _maps | _values)
    status, body = await post_signed(client, peer, path, encode(obj))
    if status != 200:  # a random map may by chance be valid; all else must be a clean 4xx
        assert_error(status, body)
    assert await get(client, "/v1/health") == (200, {"ok": True, "store": "ok", "public_key": audience(client)})


@_hostile_settings
@given(payload=_values, exit_code=st.integers(0, 3), error=st.none() | st.text(max_size=30))
async def test_hostile_report_payloads_for_a_real_lease(
    client: TestClient, peer: Peer, clock: Clock, payload: Any, exit_code: int, error: str | None
) -> None:
    clock.advance(DEFAULT_MIN_DELAY)  # a.test rests after the previous example's unit
    await submit(client, ["http://a.test/"])
    (lease,) = await peer.lease()
    status, body = await peer.report(lease, exit_code, payload, error)
    if status != 200:
        assert_error(status, body)
    if exit_code in (0, 1) and status == 200:
        # Records are checked against the job's schema: only a map whose 'items' is an empty
        # list is taken (a failed attempt); anything else is refused, saying why.
        taken = isinstance(payload, dict) and payload.get("items") == []
        assert body["accepted"] is taken
        assert taken or body["reason"].startswith("report refused: payload")
    # Whatever happened, the unit can still be finished, or is already.
    if status == 400:
        assert await peer.report(lease, 0, {"items": [item("http://a.test/")]}) == (
            200,
            {"accepted": True, "reason": ""},
        )


async def test_bad_signatures(client: TestClient, peer: Peer, clock: Clock) -> None:
    path = "/v1/leases"
    body = encode({"max_units": 1, "workloads": ["linkcheck"]})
    us = audience(client)

    def signed(at: float, *, by: Identity = peer.identity, on: str = path, to: str = us) -> dict[str, str]:
        return sign_request(by, "POST", on, body, at, to)

    good = signed(clock())
    cases: dict[str, tuple[dict[str, str], bytes]] = {
        "unsigned": ({}, body),
        "wrong key": ({**signed(clock(), by=Identity.generate()), "X-Osaas-Key": peer.identity.public_hex}, body),
        "tampered body": (good, encode({"max_units": 2, "workloads": ["linkcheck"]})),
        "other path": (signed(clock(), on="/v1/reports"), body),
        "old timestamp": (signed(clock() - MAX_CLOCK_SKEW - 1), body),
        "future timestamp": (signed(clock() + MAX_CLOCK_SKEW + 1), body),
        "another coordinator": (signed(clock(), to=Identity.generate().public_hex), body),
        "no audience": ({k: v for k, v in good.items() if k != AUDIENCE_HEADER}, body),
        "no nonce": ({k: v for k, v in good.items() if k != NONCE_HEADER}, body),
        "short nonce": ({**good, NONCE_HEADER: "00"}, body),
        "not hex": ({**good, SIGNATURE_HEADER: "zz"}, body),
        "short signature": ({**good, SIGNATURE_HEADER: "00" * 10}, body),
        "nan timestamp": ({**good, "X-Osaas-Timestamp": "nan"}, body),
    }
    for name, (headers, data) in cases.items():
        async with client.post(path, data=data, headers=headers | MSGPACK) as resp:
            status, answer = resp.status, decode(await resp.read())
        assert status == 401, name
        assert_error(status, answer)
    async with client.post(path, data=body, headers=good | MSGPACK) as resp:
        assert resp.status == 200


async def test_oversized_body(client: TestClient, peer: Peer) -> None:
    huge = b"\x00" * (MAX_BODY + 1)

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit must hold while reading
        for start in range(0, len(huge), 1 << 20):
            yield huge[start : start + (1 << 20)]

    for path in ("/v1/jobs", "/v1/reports"):
        for data in (io.BytesIO(huge), chunked()):
            headers = sign_request(peer.identity, "POST", path, huge, peer.clock(), audience(client)) | MSGPACK
            async with client.post(path, data=data, headers=headers) as resp:
                status, body = resp.status, decode(await resp.read())
            assert (status, body["error"]["code"]) == (413, "body_too_large")
    assert await get(client, "/v1/health") == (200, {"ok": True, "store": "ok", "public_key": audience(client)})


async def test_owner_endpoints_reject_wrong_shapes(client: TestClient) -> None:
    for obj in ({"workload": 1, "input": {}}, {"workload": "linkcheck"}, {"workload": "linkcheck", "input": []}, [1]):
        status, answer = await post(client, "/v1/jobs", obj)
        assert status == 400
        assert_error(status, answer)


async def test_a_signed_request_is_taken_once(client: TestClient, peer: Peer) -> None:
    # Captured on the way and sent again within the clock window: it used to be taken again.
    await submit(client, ["http://a.test/"])
    body = encode({"max_units": 1, "workloads": ["linkcheck"]})
    headers = sign_request(peer.identity, "POST", "/v1/leases", body, peer.clock(), audience(client)) | MSGPACK
    async with client.post("/v1/leases", data=body, headers=headers) as resp:
        assert resp.status == 200
    async with client.post("/v1/leases", data=body, headers=headers) as resp:
        status, answer = resp.status, decode(await resp.read())
    assert (status, answer["error"]["code"]) == (401, "replayed")
