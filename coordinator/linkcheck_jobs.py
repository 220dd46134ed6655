"""Link-check jobs, pure: seeds become items, reports become results and newly found items.

A job's scope is the set of its seeds' origins (scheme://host:port). Every URL found is checked
once; only pages inside the scope and within the depth limit are crawled for more links.
Items carry their unit key (the origin): the store forms a unit from one key's items, so one
peer's unit hits one website.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from yarl import URL

from coordinator.store import InvalidInput

WORKLOAD = "linkcheck"
MAX_SEEDS = 1000
MAX_URL_LENGTH = 8 * 1024
MAX_LINKS_PER_ITEM = 10_000
MAX_TEXT = 2000  # error strings are cut here; they are for people, not for parsing
MAX_REDIRECTS = 30  # a redirect chain reported longer is cut here (the workload follows 10)
RESULTS = frozenset({"ok", "broken", "timeout", "error", "excluded"})
# Links that are not absolute http(s) URLs share one bucket; the workload marks them excluded.
NOT_HTTP_KEY = "-"


@dataclass(frozen=True, slots=True)
class JobInput:
    urls: tuple[str, ...]
    depth: int | None  # None: no limit

    @property
    def scope(self) -> frozenset[str]:
        return frozenset(unit_key(u) for u in self.urls)

    def to_obj(self) -> dict[str, Any]:
        return {"urls": list(self.urls), "depth": self.depth}


@dataclass(frozen=True, slots=True)
class NewItem:
    url: str
    unit_key: str
    depth: int
    crawl: bool


class ItemResult(NamedTuple):
    """One item of a link-check unit's result, as the workload reports it. A named tuple, not
    a frozen dataclass: a report batch makes hundreds of them, and a tuple is made several
    times faster than a frozen dataclass sets its fields."""

    url: str
    result: str
    status: int | None
    final_url: str | None
    redirects: tuple[str, ...]
    error: str | None
    links: tuple[str, ...]
    crawled: bool


def unit_key(url: str) -> str:
    """The origin `scheme://host:port` of an absolute http(s) URL, else `NOT_HTTP_KEY`."""
    try:
        parsed = URL(url)
        port = parsed.port
    except (ValueError, TypeError):
        return NOT_HTTP_KEY
    host = parsed.raw_host
    if parsed.scheme not in ("http", "https") or not host or port is None:
        return NOT_HTTP_KEY
    if ":" in host:
        host = f"[{host}]"
    return f"{parsed.scheme}://{host}:{port}"


def parse_job_input(obj: Any) -> JobInput:
    """Validate a link-check job's input map; raise `InvalidInput` with a one-line reason."""
    if not isinstance(obj, dict):
        raise InvalidInput("input must be a map with 'urls' and 'depth'")
    unknown = sorted(str(k) for k in obj if k not in ("urls", "depth"))
    if unknown:
        raise InvalidInput(f"input has unknown fields: {', '.join(unknown)}")
    urls = obj.get("urls")
    if not isinstance(urls, list) or not 1 <= len(urls) <= MAX_SEEDS:
        raise InvalidInput(f"input.urls must be a list of 1..{MAX_SEEDS} URLs")
    for i, url in enumerate(urls):
        if not isinstance(url, str) or len(url) > MAX_URL_LENGTH or unit_key(url) == NOT_HTTP_KEY:
            raise InvalidInput(f"input.urls[{i}] is not an absolute http(s) URL of at most {MAX_URL_LENGTH} characters")
    depth = obj.get("depth")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= 1000):
        raise InvalidInput("input.depth must be an integer 0..1000, or nil for no limit")
    return JobInput(urls=tuple(dict.fromkeys(urls)), depth=depth)


def seed_items(job: JobInput) -> list[NewItem]:
    return [NewItem(url=u, unit_key=unit_key(u), depth=0, crawl=True) for u in job.urls]


def linked_items(page: ItemResult, page_depth: int, job: JobInput) -> list[NewItem]:
    """Items for the links of a crawled page: checked always, crawled when in scope and depth.

    Empty and over-long links are dropped, duplicates folded, at most MAX_LINKS_PER_ITEM kept.
    """
    depth = page_depth + 1
    deep_enough = job.depth is None or depth <= job.depth
    scope = job.scope
    links = [link for link in dict.fromkeys(page.links) if 0 < len(link) <= MAX_URL_LENGTH]
    items = []
    for link in links[:MAX_LINKS_PER_ITEM]:
        key = unit_key(link)
        items.append(NewItem(url=link, unit_key=key, depth=depth, crawl=deep_enough and key in scope))
    return items


def unit_payload(job_id: int, items: Iterable[tuple[str, bool]]) -> dict[str, Any]:
    """What a peer's workload receives for one unit."""
    return {"job_id": job_id, "items": [{"url": url, "crawl": crawl} for url, crawl in items]}


def parse_items(payload: Any) -> list[ItemResult]:
    """A link-check result payload's items, each well formed; raise `InvalidInput`. Needs
    nothing of the store: callers parse before the store's turn (`check_unit_items` then)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise InvalidInput("payload must be a map with a list 'items'")
    return [_parse_item(raw, f"payload.items[{i}]") for i, raw in enumerate(payload["items"])]


def check_unit_items(results: list[ItemResult], unit_urls: Collection[str]) -> None:
    """Raise `InvalidInput` unless every result is one of the unit's URLs, each at most once."""
    seen: set[str] = set()
    for i, item in enumerate(results):
        if item.url not in unit_urls:
            raise InvalidInput(f"payload.items[{i}].url is not an item of this unit")
        if item.url in seen:
            raise InvalidInput(f"payload.items[{i}].url is reported twice")
        seen.add(item.url)


def _parse_item(raw: Any, where: str) -> ItemResult:
    well_formed = _well_formed(raw)
    if well_formed is not None:
        return well_formed
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be a map")
    url = _field(raw, "url", str, where)
    result = _field(raw, "result", str, where)
    if result not in RESULTS:
        raise InvalidInput(f"{where}.result must be one of {', '.join(sorted(RESULTS))}")
    status = _field(raw, "status", (int, type(None)), where)
    if status is not None and not 0 <= status <= 999:
        raise InvalidInput(f"{where}.status must be 0..999 or nil")
    error = _field(raw, "error", (str, type(None)), where)
    return ItemResult(
        url=url,
        result=result,
        status=status,
        final_url=_url_or_none(_field(raw, "final_url", (str, type(None)), where)),
        redirects=_redirects(_strings(raw, "redirects", where)),
        error=None if error is None else error[:MAX_TEXT],
        links=tuple(_strings(raw, "links", where)),
        crawled=_field(raw, "crawled", bool, where),
    )


def _well_formed(raw: Any) -> ItemResult | None:
    """The item when every field is right, else None (and `_parse_item` says what is wrong).
    Exact type checks: msgpack gives exact types, and bool is not an int here."""
    if type(raw) is not dict:
        return None
    try:
        url, result, status, final_url = raw["url"], raw["result"], raw["status"], raw["final_url"]
        redirects, error, links, crawled = raw["redirects"], raw["error"], raw["links"], raw["crawled"]
    except KeyError:
        return None
    if not (
        type(url) is str
        and type(result) is str
        and result in RESULTS
        and (status is None or (type(status) is int and 0 <= status <= 999))
        and (final_url is None or type(final_url) is str)
        and (error is None or type(error) is str)
        and type(crawled) is bool
        and type(redirects) is list
        and type(links) is list
        and all(type(r) is str for r in redirects)
        and all(type(link) is str for link in links)
    ):
        return None
    return ItemResult(
        url=url,
        result=result,
        status=status,
        final_url=_url_or_none(final_url),
        redirects=_redirects(redirects),
        error=None if error is None else error[:MAX_TEXT],
        links=tuple(links),
        crawled=crawled,
    )


def _url_or_none(url: str | None) -> str | None:
    """A reported URL kept only within MAX_URL_LENGTH: workload output is capped wherever it is
    stored, and a URL cut short would be a wrong one."""
    return url if url is None or len(url) <= MAX_URL_LENGTH else None


def _redirects(urls: list[str]) -> tuple[str, ...]:
    return tuple(url for url in urls[:MAX_REDIRECTS] if len(url) <= MAX_URL_LENGTH)


def _field(raw: dict[Any, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in raw:
        raise InvalidInput(f"{where}.{name} is missing")
    value = raw[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int to Python, not to us; floats are never valid here.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join("nil" if k is type(None) else k.__name__ for k in kinds)
        raise InvalidInput(f"{where}.{name} must be {names}")
    return value


def _strings(raw: dict[Any, Any], name: str, where: str) -> list[str]:
    values = _field(raw, name, list, where)
    if not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"{where}.{name} must be a list of strings")
    return values
