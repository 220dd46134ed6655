"""The check of one URL as a state machine: fetch results in, actions out. No I/O, no sleeps.

    machine = LinkCheck(Item(url, crawl))
    action = machine.start()                  # a Fetch
    while not isinstance(action, (Verdict, Unfinished)):
        ...send action (after sleeping action.seconds if it is a Wait, then send action.then)
        action = machine.receive(fetch_result)

Rules, in the order a response meets them:
- 301/302/303/307/308 with a Location: follow it (same method), at most MAX_REDIRECTS times;
  a URL seen twice in the chain is a "redirect loop".
- 429/503: wait for Retry-After (seconds or HTTP-date, default 1 s, capped) and ask again,
  at most MAX_RATE_RETRIES times per item.
- A HEAD (crawl=false items ask HEAD first) answered with anything but 2xx/404/410: ask GET.
- Otherwise final: 2xx ok, 4xx/5xx broken, anything else error.
Fetch errors: timeout/connection are retried MAX_ERROR_RETRIES times with a short backoff;
dns is an error; policy/robots are excluded; invalid_url is excluded for non-http(s) URLs;
limit leaves the item Unfinished. The only clock read is for a Retry-After HTTP-date with no
Date header, and it changes how long to wait, never the verdict.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from yarl import URL

from workloads.linkcheck import urls
from workloads.process_api import FetchError, FetchResult, ProtocolError

MAX_REDIRECTS = 10
MAX_RATE_RETRIES = 3
MAX_ERROR_RETRIES = 2
DEFAULT_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 10.0
ERROR_BACKOFF = 0.5  # seconds before the first retry after a timeout/connection error; doubles
MAX_MESSAGE = 300  # characters kept of a peer's error message
# Links reported per page, at most: the bundle's job model declares it (`max_links`), and a
# coordinator drops what a record reports past it. Links after it on a page are not followed.
MAX_LINKS_PER_PAGE = 5_000

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RATE_LIMIT_STATUSES = frozenset({429, 503})
_HEAD_IS_ENOUGH = frozenset({404, 410})


class Outcome(enum.StrEnum):
    OK = "ok"
    BROKEN = "broken"
    TIMEOUT = "timeout"
    ERROR = "error"
    EXCLUDED = "excluded"


@dataclass(frozen=True, slots=True)
class Item:
    """One URL to check; `crawl` also asks for the links of the page."""

    url: str
    crawl: bool


@dataclass(frozen=True, slots=True)
class Fetch:
    """Action: send this fetch to the peer and feed its FetchResult back."""

    method: str
    url: str
    want_body: bool


@dataclass(frozen=True, slots=True)
class Wait:
    """Action: sleep `seconds`, then send `then` and feed its FetchResult back."""

    seconds: float
    then: Fetch


@dataclass(frozen=True, slots=True)
class Verdict:
    """Final action: the item's result."""

    url: str
    result: Outcome
    status: int | None  # HTTP status of the last response to the last URL asked, if any
    final_url: str | None  # the last URL asked
    redirects: tuple[str, ...]  # each URL followed, in order, not counting `url`
    error: str | None
    links: tuple[str, ...]
    crawled: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "result": self.result.value,
            "status": self.status,
            "final_url": self.final_url,
            "redirects": list(self.redirects),
            "error": self.error,
            "links": list(self.links),
            "crawled": self.crawled,
        }


@dataclass(frozen=True, slots=True)
class Unfinished:
    """Final action: the peer would not fetch more for this unit; the item has no result."""

    url: str
    reason: str


Action = Fetch | Wait | Verdict | Unfinished


class LinkCheck:
    """The check of one item. Drive it with `start()` then one `receive()` per fetch sent."""

    def __init__(self, item: Item, clock: Callable[[], float] = time.time) -> None:
        self.item = item
        self._clock = clock
        self._chain = [_canonical(item.url)]  # the original URL, then each redirect target
        self._pending: Fetch | None = None
        self._started = False
        self._rate_retries = 0
        self._error_retries = 0

    def start(self) -> Fetch:
        if self._started:
            raise RuntimeError("LinkCheck.start() called twice")
        self._started = True
        method, want_body = ("GET", True) if self.item.crawl else ("HEAD", False)
        return self._send(Fetch(method, self._chain[0], want_body))

    def receive(self, result: FetchResult) -> Action:
        """Feed the peer's answer to the last Fetch (or Wait.then). Raises ProtocolError if
        the answer has neither a status nor a known error kind."""
        if self._pending is None:
            raise RuntimeError("LinkCheck.receive() called with no fetch outstanding")
        fetch, self._pending = self._pending, None
        if result.error is not None:
            return self._on_error(fetch, result)
        if result.status is None:
            raise ProtocolError(f"fetch_result {result.id} has neither a status nor an error")
        return self._on_response(fetch, result, result.status)

    # ---- transitions ------------------------------------------------------------------

    def _on_response(self, fetch: Fetch, result: FetchResult, status: int) -> Action:
        location = result.headers.get("location", "").strip()
        if status in REDIRECT_STATUSES and location:
            return self._follow(fetch, status, location)
        if status in RATE_LIMIT_STATUSES and self._rate_retries < MAX_RATE_RETRIES:
            self._rate_retries += 1
            return self._wait(retry_after(result.headers, self._clock), fetch)
        if fetch.method == "HEAD" and not (200 <= status < 300 or status in _HEAD_IS_ENOUGH):
            return self._send(Fetch("GET", fetch.url, want_body=False))
        return self._final(fetch, result, status)

    def _follow(self, fetch: Fetch, status: int, location: str) -> Action:
        try:
            target = urls.join(fetch.url, location)
        except ValueError:
            return self._verdict(Outcome.ERROR, status, fetch.url, "invalid redirect location")
        if target in self._chain:
            return self._verdict(Outcome.ERROR, status, fetch.url, "redirect loop")
        if len(self._chain) - 1 >= MAX_REDIRECTS:
            return self._verdict(Outcome.ERROR, status, fetch.url, "too many redirects")
        self._chain.append(target)
        return self._send(Fetch(fetch.method, target, fetch.want_body))

    def _final(self, fetch: Fetch, result: FetchResult, status: int) -> Verdict:
        if 200 <= status < 300:
            links = self._links(fetch, result)
            return self._verdict(Outcome.OK, status, fetch.url, None, links)
        if 400 <= status < 600:
            return self._verdict(Outcome.BROKEN, status, fetch.url, f"HTTP {status}")
        if status in REDIRECT_STATUSES:
            return self._verdict(Outcome.ERROR, status, fetch.url, f"HTTP {status} without Location")
        return self._verdict(Outcome.ERROR, status, fetch.url, f"HTTP {status}")

    def _on_error(self, fetch: Fetch, result: FetchResult) -> Action:
        kind = result.error
        message = _one_line(result.message)
        if kind == FetchError.LIMIT:
            return Unfinished(self.item.url, message or "fetch allowance used up")
        if kind in (FetchError.TIMEOUT, FetchError.CONNECTION):
            if self._error_retries < MAX_ERROR_RETRIES:
                self._error_retries += 1
                return self._wait(ERROR_BACKOFF * 2 ** (self._error_retries - 1), fetch)
            if kind == FetchError.TIMEOUT:
                return self._verdict(Outcome.TIMEOUT, None, fetch.url, message or "timed out")
            return self._verdict(Outcome.ERROR, None, fetch.url, message or "connection failed")
        if kind == FetchError.DNS:
            return self._verdict(Outcome.ERROR, None, fetch.url, "name does not resolve")
        if kind == FetchError.POLICY:
            return self._verdict(Outcome.EXCLUDED, None, fetch.url, message or "refused by the address policy")
        if kind == FetchError.ROBOTS:
            return self._verdict(Outcome.EXCLUDED, None, fetch.url, message or "disallowed by robots.txt")
        if kind == FetchError.INVALID_URL:
            fetchable = urls.scheme_of(fetch.url) in urls.FETCHABLE_SCHEMES
            outcome = Outcome.ERROR if fetchable else Outcome.EXCLUDED
            return self._verdict(outcome, None, fetch.url, message or "not a URL the peer can fetch")
        raise ProtocolError(f"fetch_result {result.id} has an unknown error kind {kind!r}")

    def _links(self, fetch: Fetch, result: FetchResult) -> tuple[str, ...] | None:
        """The page's links, or None when this response is not to be crawled."""
        content_type = result.headers.get("content-type")
        if not (self.item.crawl and fetch.want_body and result.body):
            return None
        if urls.origin(fetch.url) != urls.origin(self._chain[0]):
            return None  # a page that redirects off-site is checked, not crawled
        # Imported here: selectolax is a noticeable share of start-up, and only crawls need it.
        from workloads.linkcheck.extract import extract_links, is_html

        if not is_html(content_type):
            return None
        return tuple(extract_links(result.body, content_type, fetch.url)[:MAX_LINKS_PER_PAGE])

    # ---- helpers ----------------------------------------------------------------------

    def _send(self, fetch: Fetch) -> Fetch:
        self._pending = fetch
        return fetch

    def _wait(self, seconds: float, fetch: Fetch) -> Wait:
        self._pending = fetch
        return Wait(seconds, fetch)

    def _verdict(
        self,
        result: Outcome,
        status: int | None,
        final_url: str,
        error: str | None,
        links: tuple[str, ...] | None = None,
    ) -> Verdict:
        return Verdict(
            url=self.item.url,
            result=result,
            status=status,
            final_url=final_url,
            redirects=tuple(self._chain[1:]),
            error=error,
            links=links or (),
            crawled=links is not None,
        )


def retry_after(headers: dict[str, str], clock: Callable[[], float] = time.time) -> float:
    """Seconds to wait before asking again, from a Retry-After header, within [0, MAX_RETRY_AFTER]."""
    value = headers.get("retry-after", "").strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    when = _http_date(value)
    if when is None:
        return DEFAULT_RETRY_AFTER
    # Measured against the server's own Date when it sent one, so clock skew does not matter.
    now = _http_date(headers.get("date", "").strip())
    seconds = when - (now if now is not None else clock())
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _http_date(value: str) -> float | None:
    if not value:
        return None
    # Imported here: email.utils is a sixth of the start-up time, and dates are rare here.
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _canonical(url: str) -> str:
    """The URL to fetch for an item: canonical if it is a parsable http(s) URL, else as given
    (the peer then answers invalid_url)."""
    if urls.scheme_of(url) not in urls.FETCHABLE_SCHEMES:
        return url
    try:
        return urls.normalise(URL(url))
    except ValueError:
        return url


def _one_line(message: str | None) -> str | None:
    if not message:
        return None
    return " ".join(message.split())[:MAX_MESSAGE] or None
