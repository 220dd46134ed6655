"""Jobs whose input is a list of items or a file of records (a job model's `input = "items"`
or `"records"`), pure: the input checked, its items split by count into parts, and what a
unit's workload receives.

- items: `{"items": [str, ...]}`, each a non-empty string of at most MAX_ITEM_LENGTH
  characters; an item given twice is one item. A record names its item by the string.
- records: `{"records": [map, ...]}`, each a JSON object (string keys; strings, numbers,
  booleans, nil, lists and maps inside, at most MAX_DEPTH deep) of at most MAX_RECORD_BYTES as
  compact JSON. Its item is its number in the file, from 1, as a string ("1", "2", ...).

Both: 1..MAX_ITEMS items, at most MAX_INPUT_BYTES in all (UTF-8, plus 8 per item). Each item
counts as one URL against its owner's limits. The items are split into at most MAX_PARTS parts
of at least PART_ITEMS, in order; each part is a unit key of its own (`part_key`), so several
peers work on a job at once (one live lease per key). A part is no website: the coordinator
does not pace it; a workload that fetches is paced by its peer's egress.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from coordinator import unit_sizing
from coordinator.store import InvalidInput
from coordinator.url_jobs import PART_PREFIX, NewItem

MAX_ITEMS = 100_000
MAX_ITEM_LENGTH = 8 * 1024
MAX_RECORD_BYTES = 64 * 1024
MAX_INPUT_BYTES = 4 * 1024 * 1024  # the whole input fits a request body (`overlay.wire.MAX_BODY`)
MAX_DEPTH = 32
# A lease answer takes no further unit once its units' records weigh this much (msgpack): one
# unit is at most a job's input (a request body), so an answer stays within what a peer reads.
LEASE_RECORD_BYTES = 4 * 1024 * 1024
PART_ITEMS = unit_sizing.DEFAULT_UNIT  # a part holds at least this many items: a new peer's unit
MAX_PARTS = 64


@dataclass(frozen=True, slots=True)
class ListInput:
    """An items or records job's input, checked: its items in order, for records each with
    its record."""

    kind: str  # "items" | "records"
    items: tuple[str, ...]
    records: tuple[dict[str, Any], ...] | None = None

    def summary(self) -> dict[str, Any]:
        """What the job's row keeps of its input (the items themselves are rows of their own)."""
        return {self.kind: len(self.items)}


def parse_input(kind: str, obj: Any) -> ListInput:
    """Validate an items or records job's input map; raise `InvalidInput` with a one-line reason."""
    if not isinstance(obj, dict) or set(obj) != {kind}:
        raise InvalidInput(f"input must be a map with '{kind}' only (this bundle's jobs take {kind})")
    given = obj[kind]
    if not isinstance(given, list) or not 1 <= len(given) <= MAX_ITEMS:
        raise InvalidInput(f"input.{kind} must be a list of 1..{MAX_ITEMS} {kind}")
    total = 0
    if kind == "items":
        for i, item in enumerate(given):
            if not isinstance(item, str) or not 0 < len(item) <= MAX_ITEM_LENGTH:
                raise InvalidInput(
                    f"input.items[{i}] must be a non-empty string of at most {MAX_ITEM_LENGTH} characters"
                )
            total += len(item.encode("utf-8", "surrogatepass")) + 8
            if total > MAX_INPUT_BYTES:
                raise InvalidInput(f"input.items is larger than {MAX_INPUT_BYTES} bytes")
        return ListInput(kind, tuple(dict.fromkeys(given)))
    for i, record in enumerate(given):
        size = record_size(record, f"input.records[{i}]")
        total += size + 8
        if total > MAX_INPUT_BYTES:
            raise InvalidInput(f"input.records is larger than {MAX_INPUT_BYTES} bytes")
    return ListInput(kind, tuple(str(n) for n in range(1, len(given) + 1)), tuple(given))


def record_size(record: Any, where: str) -> int:
    """The record's size as compact JSON (UTF-8), once it is checked to be a JSON object
    within the caps; raise `InvalidInput`."""
    if not isinstance(record, dict):
        raise InvalidInput(f"{where} must be a JSON object")
    _check_json(record, where, 0)
    try:
        size = len(json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidInput(f"{where} is not JSON ({exc})") from None
    if size > MAX_RECORD_BYTES:
        raise InvalidInput(f"{where} is larger than {MAX_RECORD_BYTES} bytes as JSON")
    return size


def _check_json(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where} has a key that is not a string")
            _check_json(inner, where, depth + 1)
    elif isinstance(value, list):
        for inner in value:
            _check_json(inner, where, depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{where} has a number JSON cannot hold")
    elif value is not None and not isinstance(value, (str, int, bool)):
        raise InvalidInput(f"{where} has a {type(value).__name__}, which JSON cannot hold")


def part_key(job_id: int, part: int) -> str:
    """A part's unit key, "#JOB/PART": never an origin, so never paced (`url_jobs.is_website`)."""
    return f"{PART_PREFIX}{job_id}/{part}"


def parts(count: int) -> int:
    """How many parts `count` items are split into."""
    return max(1, min(MAX_PARTS, count // PART_ITEMS))


def seed_items(job_id: int, job: ListInput) -> list[NewItem]:
    """The job's items, each in its part (contiguous runs, in order)."""
    count = len(job.items)
    split = parts(count)
    return [
        NewItem(url=item, unit_key=part_key(job_id, i * split // count), depth=0, crawl=False)
        for i, item in enumerate(job.items)
    ]


def unit_payload(job_id: int, items: Iterable[str], records: Iterable[Any] | None = None) -> dict[str, Any]:
    """What a peer's workload receives for one unit of an items job, or (`records`: each
    item's record, in the same order) of a records job."""
    if records is None:
        return {"job_id": job_id, "items": [{"item": item} for item in items]}
    return {
        "job_id": job_id,
        "items": [{"item": item, "record": record} for item, record in zip(items, records, strict=True)],
    }
