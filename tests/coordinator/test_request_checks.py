"""What every request must show before it is read: content type, origin, host. Pure rules,
then the holes they close, through the API on loopback."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from coordinator import request_checks
from overlay.wire import decode, encode
from tests.coordinator.conftest import MSGPACK, get, signed, submit

ALLOWED = frozenset({"coordinator.example"})


def check(
    host: str | None = "127.0.0.1:8700", origin: str | None = None, content_type: str = "application/msgpack"
) -> request_checks.Refusal | None:
    return request_checks.check("POST", host, origin, content_type, True, ALLOWED)


def test_programs_get_through() -> None:
    assert check() is None
    assert check("[::1]:8700") is None
    assert check("localhost:8700") is None
    assert check("coordinator.example") is None
    assert check("COORDINATOR.example:443") is None
    assert request_checks.check("GET", "127.0.0.1", None, "", False, ALLOWED) is None


def test_the_coordinators_own_page_gets_through() -> None:
    assert check("127.0.0.1:8700", origin="http://127.0.0.1:8700") is None
    assert check("coordinator.example", origin="https://coordinator.example") is None


def test_names_it_is_not_known_by_are_refused() -> None:
    for host in ("attacker.example", "attacker.example:8700", "", None, "coordinator.example.attacker.example"):
        refusal = check(host)
        assert refusal is not None and (refusal.status, refusal.code) == (421, "unknown_host"), host


def test_pages_of_other_origins_are_refused() -> None:
    for origin in ("http://attacker.example", "null", "http://127.0.0.1:9999", "http://localhost:8700"):
        refusal = check("127.0.0.1:8700", origin=origin)
        assert refusal is not None and (refusal.status, refusal.code) == (403, "foreign_origin"), origin


def test_bodies_that_are_not_msgpack_are_refused() -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""):
        refusal = check(content_type=content_type)
        assert refusal is not None and (refusal.status, refusal.code) == (415, "unsupported_media_type")


def test_host_name_reads_ports_and_brackets() -> None:
    assert request_checks.host_name("[::1]:80") == "::1"
    assert request_checks.host_name("::1") == "::1"
    assert request_checks.host_name("Example.COM:8080") == "example.com"


async def test_a_web_page_on_another_site_cannot_submit_a_job(client: TestClient) -> None:
    # A "simple" cross-site POST: text/plain with the page's Origin. It used to create a job.
    body = encode({"workload": "linkcheck", "input": {"urls": ["http://victim.example/"]}})
    async with client.post(
        "/v1/jobs", data=body, headers={"Content-Type": "text/plain", "Origin": "http://attacker.example"}
    ) as resp:
        assert resp.status in (403, 415)
        assert decode(await resp.read())["error"]["code"] in ("foreign_origin", "unsupported_media_type")
    async with client.post("/v1/jobs", data=body, headers=MSGPACK | {"Origin": "http://attacker.example"}) as resp:
        assert (resp.status, decode(await resp.read())["error"]["code"]) == (403, "foreign_origin")
    assert await get(client, "/v1/jobs") == (200, {"jobs": []})


async def test_a_rebound_name_cannot_read_the_coordinator(client: TestClient) -> None:
    job_id = await submit(client, ["http://a.test/"])
    path = f"/v1/jobs/{job_id}/results"
    async with client.get(path, headers=signed(client, "GET", path) | {"Host": "attacker.example"}) as resp:
        assert (resp.status, decode(await resp.read())["error"]["code"]) == (421, "unknown_host")
    assert (await get(client, path))[0] == 200
