"""The egress against real aiohttp servers on 127.0.0.1 and 127.0.0.2."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from peer.egress import Egress, EgressConfig
from peer.politeness import Origin, Politeness, is_idle, next_start
from workloads.process_api import FetchError, FetchRequest, FetchResult

LOCAL = EgressConfig(allow_private=True)


@dataclass
class Site:
    """A test web server that logs every request it receives."""

    host: str
    robots: str | None = None  # None: /robots.txt is 404
    robots_status: int = 200
    robots_moved: bool = False  # /robots.txt redirects to /moved-robots.txt
    log: list[tuple[str, float, float]] = field(default_factory=list)  # (path, start, end)
    peers: set[tuple[str, int]] = field(default_factory=set)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _, _ in self.log]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.peers.add(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._respond(request)
        finally:
            self.in_flight -= 1
            self.log.append((request.path_qs, start, loop.time()))

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/robots.txt" and self.robots_moved:
            return web.Response(status=301, headers={"Location": "/moved-robots.txt"})
        if path in ("/robots.txt", "/moved-robots.txt"):
            if self.robots is None:
                return web.Response(status=404)
            return web.Response(text=self.robots, status=self.robots_status)
        if path == "/ok":
            headers = {"Retry-After": "5", "X-Secret": "not for workloads", "Set-Cookie": "a=b"}
            return web.Response(text="hello", content_type="text/html", headers=headers)
        if path == "/redirect":
            return web.Response(status=302, headers={"Location": "/ok"})
        if path == "/big":
            return web.Response(body=b"x" * int(request.query["size"]))
        if path == "/slow":
            await asyncio.sleep(5)
            return web.Response(text="late")
        if path == "/busy":
            # Held until a second request is in flight (or long enough to tell there is none)
            # so that the peak concurrency does not depend on how fast this machine is.
            for _ in range(200):
                if self.in_flight >= 2:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.02)
            return web.Response(text="done")
        if path == "/ua":
            return web.Response(text=request.headers["User-Agent"])
        return web.Response(status=404)


@pytest.fixture
async def sites() -> AsyncIterator[tuple[Site, Site]]:
    pair = (Site("127.0.0.1"), Site("127.0.0.2"))
    runners = []
    for site in pair:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", site.handle)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, site.host, 0).start()
        site.port = runner.addresses[0][1]
        runners.append(runner)
    yield pair
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def site(sites: tuple[Site, Site]) -> Site:
    return sites[0]


async def fetch(config: EgressConfig, url: str, method: str = "GET", want_body: bool = False) -> FetchResult:
    async with Egress(config) as egress:
        return await egress.fetch(FetchRequest(id=5, method=method, url=url, want_body=want_body))


async def test_status_headers_and_body(site: Site) -> None:
    result = await fetch(LOCAL, site.url("/ok"), want_body=True)
    assert result == FetchResult(
        id=5,
        url=site.url("/ok"),
        status=200,
        headers={"content-type": "text/html; charset=utf-8", "retry-after": "5", "content-length": "5"},
        body=b"hello",
    )
    assert site.paths == ["/robots.txt", "/ok"]


async def test_body_only_when_wanted_and_never_for_head(site: Site) -> None:
    assert (await fetch(LOCAL, site.url("/ok"))).body == b""
    head = await fetch(LOCAL, site.url("/ok"), method="HEAD", want_body=True)
    assert (head.status, head.body) == (200, b"")


async def test_user_agent_is_sent(site: Site) -> None:
    result = await fetch(EgressConfig(allow_private=True, user_agent="osaas-test/9"), site.url("/ua"), want_body=True)
    assert result.body == b"osaas-test/9"


async def test_redirect_is_returned_not_followed(site: Site) -> None:
    result = await fetch(LOCAL, site.url("/redirect"), want_body=True)
    assert (result.status, result.headers["location"], result.body) == (302, "/ok", b"")
    assert site.paths == ["/robots.txt", "/redirect"]


@pytest.mark.parametrize(
    ("size", "body_length", "truncated"), [(999, 999, False), (1000, 1000, False), (100_000, 1000, True)]
)
async def test_body_is_capped(site: Site, size: int, body_length: int, truncated: bool) -> None:
    config = EgressConfig(allow_private=True, max_body=1000)
    result = await fetch(config, site.url(f"/big?size={size}"), want_body=True)
    assert (result.status, len(result.body), result.truncated) == (200, body_length, truncated)


async def test_timeout(site: Site) -> None:
    result = await fetch(EgressConfig(allow_private=True, request_timeout=0.3), site.url("/slow"))
    assert (result.status, result.error) == (None, FetchError.TIMEOUT.value)
    assert result.message == f"no complete response from 127.0.0.1:{site.port} within 0.3 s"


async def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await fetch(LOCAL, f"http://127.0.0.1:{port}/")
    assert (result.status, result.error) == (None, FetchError.CONNECTION.value)
    assert result.message == f"could not connect to 127.0.0.1:{port}: Connection refused"


async def test_invalid_names_fail_as_dns_without_lookup() -> None:
    result = await fetch(LOCAL, "http://no-such-site.invalid/page")
    assert (result.error, result.message) == ("dns", "no-such-site.invalid is under .invalid and never resolves")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "only http and https URLs can be fetched, not 'ftp://example.com/'"),
        ("/relative/path", "only http and https URLs can be fetched, not '/relative/path'"),
        ("http:///nohost", "URL has no host: 'http:///nohost'"),
        ("http://example.com:99999/", "not a valid URL: Port out of range 0-65535"),
        ("http://example.com/" + "a" * 9000, "URL is longer than 8192 characters"),
    ],
)
async def test_invalid_urls(url: str, message: str) -> None:
    result = await fetch(LOCAL, url)
    assert (result.error, result.message) == (FetchError.INVALID_URL.value, message)


async def test_loopback_literal_is_refused_by_default(site: Site) -> None:
    result = await fetch(EgressConfig(), site.url("/ok"))
    refusal = "127.0.0.1 is a loopback address; pass --allow-private to check it"
    assert (result.error, result.message) == ("policy", refusal)
    assert site.log == []


async def test_mapped_loopback_literal_is_refused(site: Site) -> None:
    result = await fetch(EgressConfig(), f"http://[::ffff:127.0.0.1]:{site.port}/ok")
    assert result.error == "policy"
    assert site.log == []


async def test_name_resolving_to_loopback_is_refused(site: Site) -> None:
    result = await fetch(EgressConfig(), f"http://localhost:{site.port}/ok")
    assert result.error == "policy"
    assert result.message is not None
    assert result.message.startswith("localhost resolves only to refused addresses: ")
    assert result.message.endswith("is a loopback address; pass --allow-private to check it")
    assert site.log == []


async def test_name_resolving_to_loopback_is_allowed_when_private_is(site: Site) -> None:
    result = await fetch(LOCAL, f"http://localhost:{site.port}/ok")
    assert result.status == 200


async def test_robots_disallow_never_reaches_the_server(site: Site) -> None:
    site.robots = "User-agent: *\nDisallow: /private\n"
    async with Egress(LOCAL) as egress:
        denied = await egress.fetch(FetchRequest(id=1, method="GET", url=site.url("/private/x")))
        allowed = await egress.fetch(FetchRequest(id=2, method="GET", url=site.url("/ok")))
    assert (denied.status, denied.error, denied.message) == (None, "robots", "disallowed by robots.txt")
    assert allowed.status == 200
    assert site.paths == ["/robots.txt", "/ok"]


async def test_robots_for_our_agent_only(site: Site) -> None:
    site.robots = "User-agent: osaas-linkcheck\nDisallow: /\n\nUser-agent: *\nAllow: /\n"
    result = await fetch(LOCAL, site.url("/ok"))
    assert result.error == "robots"


async def test_robots_ignored_when_not_respected(site: Site) -> None:
    site.robots = "User-agent: *\nDisallow: /\n"
    result = await fetch(EgressConfig(allow_private=True, respect_robots=False), site.url("/ok"))
    assert result.status == 200
    assert site.paths == ["/ok"]


async def test_concurrent_first_requests_share_one_robots_fetch(site: Site) -> None:
    async with Egress(LOCAL) as egress:
        results = await asyncio.gather(
            *(egress.fetch(FetchRequest(id=i, method="GET", url=site.url("/ok"))) for i in range(6))
        )
    assert [r.status for r in results] == [200] * 6
    assert site.paths.count("/robots.txt") == 1
    assert site.paths[0] == "/robots.txt"


async def test_crawl_delay_spaces_requests_in_order(sites: tuple[Site, Site]) -> None:
    fast, slow = sites
    slow.robots = "User-agent: *\nCrawl-delay: 0.2\n"
    async with Egress(LOCAL) as egress:
        results = await asyncio.gather(
            *(egress.fetch(FetchRequest(id=i, method="GET", url=slow.url(f"/ok?n={i}"))) for i in range(4)),
            *(egress.fetch(FetchRequest(id=10 + i, method="GET", url=fast.url(f"/ok?n={i}"))) for i in range(4)),
        )
    assert [r.status for r in results] == [200] * 8
    assert slow.paths == ["/robots.txt", "/ok?n=0", "/ok?n=1", "/ok?n=2", "/ok?n=3"]
    for (_, _, previous_end), (_, start, _) in itertools.pairwise(slow.log):
        assert start >= previous_end  # one at a time
        assert start - previous_end >= 0.2  # the delay counts from the previous one's end
    # The other host has no delay and is not held up by this one.
    assert sorted(fast.paths) == ["/ok?n=0", "/ok?n=1", "/ok?n=2", "/ok?n=3", "/robots.txt"]


async def test_the_crawl_delay_kept_for_a_host_is_known_once_its_robots_txt_was_read(site: Site) -> None:
    site.robots = "User-agent: *\nCrawl-delay: 0.3\n"
    origin = site.url("/").rstrip("/")
    async with Egress(LOCAL) as egress:
        assert egress.crawl_delay(origin) is None  # not read yet
        assert (await egress.fetch(FetchRequest(id=1, method="GET", url=site.url("/ok")))).status == 200
        assert egress.crawl_delay(origin) == 0.3
        for garbage in ("", "not a url", "ftp://x/", "http://", "http://[::1"):
            assert egress.crawl_delay(garbage) is None
    async with Egress(EgressConfig(allow_private=True, respect_robots=False)) as egress:
        assert (await egress.fetch(FetchRequest(id=1, method="GET", url=site.url("/ok")))).status == 200
        assert egress.crawl_delay(origin) is None


async def test_crawl_delay_is_capped(site: Site) -> None:
    site.robots = "User-agent: *\nCrawl-delay: 3600\n"
    config = EgressConfig(allow_private=True, max_crawl_delay=0.1)
    async with Egress(config) as egress:
        for i in range(3):
            assert (await egress.fetch(FetchRequest(id=i, method="GET", url=site.url("/ok")))).status == 200
    assert site.paths == ["/robots.txt", "/ok", "/ok", "/ok"]


async def test_per_host_concurrency_is_never_exceeded(site: Site) -> None:
    async with Egress(EgressConfig(allow_private=True, per_host_concurrency=2)) as egress:
        results = await asyncio.gather(
            *(egress.fetch(FetchRequest(id=i, method="GET", url=site.url("/busy"))) for i in range(10))
        )
    assert [r.status for r in results] == [200] * 10
    assert site.max_in_flight == 2


async def test_keep_alive_reuses_one_connection(site: Site) -> None:
    async with Egress(LOCAL) as egress:
        for i in range(5):
            result = await egress.fetch(FetchRequest(id=i, method="GET", url=site.url("/ok"), want_body=i % 2 == 0))
            assert result.status == 200
    assert len(site.log) == 6
    assert len(site.peers) == 1


@pytest.mark.parametrize("status", [404, 500, 503])
async def test_unavailable_robots_allows_all(site: Site, status: int) -> None:
    site.robots, site.robots_status = "User-agent: *\nDisallow: /\n", status
    assert (await fetch(LOCAL, site.url("/ok"))).status == 200
    assert site.paths == ["/robots.txt", "/ok"]


async def test_robots_redirect_is_followed(site: Site) -> None:
    site.robots, site.robots_moved = "User-agent: *\nDisallow: /ok\n", True
    assert (await fetch(LOCAL, site.url("/ok"))).error == "robots"
    assert site.paths == ["/robots.txt", "/moved-robots.txt"]


async def test_closed_means_closed() -> None:
    egress = Egress(LOCAL)
    with pytest.raises(RuntimeError, match="is new"):
        await egress.fetch(FetchRequest(id=1, method="GET", url="http://example.invalid/"))
    async with egress:
        pass
    with pytest.raises(RuntimeError, match="is closed"):
        await egress.fetch(FetchRequest(id=1, method="GET", url="http://example.invalid/"))
    with pytest.raises(RuntimeError, match="entered once"):
        async with egress:
            pass


async def test_politeness_forgets_idle_hosts_beyond_its_limit() -> None:
    robots_fetches: list[str] = []

    async def serve_robots(request: FetchRequest) -> FetchResult:
        robots_fetches.append(request.url)
        return FetchResult(id=request.id, url=request.url, status=200, body=b"User-agent: *\nDisallow: /no\n")

    politeness = Politeness(
        serve_robots, user_agent="t", per_host_concurrency=1, max_crawl_delay=1.0, respect_robots=True, max_hosts=2
    )
    a, b, c = (Origin("http", f"{name}.example", 80) for name in "abc")
    for origin in (a, b, a, c, a, b):
        rules = await politeness.rules(origin)
        assert not rules.can_fetch(f"http://{origin.host}/no", "t")
    # a stays (recently used); b is forgotten for c, then c is forgotten for b.
    assert robots_fetches == [f"http://{name}.example/robots.txt" for name in "abcb"]


@pytest.mark.parametrize(
    ("active", "robots_pending", "last_end", "delay", "now", "idle"),
    [
        (0, False, None, 0.0, 5.0, True),
        (1, False, None, 0.0, 5.0, False),
        (0, True, None, 0.0, 5.0, False),
        (0, False, 4.0, 2.0, 5.0, False),
        (0, False, 3.0, 2.0, 5.0, True),
    ],
)
def test_is_idle(
    active: int, robots_pending: bool, last_end: float | None, delay: float, now: float, idle: bool
) -> None:
    assert is_idle(active, robots_pending, last_end, delay, now) is idle


@pytest.mark.parametrize(
    ("last_end", "delay", "now", "start"), [(None, 2.0, 7.0, 7.0), (6.0, 2.0, 7.0, 8.0), (1.0, 2.0, 7.0, 7.0)]
)
def test_next_start(last_end: float | None, delay: float, now: float, start: float) -> None:
    assert next_start(last_end, delay, now) == start


async def test_ipv6_literal_host() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = await fetch(EgressConfig(), f"http://[::1]:{port}/")
    assert (refused.error, refused.message) == ("policy", "::1 is a loopback address; pass --allow-private to check it")
    # Allowed, it reaches the connection stage (nothing listens there, if IPv6 exists at all).
    assert (await fetch(LOCAL, f"http://[::1]:{port}/")).error == "connection"
