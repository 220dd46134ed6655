"""Records as the store keeps them: a string field equal to the item costs one byte, and
records kept before read the same."""

from __future__ import annotations

from coordinator.sql import kept_records
from overlay.wire import encode

URL = "http://a.test/some/long/path/to/a/page.html"


def test_a_field_equal_to_the_item_is_kept_as_a_mark_and_read_back() -> None:
    values = ["ok", 200, URL, [URL], None, "http://a.test/other"]
    packed = kept_records.pack(values, URL)
    assert len(packed) < len(encode(values)) - len(URL) + 2
    assert kept_records.unpack(packed, URL) == values  # the list holding the URL is left alone


def test_records_kept_before_the_mark_read_the_same() -> None:
    values = ["broken", 404, URL, [], "404 Not Found"]
    assert kept_records.unpack(encode(values), URL) == values
    assert kept_records.unpack(encode([]), URL) == []
