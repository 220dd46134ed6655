"""The owner's input files of jobs of items and records (`osaas job submit --items-file` and
`--records-file`), read as a stream: every cap the coordinator holds (`coordinator.item_jobs`)
is checked line by line, so a file far too large is refused before it is read whole, and
never held in memory beyond what the coordinator would take.

- An items file: one item per line (UTF-8, the line end dropped; blank lines skipped).
- A records file: JSON Lines, one JSON object per line (blank lines skipped); a record is
  numbered by its place among the records, from 1, and the results name it so.

Errors are one line naming the file and the line (`FileError`, a usage error: exit code 2).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from coordinator import item_jobs
from coordinator.store import InvalidInput
from osaas.commands._shared import UsageError


class FileError(UsageError):
    """An input file that cannot be a job's input."""


# The longest line worth reading: a record at its cap, every character escaped as \\uXXXX.
_MAX_LINE = 6 * item_jobs.MAX_RECORD_BYTES + 2
# The most of a file read: blank lines and JSON's spaces cost nothing at the coordinator, but
# only so many of them are worth reading.
_MAX_FILE = 4 * item_jobs.MAX_INPUT_BYTES
_TOO_LARGE = f"is larger than {item_jobs.MAX_INPUT_BYTES} bytes; split it into several jobs"


def _lines(stream: BinaryIO, name: str, longest: int) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, the line end dropped; a line longer than
    `longest` bytes, a file past the input's cap or not UTF-8 raise `FileError`."""
    total = 0
    number = 0
    while True:
        raw = stream.readline(longest + 3)  # the line, its end, and one byte to know it is over
        if not raw:
            return
        number += 1
        total += len(raw)
        if total > _MAX_FILE:
            raise FileError(f"{name} {_TOO_LARGE}")
        line = raw.rstrip(b"\r\n")
        if len(line) > longest:
            raise FileError(f"{name}:{number}: line is longer than {longest} bytes")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise FileError(f"{name}:{number}: not UTF-8") from None
        if text.strip():
            yield number, text


def read_items(path: Path) -> list[str]:
    """The items of an items file (`osaas job submit --items-file`)."""
    items: list[str] = []
    size = 0  # as the coordinator counts it (`item_jobs.parse_input`)
    with _open(path) as stream:
        for number, text in _lines(stream, str(path), 4 * item_jobs.MAX_ITEM_LENGTH):
            if len(text) > item_jobs.MAX_ITEM_LENGTH:
                raise FileError(f"{path}:{number}: item is longer than {item_jobs.MAX_ITEM_LENGTH} characters")
            if len(items) == item_jobs.MAX_ITEMS:
                raise FileError(f"{path} has more than {item_jobs.MAX_ITEMS} items; split it into several jobs")
            size += len(text.encode()) + 8
            if size > item_jobs.MAX_INPUT_BYTES:
                raise FileError(f"{path} {_TOO_LARGE}")
            items.append(text)
    if not items:
        raise FileError(f"{path} has no items (one per line)")
    return items


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON Lines file (`osaas job submit --records-file`)."""
    records: list[dict[str, Any]] = []
    size = 0  # as the coordinator counts it (`item_jobs.parse_input`)
    with _open(path) as stream:
        for number, text in _lines(stream, str(path), _MAX_LINE):
            try:
                record = json.loads(text)
            except (ValueError, RecursionError) as exc:  # also numbers too long, nesting too deep
                raise FileError(f"{path}:{number}: not JSON ({str(exc)[:200]})") from None
            if len(records) == item_jobs.MAX_ITEMS:
                raise FileError(f"{path} has more than {item_jobs.MAX_ITEMS} records; split it into several jobs")
            try:
                size += item_jobs.record_size(record, "record") + 8
                _fits_msgpack(record)
            except InvalidInput as exc:
                raise FileError(f"{path}:{number}: {exc}") from None
            if size > item_jobs.MAX_INPUT_BYTES:
                raise FileError(f"{path} {_TOO_LARGE}")
            records.append(record)
    if not records:
        raise FileError(f"{path} has no records (one JSON object per line)")
    return records


def _fits_msgpack(value: Any) -> None:
    """Raise `InvalidInput` for an integer the wire cannot carry (JSON's have no bound)."""
    if isinstance(value, dict):
        for inner in value.values():
            _fits_msgpack(inner)
    elif isinstance(value, list):
        for inner in value:
            _fits_msgpack(inner)
    elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        raise InvalidInput("record has an integer beyond 64 bits")


def _open(path: Path) -> BinaryIO:
    """The file, opened; one far larger than any input refused before a byte is read."""
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise FileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        size = os.fstat(stream.fileno()).st_size
    except OSError:
        size = 0
    if size > _MAX_FILE:
        stream.close()
        raise FileError(f"{path} {_TOO_LARGE}")
    return stream
