"""Result records: a unit's reported records checked against its workload's job model
(`workloads.bundle.job_model`), and every workload's results as JSON Lines and CSV.

A report's payload is `{"items": [record, ...]}`, one record per item it did, each a map with
every declared field (nil only where the type ends in "?"); fields the model does not declare
are dropped. Caps hold whatever a model says: MAX_STRING characters per string (list entries
too), MAX_LIST entries per list, MAX_RECORD (strings' characters plus 8 per value) per record.
A record that breaks a rule refuses the whole report with a one-line reason naming the record
and field (`SchemaError`).

Pure, and fast enough for the coordinator's report path: a record is checked with a few exact
type tests per field (msgpack gives exact types; bool is not an int here, nor an int a float).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from overlay.errors import OsaasError
from workloads.bundle import JobModel

_LINKS = "links"  # a crawl's new items

MAX_STRING = 8 * 1024  # a URL fits
MAX_LIST = 10_000
MAX_RECORD = 1024 * 1024
MAX_SHOWN = 8 * 1024  # characters of one CSV cell
# What a spreadsheet reads as the start of a formula (OWASP CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# C0 and C1 control characters but tab: escape sequences a terminal would obey.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,)}


class SchemaError(OsaasError):
    """A reported record that does not follow its workload's declared schema."""

    code = "invalid_input"


class Record(NamedTuple):
    """One checked record: its item (`url`: the value of the model's key field, the URL or the
    item), the stored fields' values (in `JobModel.stored` order),
    the value job status counts it as, and for crawls the links and the page they are on."""

    url: str
    values: list[Any]
    counted_as: str | None
    links: list[str]
    links_at: str | None


class Checker:
    """A job model's record check, worked out once per model."""

    def __init__(self, model: JobModel) -> None:
        self.model = model
        self._fields = [(f.name, f.kind, f.nullable) for f in model.fields]
        self._stored = [f.name for f in model.stored]
        self._crawl = model.crawl
        self._key = model.key
        self._links_limit = model.links_limit  # what a record reports past it is dropped

    def records(self, payload: Any) -> list[Record]:
        """The payload's records, each checked; raise `SchemaError`."""
        if type(payload) is not dict or type(payload.get("items")) is not list:
            raise SchemaError("payload must be a map with a list 'items'")
        return [self.record(raw, i) for i, raw in enumerate(payload["items"])]

    def record(self, raw: Any, index: int) -> Record:
        if type(raw) is not dict:
            raise SchemaError(f"payload.items[{index}] must be a map")
        size = 0
        for name, kind, nullable in self._fields:
            try:
                value = raw[name]
            except KeyError:
                raise SchemaError(f"payload.items[{index}].{name} is missing") from None
            size += 8
            if value is None:
                if not nullable:
                    raise SchemaError(f"payload.items[{index}].{name} must not be nil")
            elif kind == "str":
                if type(value) is not str:
                    raise _wrong(index, name, kind, nullable)
                size += len(value)
                if len(value) > MAX_STRING:
                    raise SchemaError(f"payload.items[{index}].{name} is longer than {MAX_STRING} characters")
            elif kind == "list[str]":
                if type(value) is not list:
                    raise _wrong(index, name, kind, nullable)
                if len(value) > MAX_LIST:
                    raise SchemaError(f"payload.items[{index}].{name} has more than {MAX_LIST} entries")
                for entry in value:
                    if type(entry) is not str:
                        raise _wrong(index, name, kind, nullable)
                    if len(entry) > MAX_STRING:
                        raise SchemaError(
                            f"payload.items[{index}].{name} has an entry longer than {MAX_STRING} characters"
                        )
                    size += len(entry) + 8
            elif type(value) not in _SCALARS[kind]:
                raise _wrong(index, name, kind, nullable)
        if size > MAX_RECORD:
            raise SchemaError(f"payload.items[{index}] is larger than {MAX_RECORD} bytes")
        model = self.model
        return Record(
            raw[self._key],
            [raw[name] for name in self._stored],
            None if model.count is None else raw[model.count],
            raw[_LINKS][: self._links_limit] if self._crawl else [],
            None if model.links_at is None else raw[model.links_at],
        )


def _wrong(index: int, name: str, kind: str, nullable: bool) -> SchemaError:
    return SchemaError(f"payload.items[{index}].{name} must be {kind}{' or nil' if nullable else ''}")


def check_unit_items(records: Sequence[Record], unit_urls: Mapping[str, Any], key: str = "url") -> None:
    """Raise `SchemaError` unless every record is one of the unit's items, each at most once
    (`key`: the field records name their item by)."""
    seen: set[str] = set()
    for i, record in enumerate(records):
        if record.url not in unit_urls:
            raise SchemaError(f"payload.items[{i}].{key} is not an item of this unit")
        if record.url in seen:
            raise SchemaError(f"payload.items[{i}].{key} is reported twice")
        seen.add(record.url)


# ---- every workload's downloads ---------------------------------------------------------------


def to_json_lines(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """One JSON object per row with `columns` as its keys, in order (`JobModel.columns`)."""
    return "".join(json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False) + "\n" for row in rows)


def to_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """RFC 4180 CSV with a header of `columns`: nil is empty, a list is its entries joined by
    spaces, booleans are true/false; every cell is neutralised for spreadsheets and capped."""
    out = io.StringIO()
    # RFC 4180 line ends, which also make the writer quote any cell holding a CR or LF.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(_cell(row.get(c))) for c in columns])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def csv_cell(text: str) -> str:
    """`text` as a CSV cell no spreadsheet runs: a leading formula character gets a quote
    before it (shown, not evaluated), and the cell is capped."""
    if len(text) > MAX_SHOWN:
        text = text[: MAX_SHOWN - 1] + "…"
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def plain(text: str) -> str:
    """`text` (a workload's, a website's) safe for a terminal: capped, control characters
    shown as U+FFFD."""
    if len(text) > MAX_SHOWN:
        text = text[: MAX_SHOWN - 1] + "…"
    return _CONTROLS.sub("\ufffd", text)
