"""Who may do what: the roles table, pure, then every owner route against every role over the
API on loopback (a property: whatever key asks for whatever job, the answer is the table's)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import roles
from coordinator.edge import STORE
from coordinator.owner_limits import Limits
from coordinator.roles import Action, Role
from overlay.identity import Identity
from overlay.wire import decode, encode
from tests.coordinator.conftest import OPERATOR_KEY, START, Peer, get, item, post, submit

KEYS = {
    "operator": OPERATOR_KEY,
    "alice": Identity.generate(),  # owner
    "bob": Identity.generate(),  # owner
    "vera": Identity.generate(),  # viewer
    "stranger": Identity.generate(),  # no role
}
ROLE_OF = {"operator": Role.OPERATOR, "alice": Role.OWNER, "bob": Role.OWNER, "vera": Role.VIEWER, "stranger": None}


def test_the_table() -> None:
    assert roles.refusal("k" * 64, Role.OWNER, Action.SUBMIT_JOB) is None
    assert roles.refusal("k" * 64, Role.OWNER, Action.READ_JOB, own=True) is None
    not_yours = roles.refusal("k" * 64, Role.OWNER, Action.READ_JOB, own=False)
    assert not_yours is not None and (not_yours.status, not_yours.code) == (403, "not_yours")
    viewer = roles.refusal("k" * 64, Role.VIEWER, Action.SUBMIT_JOB)
    assert viewer is not None and viewer.code == "role_needed" and "a viewer" in viewer.message
    assert roles.refusal("k" * 64, Role.VIEWER, Action.READ_JOB, own=False) is None
    stranger = roles.refusal("k" * 64, None, Action.READ_JOB)
    assert stranger is not None and stranger.code == "not_admitted" and "grant add" in stranger.message
    for action, role in itertools.product(Action, Role):
        if role is Role.OPERATOR:
            assert roles.refusal("k" * 64, role, action, own=False) is None  # an operator may do it all


@pytest.fixture
async def admitted(client: TestClient) -> TestClient:
    assert client.app is not None
    store = client.app[STORE]
    for name, key in KEYS.items():
        role = ROLE_OF[name]
        if role is not None and name != "operator":
            await store.grant(name, key.public_hex, role, "operator", START)
            # Every example of the property submits a job: limits are not what is tested here.
            await store.set_limits(key.public_hex, Limits(jobs_at_once=10_000), "operator", START)
    return client


def expected(asker: str, action: Action, owner: str) -> int:
    refusal = roles.refusal(KEYS[asker].public_hex, ROLE_OF[asker], action, own=asker == owner)
    return 200 if refusal is None else refusal.status


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    owner=st.sampled_from(["alice", "bob", "operator"]),
    asker=st.sampled_from(sorted(KEYS)),
    route=st.sampled_from(["status", "results", "list", "cancel"]),
)
async def test_every_owner_route_answers_as_the_table_says(
    admitted: TestClient, owner: str, asker: str, route: str
) -> None:
    job_id = await submit(admitted, ["http://a.test/"], key=KEYS[owner])
    if route == "status":
        status, body = await get(admitted, f"/v1/jobs/{job_id}", key=KEYS[asker])
        assert status == expected(asker, Action.READ_JOB, owner), body
    elif route == "results":
        status, body = await get(admitted, f"/v1/jobs/{job_id}/results", key=KEYS[asker])
        assert status == expected(asker, Action.READ_JOB, owner), body
    elif route == "list":
        status, body = await get(admitted, "/v1/jobs", key=KEYS[asker])
        assert status == expected(asker, Action.LIST_JOBS, asker), body
        if status == 200:
            listed = {job["job_id"] for job in body["jobs"]}
            everything = roles.sees_everything(ROLE_OF[asker])
            assert (job_id in listed) == (asker == owner or everything)
            assert everything or all(job["owner"] == KEYS[asker].public_hex for job in body["jobs"])
    else:
        status, body = await post(admitted, f"/v1/jobs/{job_id}/cancel", {}, key=KEYS[asker])
        assert status == expected(asker, Action.CANCEL_JOB, owner), body
        if status == 200:
            assert body["state"] == "cancelled"
    if status != 200:
        assert body["error"]["code"] in ("not_admitted", "role_needed", "not_yours")


async def test_submitting_needs_a_role_that_submits(admitted: TestClient) -> None:
    for asker in KEYS:
        status, body = await post(
            admitted, "/v1/jobs", {"workload": "linkcheck", "input": {"urls": ["http://a.test/"]}}, KEYS[asker]
        )
        assert status == expected(asker, Action.SUBMIT_JOB, asker), (asker, body)


async def test_every_job_route_needs_a_signature(admitted: TestClient) -> None:
    job_id = await submit(admitted, ["http://a.test/"])
    for path in ("/v1/jobs", f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/results"):
        status, body = await get(admitted, path, key=None)
        assert (status, body["error"]["code"]) == (401, "unsigned"), path


async def test_a_cancelled_job_stops_and_keeps_what_it_checked(admitted: TestClient, peer: Peer) -> None:
    job_id = await submit(admitted, ["http://a.test/", "http://b.test/"], key=KEYS["alice"])
    (held,) = await peer.lease()
    status, body = await post(admitted, f"/v1/jobs/{job_id}/cancel", {}, KEYS["alice"])
    assert (status, body["state"]) == (200, "cancelled")
    # The unit a peer held is dropped at its next renewal, release or report; nothing else is leased.
    # Each says why, so the peer's log does too.
    ref = {"unit_id": held["unit_id"], "token": held["token"]}
    why = f"unit {held['unit_id']}: its job {job_id} was cancelled"
    for path in ("/v1/leases/renew", "/v1/leases/release"):
        status, body = await peer.post(path, ref)
        assert (status, body["error"]["message"]) == (409, why)
    url = held["payload"]["items"][0]["url"]
    streamed = {**ref, "bundle_version": held["bundle"]["version"], "items": [item(url)]}
    status, body = await peer.post("/v1/reports/items", streamed)
    assert (status, body["error"]["message"]) == (409, why)
    found = {"items": [item(url, links=["http://a.test/new"])]}
    status, body = await peer.report(held, 0, found)
    assert (status, body["error"]["message"]) == (409, why)
    assert await peer.lease(max_units=4) == []
    status, body = await post(admitted, f"/v1/jobs/{job_id}/cancel", {}, KEYS["alice"])
    assert (status, body["error"]["code"]) == (409, "conflict")
    status, body = await get(admitted, f"/v1/jobs/{job_id}/results", KEYS["alice"])
    assert status == 200 and {item["url"] for item in body["items"]} == {"http://a.test/", "http://b.test/"}


# Every route of the API and who may call it; a route added without a line here fails the test.
ROUTES = {
    ("POST", "/v1/peers/register"): "signed",  # any key: anyone may volunteer
    ("POST", "/v1/leases"): "signed",
    ("POST", "/v1/leases/renew"): "signed",
    ("POST", "/v1/leases/release"): "signed",
    ("POST", "/v1/reports"): "signed",
    ("POST", "/v1/reports/batch"): "signed",
    ("POST", "/v1/reports/items"): "signed",
    ("POST", "/v1/jobs"): "role",
    ("GET", "/v1/jobs"): "role",
    ("GET", "/v1/jobs/{job_id}"): "role",
    ("GET", "/v1/jobs/{job_id}/results"): "role",
    ("GET", "/v1/jobs/{job_id}/logs"): "role",
    ("POST", "/v1/jobs/{job_id}/cancel"): "role",
    ("POST", "/v1/jobs/{job_id}/delete"): "role",
    ("GET", "/v1/health"): "open",  # up, and the key requests must name
    ("POST", "/v1/hello"): "open",  # proof of the coordinator's key, for peers that found it in the DHT
    ("POST", "/v1/bundles"): "role",
    ("GET", "/v1/bundles"): "open",  # bundles are public code: peers fetch them from anyone
    ("GET", "/v1/bundles/{name}"): "open",
    ("POST", "/v1/bundles/{name}/rollout"): "role",
    ("GET", "/v1/bundles/{name}/{version}"): "open",
}


async def test_every_route_is_open_signed_or_for_a_role_and_refuses_strangers(admitted: TestClient) -> None:
    assert admitted.app is not None
    found = {
        (route.method, route.resource.canonical.replace(":[0-9]{1,19}", ""))
        for route in admitted.app.router.routes()
        if route.method != "HEAD" and route.resource is not None and route.resource.canonical.startswith("/v1/")
    }
    assert found == set(ROUTES)
    job_id = await submit(admitted, ["http://a.test/"])
    for (method, template), needs in ROUTES.items():
        path = template.format(job_id=job_id, name="linkcheck", version="0")
        if needs == "open":
            continue
        unsigned = await (get(admitted, path, key=None) if method == "GET" else _post_unsigned(admitted, path))
        assert unsigned[0] == 401, (method, path)
        if needs == "role":
            stranger = await (
                get(admitted, path, key=KEYS["stranger"])
                if method == "GET"
                else post(admitted, path, {}, KEYS["stranger"])
            )
            assert (stranger[0], stranger[1]["error"]["code"]) == (403, "not_admitted"), (method, path)


async def _post_unsigned(client: TestClient, path: str) -> tuple[int, Any]:
    async with client.post(path, data=encode({}), headers={"Content-Type": "application/msgpack"}) as resp:
        return resp.status, decode(await resp.read())
