"""The egress: the only path from a workload to the network.

`Egress.fetch` turns a process API `FetchRequest` into a `FetchResult` and never raises for
network trouble: every failure becomes an error kind (`FetchError`) with a one-line message.
aiohttp's errors are translated here, once.

Address policy without a DNS-rebinding window: names are resolved by `_PolicyResolver`, which
hands aiohttp only the addresses the policy allows, and aiohttp connects to exactly those.
IP-literal hosts never reach a resolver in aiohttp, so they are checked before the request.
Names under ".invalid" are refused before any lookup (RFC 6761). Proxies from the environment
are not used (they would bypass the policy), redirects are never followed (the workload
decides), and cookies are never kept (units must not leak state into each other).

A process API version 2 fetch (`detailed`) is measured (`peer.fetch_timing`): it goes through
a second session whose every request opens its own connection, under the same policy, budget
and politeness, so that its DNS, connect and TLS times are its own.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from peer import fetch_timing
from peer.address_policy import describe_refusal, is_allowed
from peer.allowance import Allowance, Receipt
from peer.fetch_timing import FetchTimer
from peer.politeness import Origin, Politeness
from peer.wire_cost import IPV4, IPV6, FetchWindow, Framing, fetch_window
from workloads.process_api import FetchError, FetchRequest, FetchResult

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 8192
KEPT_HEADERS = ("content-type", "location", "retry-after", "content-length")
# A GET that did not ask for the body is drained up to this much so its connection can be
# reused; a longer body is cheaper to abandon with the connection.
_DRAIN_LIMIT = 64 * 1024
# Request headers besides the line, host and user agent: Accept, Accept-Encoding, Connection...
_REQUEST_HEADERS = 100
_MAX_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class EgressConfig:
    allow_private: bool = False
    request_timeout: float = 15.0
    connect_timeout: float = 5.0
    max_body: int = 5 * 1024 * 1024
    user_agent: str = "osaas-linkcheck/0.1"
    per_host_concurrency: int = 4
    max_crawl_delay: float = 10.0
    respect_robots: bool = True
    source_address: str | None = None  # the local address workload traffic leaves from
    ca_file: str | None = None  # trust anchors besides the system's (a lab's own CA)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Egress:
    """An HTTP client for workloads, used as `async with Egress(config) as egress:`.
    One connection pool for its lifetime; once closed it cannot be reopened. With an
    `allowance`, every request holds one of the volunteer's concurrent fetches and every byte
    sent or received is paid for at the volunteer's rates before the next one moves.

    Its sockets' receive buffers and the client's read buffer are sized from the download rate
    and the number of concurrent fetches (peer.wire_cost.fetch_window), so the kernel cannot
    take in much more than has been paid for; each fetch pays that window as a deposit before
    its request goes out."""

    def __init__(self, config: EgressConfig, allowance: Allowance | None = None) -> None:
        self.config = config
        self._allowance = allowance
        self._state = _State.NEW
        self._session: aiohttp.ClientSession | None = None
        self._measured_session: aiohttp.ClientSession | None = None
        self._politeness = Politeness(
            self._fetch_unscheduled,
            user_agent=config.user_agent,
            per_host_concurrency=config.per_host_concurrency,
            max_crawl_delay=config.max_crawl_delay,
            respect_robots=config.respect_robots,
        )

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise RuntimeError(f"an Egress is entered once; this one is {self._state.value}")
        tls = fetch_timing.tls_context(self.config.ca_file)
        self._session = self._new_session(tls, measured=False)
        self._measured_session = self._new_session(tls, measured=True)
        self._state = _State.OPEN
        return self

    def _new_session(self, tls: ssl.SSLContext, measured: bool) -> aiohttp.ClientSession:
        """A session under the address policy. `measured` (process API version 2 fetches):
        every request on a connection of its own, its name looked up again, so that each one's
        DNS, connect and TLS times are its own (a pooled connection was often opened by the
        robots.txt fetch just before)."""
        connector = aiohttp.TCPConnector(
            resolver=_PolicyResolver(self.config.allow_private),
            limit_per_host=self.config.per_host_concurrency,
            local_addr=(self.config.source_address, 0) if self.config.source_address else None,
            socket_factory=self._socket,
            ssl=tls,
            force_close=measured,
            use_dns_cache=not measured,
        )
        return aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self.config.user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self.config.request_timeout, sock_connect=self.config.connect_timeout),
            trust_env=False,
            read_bufsize=self._window().read_buffer,  # each request sets its own (`_request`)
            trace_configs=[fetch_timing.trace_config()] if measured else None,
            response_class=fetch_timing.MeasuredResponse if measured else aiohttp.ClientResponse,
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        await self._politeness.aclose()
        for session in (self._session, self._measured_session):
            if session is not None:
                await session.close()

    async def fetch(self, request: FetchRequest, detailed: bool = False) -> FetchResult:
        """Fetch politely: robots.txt consulted, crawl delay and per-host limit respected.
        `detailed` (process API version 2): the result carries what was measured of the
        request itself (`FetchDetails`), never of the waits for politeness and budget."""
        url_or_error = self._preflight(request)
        if isinstance(url_or_error, FetchResult):
            return fetch_timing.with_details(url_or_error, None) if detailed else url_or_error
        url = url_or_error
        origin = Origin.of(url)
        rules = await self._politeness.rules(origin)
        if not rules.can_fetch(str(url), self.config.user_agent):
            refused = _error(request, FetchError.ROBOTS, "disallowed by robots.txt")
            return fetch_timing.with_details(refused, None) if detailed else refused
        return await self._send(request, url, origin, FetchTimer() if detailed else None)

    def crawl_delay(self, origin: str) -> float | None:
        """The crawl delay this egress keeps for `origin` ("http://host:port"), as robots.txt
        set it (capped); None when its robots.txt was not read (or robots are not respected)."""
        try:
            url = URL(origin)
        except (TypeError, ValueError):
            return None
        if url.scheme not in ("http", "https") or url.raw_host is None or url.port is None:
            return None
        return self._politeness.crawl_delay(Origin.of(url))

    def _window(self) -> FetchWindow:
        """The buffers a fetch's connection gets under the budget as it is now."""
        if self._allowance is None:
            return fetch_window(None, None)
        budget = self._allowance.budget
        # Each request gets the client's read buffer of the budget as it is now: one fixed when
        # the session opened (unlimited, say) made the deposits of a budget set later on the
        # volunteer's page three times too large, and its fetches went one at a time.
        return fetch_window(budget.max_down, budget.max_fetches)

    def _socket(
        self, addr_info: tuple[int | socket.AddressFamily, int | socket.SocketKind, int, str, tuple[object, ...]]
    ) -> socket.socket:
        """A socket for a new connection, its receive buffer set before it connects (the window
        it offers, and its scaling, are agreed in the handshake)."""
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family=family, type=kind, proto=proto)
        receive_buffer = self._window().receive_buffer
        if receive_buffer is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            except OSError:
                sock.close()
                raise
        return sock

    async def _fetch_unscheduled(self, request: FetchRequest) -> FetchResult:
        """Fetch with the address policy but without politeness (which calls this)."""
        url_or_error = self._preflight(request)
        if isinstance(url_or_error, FetchResult):
            return url_or_error
        return await self._send(request, url_or_error)

    def _preflight(self, request: FetchRequest) -> URL | FetchResult:
        """The URL to request, or the error result that stops it before any network I/O."""
        if self._state is not _State.OPEN:
            raise RuntimeError(f"fetch on an Egress that is {self._state.value}")
        url = _parse_url(request.url)
        if isinstance(url, str):
            return _error(request, FetchError.INVALID_URL, url)
        assert url.raw_host is not None
        if _is_reserved_invalid(url.raw_host):
            return _error(request, FetchError.DNS, f"{url.raw_host} is under .invalid and never resolves")
        literal = _ip_literal(url.raw_host)
        if literal is not None and not is_allowed(literal, self.config.allow_private):
            return _error(request, FetchError.POLICY, describe_refusal(literal))
        return url

    async def _send(
        self, request: FetchRequest, url: URL, polite_to: Origin | None = None, timer: FetchTimer | None = None
    ) -> FetchResult:
        """Pay the budget first, then wait for the host's politeness slot (with `polite_to`):
        a wait for the budget inside the slot would let requests the slot spaced out reach
        the host closer together."""
        async with contextlib.AsyncExitStack() as stack:
            receipt = None
            window = self._window()
            if self._allowance is not None:
                await stack.enter_async_context(self._allowance.fetch_slot())
                await self._allowance.request(_request_size(request, url, self.config.user_agent))
                receipt = await stack.enter_async_context(self._allowance.response(window))
            if polite_to is not None:
                await stack.enter_async_context(self._politeness.slot(polite_to))
            if timer is None:
                return await self._request(request, url, receipt, window, None)
            with timer.measuring():
                result = await self._request(request, url, receipt, window, timer)
            return fetch_timing.with_details(result, timer)

    async def _request(
        self, request: FetchRequest, url: URL, receipt: Receipt | None, window: FetchWindow, timer: FetchTimer | None
    ) -> FetchResult:
        session = self._session if timer is None else self._measured_session
        assert session is not None
        chunk = window.read_chunk
        try:
            async with session.request(
                request.method, url, allow_redirects=False, read_bufsize=window.read_buffer, trace_request_ctx=timer
            ) as response:
                if timer is not None:
                    timer.answered(response)
                if receipt is not None:
                    receipt.framing = _framing(response)
                    await receipt.received(_head_size(response))
                headers = _kept_headers(response)
                body, truncated = b"", False
                if request.method == "GET":
                    if request.want_body:
                        body, truncated = await _read_capped(response, self.config.max_body, receipt, chunk)
                    else:
                        truncated = await _drain_or_abandon(response, receipt, chunk)
                if receipt is not None:
                    receipt.complete = not truncated
                return FetchResult(
                    id=request.id,
                    url=request.url,
                    status=response.status,
                    headers=headers,
                    body=body,
                    truncated=truncated,
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            kind, message = self._translate(exc, url)
            return _error(request, kind, message)

    def _translate(self, exc: BaseException, url: URL) -> tuple[FetchError, str]:
        """Our error kind and message for an exception from aiohttp."""
        where = f"{url.raw_host}:{url.port}"
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return FetchError.TIMEOUT, f"could not connect to {where} within {self.config.connect_timeout:g} s"
        if isinstance(exc, TimeoutError):
            return FetchError.TIMEOUT, f"no complete response from {where} within {self.config.request_timeout:g} s"
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            cause = exc.os_error
            if isinstance(cause, _PolicyRefusal):
                return FetchError.POLICY, f"{url.raw_host} resolves only to refused addresses: {cause}"
            return FetchError.DNS, f"could not resolve {url.raw_host}: {_os_reason(cause)}"
        if isinstance(exc, aiohttp.InvalidURL):
            return FetchError.INVALID_URL, f"aiohttp cannot request this URL: {exc}"
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            failure = exc.certificate_error
            reason = getattr(failure, "verify_message", None) or getattr(failure, "reason", None) or str(failure)
            return (
                FetchError.CONNECTION,
                f"TLS certificate of {where} not trusted: certificate verify failed: {_one_line(str(reason))}",
            )
        if isinstance(exc, aiohttp.ClientConnectorSSLError):
            return FetchError.CONNECTION, f"TLS handshake with {where} failed: {_one_line(str(exc.os_error))}"
        if isinstance(exc, aiohttp.ClientConnectorError):
            return FetchError.CONNECTION, f"could not connect to {where}: {_os_reason(exc.os_error)}"
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return FetchError.CONNECTION, f"{where} closed the connection without a complete response"
        if isinstance(exc, aiohttp.ClientResponseError):
            return FetchError.CONNECTION, f"{where} sent a malformed response: {exc.message}"
        if isinstance(exc, aiohttp.ClientPayloadError):
            return FetchError.CONNECTION, f"{where} sent a broken response body: {exc}"
        if isinstance(exc, OSError):
            return FetchError.CONNECTION, f"connection to {where} failed: {_os_reason(exc)}"
        return FetchError.CONNECTION, f"request to {where} failed: {type(exc).__name__}: {exc}"


def policy_resolver(allow_private: bool) -> AbstractResolver:
    """A resolver that passes on only the addresses the policy allows: the egress's, and the
    one the peer's session to coordinators found in the DHT resolves their names with."""
    return _PolicyResolver(allow_private)


class _PolicyRefusal(OSError):
    """Every address a name resolved to is refused by the address policy."""


class _PolicyResolver(AbstractResolver):
    """Resolves through the system resolver and passes on only allowed addresses."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if _is_reserved_invalid(host):
            raise OSError(f"{host} is under .invalid and never resolves")
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if is_allowed(ipaddress.ip_address(r["host"]), self._allow_private)]
        if not allowed:
            if not found:
                raise OSError(f"{host} has no addresses")
            raise _PolicyRefusal(describe_refusal(ipaddress.ip_address(found[0]["host"])))
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _parse_url(raw: str) -> URL | str:
    """An absolute http(s) URL without its fragment, or why `raw` is not one."""
    if len(raw) > MAX_URL_LENGTH:
        return f"URL is longer than {MAX_URL_LENGTH} characters"
    try:
        url = URL(raw)
        port = url.port
    except (ValueError, TypeError) as exc:
        return f"not a valid URL: {_one_line(str(exc))}"
    if url.scheme not in ("http", "https"):
        return f"only http and https URLs can be fetched, not {_one_line(raw[:80])!r}"
    if not url.raw_host:
        return f"URL has no host: {_one_line(raw[:80])!r}"
    if not port:
        return "URL has port 0"
    return url.with_fragment(None)


def _is_reserved_invalid(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "invalid" or name.endswith(".invalid")


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _kept_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    kept = {}
    for name in KEPT_HEADERS:
        value = response.headers.get(name)
        if value is not None:
            # aiohttp keeps undecodable bytes as surrogates, which msgpack cannot encode.
            kept[name] = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return kept


def _request_size(request: FetchRequest, url: URL, user_agent: str) -> int:
    """About the bytes a request puts on the wire: its line and the headers aiohttp sends."""
    return len(request.method) + len(url.raw_path_qs) + len(url.raw_host or "") + len(user_agent) + _REQUEST_HEADERS


def _framing(response: aiohttp.ClientResponse) -> Framing:
    """How the response's connection frames its bytes: IPv4 or IPv6."""
    connection = response.connection
    sock = None if connection is None or connection.transport is None else connection.transport.get_extra_info("socket")
    return IPV4 if sock is not None and sock.family == socket.AF_INET else IPV6


def _head_size(response: aiohttp.ClientResponse) -> int:
    """The bytes of a response's status line and headers."""
    return len(response.reason or "") + 15 + sum(len(k) + len(v) + 4 for k, v in response.raw_headers)


async def _read_capped(
    response: aiohttp.ClientResponse, limit: int, receipt: Receipt | None, chunk_size: int
) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the body, and whether there was more (then the connection is
    closed rather than read to the end). Each chunk is paid for before the next is read, so
    the socket is read no faster than the volunteer's download rate."""
    body = bytearray()
    while len(body) < limit:
        chunk = await response.content.read(min(chunk_size, limit - len(body)))
        if not chunk:
            return bytes(body), False
        if receipt is not None:
            await receipt.received(len(chunk))
        body += chunk
    if await response.content.read(1):
        if receipt is not None:
            receipt.abandon(response.content.total_bytes - len(body))
        response.close()
        return bytes(body), True
    return bytes(body), False


async def _drain_or_abandon(response: aiohttp.ClientResponse, receipt: Receipt | None, chunk_size: int) -> bool:
    """Read an unwanted body to its end, up to _DRAIN_LIMIT; whether it was abandoned."""
    _, more = await _read_capped(response, _DRAIN_LIMIT, receipt, chunk_size)
    if more:
        log.debug("abandoned an unwanted body of more than %d bytes from %s", _DRAIN_LIMIT, response.url)
    return more


def _os_reason(exc: OSError | BaseException | None) -> str:
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return _one_line(exc.strerror)
    if isinstance(exc, OSError) and exc.errno:
        # asyncio puts its own "Connect call failed" text where the system's reason belongs.
        return os.strerror(exc.errno)
    return _one_line(str(exc)) or type(exc).__name__


def _error(request: FetchRequest, kind: FetchError, message: str) -> FetchResult:
    return FetchResult(id=request.id, url=request.url, error=kind.value, message=_one_line(message))


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 1] + "…"
