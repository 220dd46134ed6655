"""Per-host politeness for the egress: robots.txt, crawl delay and per-host concurrency.

A host is an origin (scheme, host, port). Its robots.txt is fetched once, through the egress
itself so the address policy applies to it too, and shared by every request to that host:
concurrent first requests wait for the same fetch. The rules that need no I/O are plain
functions (`rules_from_response`, `next_start`); `Politeness` is the small stateful shell
that keeps one entry per host and does the waiting.

Robots answers, after RFC 9309 where the brief allows: 2xx is parsed; 3xx is followed up to
five hops; 4xx means no rules; 5xx and network errors also mean no rules (logged once per
host) so that a broken robots.txt does not stop a link check.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from protego import Protego
from yarl import URL

from workloads.process_api import FetchRequest, FetchResult

log = logging.getLogger(__name__)

MAX_ROBOTS_REDIRECTS = 5
MAX_ROBOTS_BYTES = 512 * 1024  # like Google: rules past this point are ignored
MAX_HOSTS = 4096  # hosts remembered; the least recently used idle ones are forgotten


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: URL) -> Origin:
        """The origin of an absolute http(s) URL."""
        assert url.raw_host is not None and url.port is not None, "caller passes absolute URLs"
        return cls(url.scheme, url.raw_host.lower(), url.port)

    @property
    def robots_url(self) -> str:
        return str(URL.build(scheme=self.scheme, host=self.host, port=self.port, path="/robots.txt"))


@dataclass(frozen=True, slots=True)
class RobotsRules:
    """What one host's robots.txt says; no parser means every URL is allowed."""

    parser: Protego | None = None

    def can_fetch(self, url: str, user_agent: str) -> bool:
        return self.parser is None or self.parser.can_fetch(url, user_agent)

    def crawl_delay(self, user_agent: str, cap: float) -> float:
        """Seconds between requests this host asks for, at most `cap`."""
        delay = self.parser.crawl_delay(user_agent) if self.parser is not None else None
        return min(delay, cap) if delay else 0.0


ALLOW_ALL = RobotsRules()


def rules_from_response(result: FetchResult) -> tuple[RobotsRules, str | None]:
    """The rules a robots.txt fetch result gives, and a one-line note when the file could not
    be read (5xx or a network error) and everything is allowed for that reason."""
    if result.error is not None:
        return ALLOW_ALL, f"{result.error}: {result.message}"
    assert result.status is not None, "a result without an error has a status"
    if 200 <= result.status < 300:
        text = result.body[:MAX_ROBOTS_BYTES].decode("utf-8-sig", errors="replace")
        return RobotsRules(Protego.parse(text)), None
    if 400 <= result.status < 500:
        return ALLOW_ALL, None
    return ALLOW_ALL, f"HTTP status {result.status}"


def next_start(last_end: float | None, delay: float, now: float) -> float:
    """When the next request to a host may start, given when the previous one ended.

    Counting the delay from the end, not the start, is what makes it hold at the website: the
    previous request ended here only after the website had it, so the next one reaches it at
    least `delay` later, however late the previous one got there (connection set-up, a busy
    event loop). Counted from starts, the website saw requests up to 53 ms closer than 0.2 s."""
    if last_end is None:
        return now
    return max(now, last_end + delay)


def is_idle(active: int, robots_pending: bool, last_end: float | None, delay: float, now: float) -> bool:
    """Whether a host's entry can be forgotten without breaking a rule: no request holds or
    waits for a slot, its robots.txt is not being fetched, and its crawl delay has passed."""
    return active == 0 and not robots_pending and (last_end is None or now >= last_end + delay)


def redirect_target(result: FetchResult) -> str | None:
    """The absolute URL a 3xx result points to, or None if it is not a usable redirect."""
    location = result.headers.get("location")
    if result.status is None or not 300 <= result.status < 400 or not location:
        return None
    try:
        return str(URL(result.url).join(URL(location)))
    except ValueError:
        return None


@dataclass(slots=True)
class _Host:
    semaphore: asyncio.Semaphore
    serial: asyncio.Lock = field(default_factory=asyncio.Lock)
    robots: asyncio.Task[RobotsRules] | None = None
    delay: float = 0.0
    last_end: float | None = None  # when the last request to the host ended
    active: int = 0  # requests holding or waiting for a slot


class Politeness:
    """Robots rules and request slots per host. `fetch` must reach the network through the
    same path as the requests being scheduled, without coming back through this object."""

    def __init__(
        self,
        fetch: Callable[[FetchRequest], Awaitable[FetchResult]],
        *,
        user_agent: str,
        per_host_concurrency: int,
        max_crawl_delay: float,
        respect_robots: bool,
        max_hosts: int = MAX_HOSTS,
    ) -> None:
        if per_host_concurrency < 1:
            raise ValueError("per_host_concurrency must be at least 1")
        self._fetch = fetch
        self._user_agent = user_agent
        self._per_host_concurrency = per_host_concurrency
        self._max_crawl_delay = max_crawl_delay
        self._respect_robots = respect_robots
        self._max_hosts = max_hosts
        self._hosts: OrderedDict[Origin, _Host] = OrderedDict()  # least recently used first

    async def rules(self, origin: Origin) -> RobotsRules:
        """The host's robots rules, fetched on first use."""
        if not self._respect_robots:
            return ALLOW_ALL
        host = self._host(origin)
        if host.robots is None:
            host.robots = asyncio.create_task(self._load_robots(origin, host), name=f"robots {origin.robots_url}")
        # Shielded: one requester giving up must not cancel the fetch the others wait for.
        return await asyncio.shield(host.robots)

    def crawl_delay(self, origin: Origin) -> float | None:
        """The host's crawl delay once its robots.txt was read; None before, or if never."""
        host = self._hosts.get(origin)
        if host is None or host.robots is None or not host.robots.done() or host.robots.cancelled():
            return None
        return host.delay

    @asynccontextmanager
    async def slot(self, origin: Origin) -> AsyncIterator[None]:
        """Hold one of the host's concurrent request slots; with a crawl delay, requests to
        the host run one at a time, each starting at least the delay after the previous ended."""
        host = self._host(origin)
        host.active += 1
        try:
            async with host.semaphore:
                if host.delay <= 0:
                    try:
                        yield
                    finally:
                        host.last_end = _now()
                    return
                async with host.serial:
                    await asyncio.sleep(next_start(host.last_end, host.delay, _now()) - _now())
                    try:
                        yield
                    finally:
                        host.last_end = _now()
        finally:
            host.active -= 1

    async def aclose(self) -> None:
        """Cancel robots fetches still running."""
        tasks = [h.robots for h in self._hosts.values() if h.robots is not None and not h.robots.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _host(self, origin: Origin) -> _Host:
        host = self._hosts.get(origin)
        if host is not None:
            self._hosts.move_to_end(origin)
            return host
        if len(self._hosts) >= self._max_hosts:
            self._forget_one_idle_host()
        host = self._hosts[origin] = _Host(asyncio.Semaphore(self._per_host_concurrency))
        return host

    def _forget_one_idle_host(self) -> None:
        now = _now()
        for origin, host in self._hosts.items():
            robots_pending = host.robots is not None and not host.robots.done()
            if is_idle(host.active, robots_pending, host.last_end, host.delay, now):
                del self._hosts[origin]
                return
        # Every host is busy: remembering one more is better than breaking a rule.

    async def _load_robots(self, origin: Origin, host: _Host) -> RobotsRules:
        url = origin.robots_url
        async with self.slot(origin):
            result = await self._fetch(FetchRequest(id=0, method="GET", url=url, want_body=True))
        for _ in range(MAX_ROBOTS_REDIRECTS):
            target = redirect_target(result)
            if target is None:
                break
            result = await self._fetch(FetchRequest(id=0, method="GET", url=target, want_body=True))
        rules, problem = rules_from_response(result)
        if problem is not None:
            log.info("robots.txt of %s unavailable (%s); allowing all URLs", url, problem)
        host.delay = rules.crawl_delay(self._user_agent, self._max_crawl_delay)
        return rules


def _now() -> float:
    return asyncio.get_running_loop().time()
