"""The link-check unit and result payloads (see docs/workload-api.md): validation, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workloads.linkcheck.check import Item

MAX_ITEMS = 1000
MAX_URL_LENGTH = 8192
# The caps the coordinator holds every record to (workloads/records.py): a record past one is
# refused whole, so the checker keeps within them, dropping what it could not report whole.
MAX_STRING = 8192
MAX_LIST = 10_000
MAX_RECORD = 1024 * 1024
MAX_ERROR = 2000


class BadPayload(ValueError):
    """The unit payload is not a link-check job; the message is one line for a person."""


@dataclass(frozen=True, slots=True)
class Job:
    job_id: int
    items: tuple[Item, ...]


def parse_job(payload: dict[str, Any]) -> Job:
    """The job in a unit payload {"job_id": int, "items": [{"url": str, "crawl": bool}, ...]}."""
    _exact_keys(payload, {"job_id", "items"}, "payload")
    job_id, items = payload["job_id"], payload["items"]
    if not isinstance(job_id, int) or isinstance(job_id, bool):
        raise BadPayload("payload: 'job_id' must be an integer")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise BadPayload(f"payload: 'items' must be a list of 1 to {MAX_ITEMS} items")
    return Job(job_id, tuple(_item(index, item) for index, item in enumerate(items)))


def within_caps(record: dict[str, Any]) -> dict[str, Any]:
    """`record` as the coordinator takes it: URLs longer than a string may be are left out (a
    URL cut short would be a wrong one), the error is cut, and links past the list and record
    caps are dropped."""
    if record["final_url"] is not None and len(record["final_url"]) > MAX_STRING:
        record["final_url"] = None
    if record["error"] is not None and len(record["error"]) > MAX_ERROR:
        record["error"] = record["error"][: MAX_ERROR - 1] + "…"
    record["redirects"] = [url for url in record["redirects"] if len(url) <= MAX_STRING][:MAX_LIST]
    room = MAX_RECORD - 1024 - sum(len(url) + 8 for url in record["redirects"]) - len(record["url"])
    links: list[str] = []
    for link in record["links"]:
        if len(link) <= MAX_STRING:
            room -= len(link) + 8
            if room < 0 or len(links) == MAX_LIST:
                break
            links.append(link)
    record["links"] = links
    return record


def _item(index: int, item: Any) -> Item:
    where = f"items[{index}]"
    if not isinstance(item, dict):
        raise BadPayload(f"{where} must be a map with 'url' and 'crawl'")
    _exact_keys(item, {"url", "crawl"}, where)
    url, crawl = item["url"], item["crawl"]
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL_LENGTH:
        raise BadPayload(f"{where}: 'url' must be a non-empty string of at most {MAX_URL_LENGTH} characters")
    if not isinstance(crawl, bool):
        raise BadPayload(f"{where}: 'crawl' must be true or false")
    return Item(url, crawl)


def _exact_keys(mapping: dict[Any, Any], expected: set[str], where: str) -> None:
    keys = set(mapping)
    if keys != expected:
        missing, unknown = sorted(expected - keys), sorted(map(repr, keys - expected))
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(unknown)}"] if unknown else []
        )
        raise BadPayload(f"{where}: {'; '.join(parts)}")
