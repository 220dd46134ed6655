"""Bencoding (BEP 3): `encode` for what we send, `decode` for what peers send, bounded in size
and depth, and `decode_prefix` for a value followed by raw bytes (a ut_metadata data message).
Dictionary keys stay bytes; a malformed value raises `BencodeError`.
"""

from __future__ import annotations

from overlay.errors import OsaasError

Value = int | bytes | list["Value"] | dict[bytes, "Value"]

MAX_DEPTH = 32
_DIGITS = b"0123456789"


class BencodeError(OsaasError):
    """Bytes that are not one well-formed bencoded value."""


def encode(value: Value | str) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value | str, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencoding has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        _encode(value.encode("utf-8"), out)
    elif isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, list):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key in sorted(value):
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """The one value `data` holds; BencodeError if anything is wrong or left over."""
    value, end = decode_prefix(data)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the bencoded value")
    return value


def decode_prefix(data: bytes, start: int = 0) -> tuple[Value, int]:
    """The value that starts at `start` and the offset just after it."""
    try:
        return _decode(data, start, 0)
    except (IndexError, ValueError) as exc:
        raise BencodeError(f"malformed bencoding: {exc}") from None


def span(data: bytes, start: int = 0) -> int:
    """The offset just after the value at `start` (to take a value's exact bytes)."""
    return decode_prefix(data, start)[1]


def _decode(data: bytes, at: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("bencoding nested too deep")
    lead = data[at : at + 1]
    if lead == b"i":
        end = data.index(b"e", at)
        text = data[at + 1 : end]
        digits = text[1:] if text.startswith(b"-") else text
        if not digits.isdigit() or text == b"-0" or (digits.startswith(b"0") and digits != b"0"):
            raise BencodeError(f"bad integer {text[:20]!r}")
        return int(text), end + 1
    if lead == b"l":
        items: list[Value] = []
        at += 1
        while data[at : at + 1] != b"e":
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        return items, at + 1
    if lead == b"d":
        mapping: dict[bytes, Value] = {}
        at += 1
        previous: bytes | None = None
        while data[at : at + 1] != b"e":
            key, at = _decode(data, at, depth + 1)
            if not isinstance(key, bytes):
                raise BencodeError("a dictionary key that is not a string")
            if previous is not None and key <= previous:
                raise BencodeError("dictionary keys out of order or repeated")
            previous = key
            mapping[key], at = _decode(data, at, depth + 1)
        return mapping, at + 1
    if lead and lead in _DIGITS:
        colon = data.index(b":", at)
        if colon - at > 10:
            raise BencodeError("string length too long")
        length = int(data[at:colon])
        end = colon + 1 + length
        if end > len(data):
            raise BencodeError("string runs past the end")
        return data[colon + 1 : end], end
    raise BencodeError(f"unexpected byte {lead!r} at {at}")
