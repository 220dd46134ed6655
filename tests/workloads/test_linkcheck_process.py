"""The real link-check workload subprocess, with the test playing the peer.

The peer's network is a dict of canned answers keyed by (method, url): a double for the
web, not for any of our components.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from peer.platform import ResourceLimits, limits_preexec
from peer.sandbox import BUNDLE_DIR, STARTED_MARK, Confinement, SandboxError, detect, python_runtime
from workloads.builtin import stage_linkcheck
from workloads.process_api import FetchRequest, FetchResult, Item, Result, Unit, encode_frame, read_frame

pytestmark = pytest.mark.timeout(30)

HTML = {"content-type": "text/html"}
Answer = FetchResult | list[FetchResult]  # a list is answered in turn, one per fetch


@dataclass
class Run:
    result: Result | None
    exit_code: int
    stderr: str
    fetches: list[FetchRequest] = field(default_factory=list)
    most_outstanding: int = 0
    streamed: list[dict[str, Any]] = field(default_factory=list)  # version 2: item frames' records


def ok(status: int = 200, headers: dict[str, str] | None = None, body: bytes = b"") -> FetchResult:
    return FetchResult(id=0, url="", status=status, headers=headers or {}, body=body)


def fails(kind: str, message: str | None = None) -> FetchResult:
    return FetchResult(id=0, url="", error=kind, message=message)


ENTRY = [sys.executable, "-m", "workloads.linkcheck"]
_launch: tuple[list[str], dict[str, str] | None] = (ENTRY, None)


@pytest.fixture(scope="module")
def staged_linkcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_linkcheck(tmp_path_factory.mktemp("linkcheck") / "bundle")


@pytest.fixture(autouse=True, params=["unconfined", "sandboxed"])
def where(request: pytest.FixtureRequest, staged_linkcheck: Path) -> Iterator[str]:
    """Every test runs the workload as it is, and as the peer runs the signed bundle: confined
    in the sandbox, from the staged bundle alone."""
    global _launch
    if request.param == "sandboxed":
        try:
            sandbox = detect()
        except SandboxError as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(str(exc))
        command = sandbox.command(ENTRY, Confinement(staged_linkcheck, python_runtime()), ResourceLimits())
        _launch = (command, {"PYTHONPATH": BUNDLE_DIR, "PATH": "/usr/bin:/bin"})
    yield request.param
    _launch = (ENTRY, None)


async def start() -> asyncio.subprocess.Process:
    """The workload's process; a sandboxed one once its sandbox said it was built (the
    STARTED_MARK the peer's runner reads before the workload's first frame)."""
    argv, env = _launch
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        preexec_fn=limits_preexec(ResourceLimits()) if env is not None else None,
    )
    if env is not None:
        assert process.stdout is not None
        assert await process.stdout.readexactly(len(STARTED_MARK)) == STARTED_MARK
    return process


async def finish(process: asyncio.subprocess.Process, run_result: Result | None, **extra: Any) -> Run:
    assert process.stderr is not None
    stderr = (await process.stderr.read()).decode()
    return Run(run_result, await process.wait(), stderr, **extra)


async def play_peer(
    payload: Any,
    web: dict[tuple[str, str], Answer],
    batch: Callable[[int], int] = lambda remaining: 1,
    version: int = 1,
) -> Run:
    """Send one unit and answer its fetches from `web` until the result frame.

    Answers are held back until `batch(items not yet answered)` fetches are outstanding,
    so a test can see how many the workload keeps in flight.
    """
    process = await start()
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(encode_frame(Unit(11, payload, version).to_frame()))
    fetches: list[FetchRequest] = []
    streamed: list[dict[str, Any]] = []
    held: list[FetchRequest] = []
    most = 0
    while True:
        frame = await read_frame(process.stdout)
        assert frame is not None, "the workload ended without a result frame"
        if frame["type"] == "result":
            break
        if frame["type"] == "item":
            streamed.append(Item.from_frame(frame).record)
            continue
        request = FetchRequest.from_frame(frame)
        fetches.append(request)
        held.append(request)
        most = max(most, len(held))
        if len(held) >= batch(len(payload["items"]) - len(fetches) + len(held)):
            for waiting in held:
                process.stdin.write(encode_frame(_answer(web, waiting).to_frame()))
            held.clear()
            await process.stdin.drain()
    process.stdin.close()
    return await finish(process, Result.from_frame(frame), fetches=fetches, most_outstanding=most, streamed=streamed)


def _answer(web: dict[tuple[str, str], Answer], request: FetchRequest) -> FetchResult:
    canned = web[(request.method, request.url)]
    if isinstance(canned, list):
        canned = canned.pop(0)
    return FetchResult(
        request.id,
        request.url,
        canned.status,
        canned.headers,
        canned.body,
        canned.truncated,
        canned.error,
        canned.message,
    )


async def send_raw(data: bytes) -> Run:
    process = await start()
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(data)
    process.stdin.close()
    frame = await read_frame(process.stdout)
    return await finish(process, Result.from_frame(frame) if frame else None)


def item(url: str, result: str, status: int | None, **fields: Any) -> dict[str, Any]:
    return {
        "url": url,
        "result": result,
        "status": status,
        "final_url": fields.get("final_url", url),
        "redirects": fields.get("redirects", []),
        "error": fields.get("error"),
        "links": fields.get("links", []),
        "crawled": fields.get("crawled", False),
    }


async def test_a_unit_of_every_kind_of_link() -> None:
    web: dict[tuple[str, str], Answer] = {
        ("GET", "http://site.test/"): ok(
            200,
            HTML,
            b'<a href="/moved">m</a><img srcset="/i.png 2x"><a href="mailto:x@site.test"><a href="ftp://f.test/a">',
        ),
        ("HEAD", "http://site.test/moved"): ok(301, {"location": "/new"}),
        ("HEAD", "http://site.test/new"): ok(200),
        ("HEAD", "http://site.test/gone"): ok(404),
        ("HEAD", "http://site.test/no-head"): ok(405),
        ("GET", "http://site.test/no-head"): ok(200),
        ("HEAD", "http://site.test/busy"): [ok(429, {"retry-after": "0"}), ok(200)],
        ("HEAD", "http://flaky.test/"): [fails("connection", "connection reset"), ok(204)],
        ("HEAD", "http://nowhere.test/"): fails("dns", "Name or service not known"),
        ("HEAD", "http://site.test/private"): fails("robots", "disallowed by robots.txt"),
        ("HEAD", "http://10.0.0.1/"): fails("policy", "10.0.0.1 is a private address"),
        ("HEAD", "ftp://f.test/a"): fails("invalid_url", "scheme ftp is not fetched"),
        ("HEAD", "http://site.test/loop"): ok(302, {"location": "/loop"}),
    }
    urls = [
        ("http://site.test/", True),
        ("http://site.test/moved", False),
        ("http://site.test/gone", False),
        ("http://site.test/no-head", False),
        ("http://site.test/busy", False),
        ("http://flaky.test/", False),
        ("http://nowhere.test/", False),
        ("http://site.test/private", False),
        ("http://10.0.0.1/", False),
        ("ftp://f.test/a", False),
        ("http://site.test/loop", False),
    ]
    run = await play_peer({"job_id": 5, "items": [{"url": u, "crawl": c} for u, c in urls]}, web)
    assert run.exit_code == 0, run.stderr
    assert run.result == Result(
        0,
        {
            "items": [
                item(
                    "http://site.test/",
                    "ok",
                    200,
                    links=["http://site.test/moved", "http://site.test/i.png", "ftp://f.test/a"],
                    crawled=True,
                ),
                item(
                    "http://site.test/moved",
                    "ok",
                    200,
                    final_url="http://site.test/new",
                    redirects=["http://site.test/new"],
                ),
                item("http://site.test/gone", "broken", 404, error="HTTP 404"),
                item("http://site.test/no-head", "ok", 200),
                item("http://site.test/busy", "ok", 200),
                item("http://flaky.test/", "ok", 204),
                item("http://nowhere.test/", "error", None, error="name does not resolve"),
                item("http://site.test/private", "excluded", None, error="disallowed by robots.txt"),
                item("http://10.0.0.1/", "excluded", None, error="10.0.0.1 is a private address"),
                item("ftp://f.test/a", "excluded", None, error="scheme ftp is not fetched"),
                item("http://site.test/loop", "error", 302, error="redirect loop"),
            ]
        },
    )
    assert len(run.fetches) == 15
    assert len({f.id for f in run.fetches}) == 15  # ids are unique within the unit


async def test_version_2_streams_each_item_as_its_check_ends() -> None:
    web: dict[tuple[str, str], Answer] = {
        ("GET", "http://site.test/"): ok(200, HTML, b'<a href="/a">a</a>'),
        ("HEAD", "http://site.test/a"): ok(301, {"location": "/b"}),
        ("HEAD", "http://site.test/b"): ok(404),
        ("HEAD", "http://site.test/gone"): ok(410),
    }
    items = [("http://site.test/", True), ("http://site.test/a", False), ("http://site.test/gone", False)]
    payload = {"job_id": 5, "items": [{"url": u, "crawl": c} for u, c in items]}
    v1 = await play_peer(payload, web)
    v2 = await play_peer(payload, web, version=2)
    assert v2.exit_code == 0, v2.stderr
    assert v2.result == Result(0, {"items": []})
    assert v1.result is not None and v1.streamed == []
    assert sorted(v2.streamed, key=lambda r: r["url"]) == v1.result.payload["items"]
    # It wants no timings: its fetches go over the peer's shared connections.
    assert [f.measure for f in v2.fetches] == [False] * 4
    assert [f.measure for f in v1.fetches] == [True] * 4


async def test_fetches_in_flight_are_capped_at_16() -> None:
    urls = [f"http://site.test/{n}" for n in range(40)]
    web: dict[tuple[str, str], Answer] = {("HEAD", u): ok(200) for u in urls}
    run = await play_peer(
        {"job_id": 1, "items": [{"url": u, "crawl": False} for u in urls]},
        web,
        batch=lambda remaining: min(16, remaining),
    )
    assert run.exit_code == 0, run.stderr
    assert run.most_outstanding == 16
    assert run.result is not None
    assert [i["url"] for i in run.result.payload["items"]] == urls
    assert {i["result"] for i in run.result.payload["items"]} == {"ok"}


async def test_fetch_allowance_used_up_gives_a_partial_result() -> None:
    web: dict[tuple[str, str], Answer] = {
        ("HEAD", "http://site.test/a"): ok(200),
        ("HEAD", "http://site.test/b"): fails("limit", "unit fetch allowance of 1 used up"),
    }
    payload = {
        "job_id": 2,
        "items": [{"url": "http://site.test/a", "crawl": False}, {"url": "http://site.test/b", "crawl": False}],
    }
    run = await play_peer(payload, web)
    assert run.exit_code == 1, run.stderr
    assert run.result == Result(
        1, {"items": [item("http://site.test/a", "ok", 200)]}, "1 items left unchecked: fetch allowance used up"
    )


async def test_no_fetches_after_the_peer_says_limit() -> None:
    """The peer kills a workload that keeps fetching past its allowance, so after the first
    `limit` only the fetches already in flight are answered; the other items are left out."""
    urls = [f"http://site.test/{n}" for n in range(40)]
    web: dict[tuple[str, str], Answer] = {("HEAD", u): ok(200) for u in urls[:16]}
    web.update({("HEAD", u): fails("limit", "allowance used up") for u in urls[16:]})
    run = await play_peer(
        {"job_id": 1, "items": [{"url": u, "crawl": False} for u in urls]},
        web,
        batch=lambda remaining: min(16, remaining),
    )
    assert run.exit_code == 1, run.stderr
    assert [f.url for f in run.fetches] == urls[:32]
    assert run.result == Result(
        1, {"items": [item(u, "ok", 200) for u in urls[:16]]}, "24 items left unchecked: fetch allowance used up"
    )


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"job_id": 1, "items": []}, "bad input: payload: 'items' must be a list of 1 to 1000 items"),
        (
            {"job_id": "1", "items": [{"url": "http://a.test/", "crawl": False}]},
            "bad input: payload: 'job_id' must be an integer",
        ),
        (
            {"job_id": 1, "items": [{"url": "http://a.test/", "crawl": "yes"}]},
            "bad input: items[0]: 'crawl' must be true or false",
        ),
        ({"job_id": 1, "items": [{"url": "http://a.test/"}]}, "bad input: items[0]: missing crawl"),
        (
            {"job_id": 1, "items": [{"url": 5, "crawl": True}]},
            "bad input: items[0]: 'url' must be a non-empty string of at most 8192 characters",
        ),
        ({"job_id": 1, "items": ["http://a.test/"]}, "bad input: items[0] must be a map with 'url' and 'crawl'"),
        (
            {"items": [{"url": "http://a.test/", "crawl": True}], "job_id": 1, "extra": 1},
            "bad input: payload: unknown 'extra'",
        ),
        (
            {"job_id": 1, "items": [{"url": "http://a.test/", "crawl": False}] * 1001},
            "bad input: payload: 'items' must be a list of 1 to 1000 items",
        ),
    ],
)
async def test_bad_payload_exits_3(payload: dict[str, Any], error: str) -> None:
    run = await send_raw(encode_frame(Unit(3, payload).to_frame()))
    assert (run.exit_code, run.result) == (3, Result(3, {"items": []}, error))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xde\xad\xbe\xef garbage", "protocol error: frame of 3735928559 bytes exceeds the 16777216-byte limit"),
        (b"\x00\x00\x00\x02\xc1\xc1", "protocol error: frame is not valid msgpack (FormatError)"),
        (b"", "protocol error: stdin closed before the unit frame"),
        (encode_frame({"type": "fetch_result"}), "protocol error: expected a unit frame, got 'fetch_result'"),
        (
            encode_frame({"type": "unit", "version": 9, "unit_id": 1, "payload": {}}),
            "protocol error: process API version 9 is not supported (want 1 or 2)",
        ),
    ],
)
async def test_garbage_on_stdin_exits_2_with_one_log_line(data: bytes, error: str) -> None:
    run = await send_raw(data)
    assert (run.exit_code, run.result) == (2, Result(2, {"items": []}, error))
    assert run.stderr.splitlines() == [f"ERROR workloads.linkcheck: {error}"]


@pytest.mark.parametrize(
    ("bad_answer", "error"),
    [
        (lambda r: FetchResult(99, r.url, 200), "fetch_result for id 99, which is not outstanding"),
        (lambda r: FetchResult(r.id, r.url), "fetch_result 1 has neither a status nor an error"),
        (lambda r: FetchResult(r.id, r.url, error="gremlins"), "fetch_result 1 has an unknown error kind 'gremlins'"),
        (lambda r: Result(0, {}), "expected a fetch_result frame, got 'result'"),
    ],
)
async def test_peer_breaking_the_protocol_exits_2(bad_answer: Callable[[FetchRequest], Any], error: str) -> None:
    process = await start()
    assert process.stdin is not None and process.stdout is not None
    items = [{"url": "http://a.test/", "crawl": False}, {"url": "http://b.test/", "crawl": False}]
    process.stdin.write(encode_frame(Unit(1, {"job_id": 1, "items": items}).to_frame()))
    first = FetchRequest.from_frame(await read_frame(process.stdout))  # type: ignore[arg-type]
    second = FetchRequest.from_frame(await read_frame(process.stdout))  # type: ignore[arg-type]
    assert (first, second) == (FetchRequest(1, "HEAD", "http://a.test/"), FetchRequest(2, "HEAD", "http://b.test/"))
    process.stdin.write(encode_frame(bad_answer(first).to_frame()))
    frame = await read_frame(process.stdout)
    assert await process.stdout.read() == b""  # nothing after the result, though b.test was outstanding
    run = await finish(process, Result.from_frame(frame) if frame else None)
    assert (run.exit_code, run.result) == (2, Result(2, {"items": []}, f"protocol error: {error}"))


async def test_peer_closing_stdin_mid_unit_exits_2() -> None:
    process = await start()
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(
        encode_frame(Unit(1, {"job_id": 1, "items": [{"url": "http://a.test/", "crawl": False}]}).to_frame())
    )
    assert (await read_frame(process.stdout))["type"] == "fetch"  # type: ignore[index]
    process.stdin.close()
    frame = await read_frame(process.stdout)
    run = await finish(process, Result.from_frame(frame) if frame else None)
    error = "protocol error: the peer closed stdin before the unit was done"
    assert (run.exit_code, run.result) == (2, Result(2, {"items": []}, error))
