"""A finished item's record as the store keeps it (items.record): msgpack of the model's stored
fields, where a string field that equals the item itself (its URL, say: a link checker's
final URL when nothing redirected) is kept as a one-byte mark instead of the string again.
Records kept before the mark existed read the same: a checked record never holds an ext type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

_SAME_AS_ITEM = msgpack.ExtType(1, b"")


def pack(values: Sequence[Any], item: str) -> bytes:
    return msgpack.packb([_SAME_AS_ITEM if v == item and isinstance(v, str) else v for v in values], use_bin_type=True)


def unpack(record: bytes, item: str) -> list[Any]:
    values = msgpack.unpackb(record, raw=False, strict_map_key=True)
    return [item if isinstance(v, msgpack.ExtType) and v == _SAME_AS_ITEM else v for v in values]
