"""The owner's files of items and records (`osaas job submit --items-file / --records-file`):
read as streams, refused in one line naming the line, before a file far too large is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator import item_jobs
from osaas import job_files
from osaas.job_files import FileError


def test_items_one_per_line_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "items.txt"
    path.write_bytes("first item\r\n\nsecond, with spaces  \n  \ncafé".encode())
    assert job_files.read_items(path) == ["first item", "second, with spaces  ", "café"]


def test_records_are_json_objects_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    records = [{"a": 1, "b": [1.5, None, True, "x"]}, {}, {"nested": {"deep": {"er": "é"}}}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert job_files.read_records(path) == records


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"\n\n", "has no items (one per line)"),
        ("long.txt", b"ok\n" + b"x" * 8193 + b"\n", ":2: item is longer than 8192 characters"),
        ("huge-line.txt", b"x" * 40_000, ":1: line is longer than 32768 bytes"),
        ("latin1.txt", b"caf\xe9\n", ":1: not UTF-8"),
    ],
)
def test_bad_items_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FileError) as info:
        job_files.read_items(path)
    assert str(info.value).endswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "has no records (one JSON object per line)"),
        ('{"a": 1}\n[1, 2]\n', ":2: record must be a JSON object"),
        ('{"a": 1}\n{"a": \n', ":2: not JSON (Expecting value: line 1 column 7 (char 6))"),
        ('{"a": NaN}\n', ":1: record has a number JSON cannot hold"),
        ('{"a": 1e999}\n', ":1: record has a number JSON cannot hold"),
        ('{"a": 18446744073709551616}\n', ":1: record has an integer beyond 64 bits"),
        ('{"a": "' + "x" * 70_000 + '"}\n', ":1: record is larger than 65536 bytes as JSON"),
        ("[" * 40 + "]" * 40 + "\n", ":1: record must be a JSON object"),
        ('{"a":' * 40 + "1" + "}" * 40 + "\n", ":1: record is nested deeper than 32 levels"),
    ],
)
def test_bad_records_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(content)
    with pytest.raises(FileError) as info:
        job_files.read_records(path)
    assert str(info.value).endswith(message) and "\n" not in str(info.value)


def test_too_many_and_too_large_are_refused_while_reading(tmp_path: Path) -> None:
    many = tmp_path / "many.txt"
    many.write_text("x\n" * (item_jobs.MAX_ITEMS + 1))
    with pytest.raises(FileError, match=f"has more than {item_jobs.MAX_ITEMS} items; split it into several jobs$"):
        job_files.read_items(many)
    large = tmp_path / "large.txt"
    large.write_text(("y" * 8000 + "\n") * 600)
    with pytest.raises(FileError, match="is larger than 4194304 bytes; split it into several jobs$"):
        job_files.read_items(large)
    # Far beyond any input: refused by its size before it is read.
    sparse = tmp_path / "sparse.txt"
    with sparse.open("wb") as out:
        out.truncate(1 << 30)
    with pytest.raises(FileError, match="is larger than 4194304 bytes"):
        job_files.read_items(sparse)
    with pytest.raises(FileError, match="cannot read"):
        job_files.read_items(tmp_path / "missing.txt")
