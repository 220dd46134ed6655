"""Jobs whose input is seed URLs (a job model's `input = "urls"`), pure: seeds become items,
split by website, and a crawl's links become new items.

A job's scope is the set of its seeds' origins (scheme://host:port). Every URL found is an item
once; only items inside the scope and within the depth limit are crawls (asked for their
links). Items carry their unit key (the origin): the store forms a unit from one key's items,
so one peer's unit hits one website.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from yarl import URL

from coordinator.store import InvalidInput
from workloads.bundle.job_model import MAX_LINKS

MAX_SEEDS = 1000
DEFAULT_VANTAGE = 5  # vantage points per URL when the owner names none (a vantage model's jobs)
MAX_VANTAGE = 16
MAX_URL_LENGTH = 8 * 1024
MAX_LINKS_PER_ITEM = MAX_LINKS  # whatever a model declares (`JobModel.max_links`)
MAX_TEXT = 2000  # error strings are cut here; they are for people, not for parsing
# Links that are not absolute http(s) URLs share one bucket: no website to pace, and the
# workload says what it makes of them.
NOT_HTTP_KEY = "-"
# The unit keys of parts of items and records jobs start with it (no origin does).
PART_PREFIX = "#"


@dataclass(frozen=True, slots=True)
class JobInput:
    urls: tuple[str, ...]
    depth: int | None  # None: no limit
    vantage: int | None = None  # vantage points per URL the owner asked for (a vantage model's)

    @property
    def scope(self) -> frozenset[str]:
        return frozenset(unit_key(u) for u in self.urls)

    def to_obj(self) -> dict[str, Any]:
        return {"urls": list(self.urls), "depth": self.depth} | (
            {} if self.vantage is None else {"vantage": self.vantage}
        )


@dataclass(frozen=True, slots=True)
class NewItem:
    url: str
    unit_key: str
    depth: int
    crawl: bool
    replica: int = 0  # which of its URL's vantage points this item is (0 without vantage points)


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


def is_website(key: str) -> bool:
    """Is this unit key a website's origin (`unit_key`), the politeness unit the coordinator
    paces? Not the key of links that are no http(s) URL, nor a part of an items job
    (`coordinator.item_jobs`, whose keys start with PART_PREFIX)."""
    return key != NOT_HTTP_KEY and not key.startswith(PART_PREFIX)


def parse_job_input(obj: Any) -> JobInput:
    """Validate a seed-URL job's input map; raise `InvalidInput` with a one-line reason."""
    if not isinstance(obj, dict):
        raise InvalidInput("input must be a map with 'urls' and 'depth'")
    unknown = sorted(str(k) for k in obj if k not in ("urls", "depth", "vantage"))
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
    vantage = obj.get("vantage")
    if vantage is not None and (type(vantage) is not int or not 1 <= vantage <= MAX_VANTAGE):
        raise InvalidInput(f"input.vantage must be an integer 1..{MAX_VANTAGE}, or nil")
    return JobInput(urls=tuple(dict.fromkeys(urls)), depth=depth, vantage=vantage)


def seed_items(job: JobInput, crawl: bool, vantage: int = 1) -> list[NewItem]:
    """The job's first items: crawls when its model adds items (`crawl`); with `vantage`
    points, every URL that many times, one item per vantage point, all of the first vantage
    point's before the second's (a unit holds items of one of them: `vantage.form_unit`)."""
    return [
        NewItem(url=u, unit_key=unit_key(u), depth=0, crawl=crawl, replica=r) for r in range(vantage) for u in job.urls
    ]


def linked_items(found: list[str], page_depth: int, job: JobInput) -> list[NewItem]:
    """Items for the links a crawl found: items always, crawls when in scope and depth.

    Empty and over-long links are dropped, duplicates folded, at most MAX_LINKS_PER_ITEM kept.
    """
    depth = page_depth + 1
    deep_enough = job.depth is None or depth <= job.depth
    scope = job.scope
    links = [link for link in dict.fromkeys(found) if 0 < len(link) <= MAX_URL_LENGTH]
    items = []
    for link in links[:MAX_LINKS_PER_ITEM]:
        key = unit_key(link)
        items.append(NewItem(url=link, unit_key=key, depth=depth, crawl=deep_enough and key in scope))
    return items


def unit_payload(job_id: int, items: Iterable[tuple[str, bool]]) -> dict[str, Any]:
    """What a peer's workload receives for one unit."""
    return {"job_id": job_id, "items": [{"url": url, "crawl": crawl} for url, crawl in items]}
