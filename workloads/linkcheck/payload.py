"""The link-check unit and result payloads (see docs/workload-api.md): validation, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from workloads.linkcheck.check import Item, Verdict

MAX_ITEMS = 1000
MAX_URL_LENGTH = 8192


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


def result_payload(verdicts: Iterable[Verdict]) -> dict[str, Any]:
    return {"items": [verdict.to_dict() for verdict in verdicts]}


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
