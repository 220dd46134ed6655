"""The process API between a peer and a workload subprocess (see docs/workload-api.md).

Frames are a 4-byte big-endian length followed by that many bytes of msgpack encoding one
map with a "type" key. The peer writes frames to the workload's stdin, the workload writes
frames to its stdout; stderr is the workload's log. This module is sans-I/O except for the
two small asyncio helpers at the bottom.

Conversation:
    peer -> workload   {"type": "unit", ...}                       exactly once, first
    workload -> peer   {"type": "fetch", ...}                      any number
    peer -> workload   {"type": "fetch_result", ...}               one per fetch, any order
    workload -> peer   {"type": "progress", ...}                   version 2: any number
    workload -> peer   {"type": "item", ...}                       version 2: any number
    workload -> peer   {"type": "result", ...}                     exactly once, then exit

Version 2 (a manifest's `api_version = 2`) adds what the peer measured to each fetch_result
(`timing`, `tls`, `address`: `FetchDetails`; a fetch may say `measure: false` to go without),
the workload's `progress`, and its `item` frames: one item's record each, sent as soon as it
is done, so that a big unit's results reach the owner while it still runs (`ItemStream`
helps). A version 1 workload gets exactly the frames it always did.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import msgpack

if TYPE_CHECKING:  # asyncio is imported only by those who use it: it is slow to import
    import asyncio

PROTOCOL_VERSION = 1
VERSIONS = (1, 2)  # the process API versions a peer speaks; a manifest's `api_version` picks one
HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024


class ExitCode(enum.IntEnum):
    """Workload exit codes, after the Nagios plugin convention."""

    OK = 0
    PARTIAL = 1
    FAILED = 2  # retry elsewhere
    BAD_INPUT = 3  # do not retry


class ProtocolError(Exception):
    """The other side of the process API sent something that breaks the protocol."""


# ---- framing ---------------------------------------------------------------------------


def encode_frame(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Bytes in, messages out. Raises `ProtocolError` on an oversized or undecodable frame."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self._max_frame}-byte limit")
            if len(self._buffer) < HEADER.size + length:
                break
            body = bytes(self._buffer[HEADER.size : HEADER.size + length])
            del self._buffer[: HEADER.size + length]
            messages.append(decode_body(body))
        return messages

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered."""
        return len(self._buffer)


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ProtocolError(f"frame is not valid msgpack ({type(exc).__name__})") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("frame is not a map with a string 'type'")
    return message


# ---- messages --------------------------------------------------------------------------


def _fields(message: dict[str, Any], spec: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    values = {}
    for name, kind in spec.items():
        value = message.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise ProtocolError(f"{message.get('type')} frame: field {name!r} is missing or has the wrong type")
        values[name] = value
    return values


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


@dataclass(frozen=True, slots=True)
class Unit:
    """peer -> workload: the work to do. `payload` is workload-specific."""

    unit_id: int
    payload: dict[str, Any]
    version: int = PROTOCOL_VERSION

    def to_frame(self) -> dict[str, Any]:
        return {"type": "unit", "version": self.version, "unit_id": self.unit_id, "payload": self.payload}

    @classmethod
    def from_frame(cls, m: dict[str, Any]) -> Unit:
        v = _fields(m, {"unit_id": int, "payload": dict, "version": int})
        return cls(**v)


FETCH_METHODS = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """workload -> peer: please fetch `url`. Redirects are never followed by the peer.

    `measure` (version 2 only; the frame carries it only when false): false asks for the
    answer without what the peer measured, over the peer's shared connections, as in
    version 1: for a workload that wants version 2 for its `item` frames, not for timings."""

    id: int
    method: str
    url: str
    want_body: bool = False
    measure: bool = True

    def __post_init__(self) -> None:
        if self.method not in FETCH_METHODS:
            raise ProtocolError(f"fetch frame: method must be one of {FETCH_METHODS}")

    def to_frame(self) -> dict[str, Any]:
        frame = {"type": "fetch", "id": self.id, "method": self.method, "url": self.url, "want_body": self.want_body}
        if not self.measure:
            frame["measure"] = False
        return frame

    @classmethod
    def from_frame(cls, m: dict[str, Any]) -> FetchRequest:
        v = _fields(m, {"id": int, "method": str, "url": str, "want_body": bool})
        if "measure" in m:
            v.update(_fields(m, {"measure": bool}))
        return cls(**v)


class FetchError(enum.StrEnum):
    """Why a fetch produced no HTTP response."""

    TIMEOUT = "timeout"  # connect or read took longer than the peer allows
    CONNECTION = "connection"  # refused, reset, or the server broke HTTP
    DNS = "dns"  # the name does not resolve
    POLICY = "policy"  # the address policy refused the target (private, loopback, ...)
    ROBOTS = "robots"  # robots.txt disallows the URL; it was not fetched
    INVALID_URL = "invalid_url"  # not an absolute http(s) URL the peer can fetch
    LIMIT = "limit"  # the peer's per-unit fetch allowance is used up


TIMINGS = ("dns", "connect", "tls", "first_byte", "total")


@dataclass(frozen=True, slots=True)
class FetchDetails:
    """Version 2: what the peer measured of one fetch. Times are seconds; a phase that did not
    happen for this fetch is nil (`dns` on a cached name, `connect` and `tls` on a reused
    connection, `tls` over http, `first_byte` without a response). `tls` is the server's
    certificate as the peer saw it (https only): {"version", "issuer", "subject",
    "not_after"} (not_after in Unix seconds). `address` is the IP address answered from."""

    timing: dict[str, float | None]
    tls: dict[str, Any] | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        if set(self.timing) != set(TIMINGS) or not all(
            v is None or (type(v) in (int, float) and v >= 0) for v in self.timing.values()
        ):
            raise ProtocolError(f"fetch_result frame: timing must map {', '.join(TIMINGS)} to seconds or nil")
        if self.tls is not None and not (
            isinstance(self.tls.get("version"), str)
            and isinstance(self.tls.get("issuer"), str)
            and isinstance(self.tls.get("subject"), str)
            and type(self.tls.get("not_after")) in (int, type(None))
        ):
            raise ProtocolError("fetch_result frame: tls must be a map of version, issuer, subject, not_after")
        if self.address is not None and not isinstance(self.address, str):
            raise ProtocolError("fetch_result frame: address must be a string or nil")

    def to_frame(self) -> dict[str, Any]:
        return {"timing": self.timing, "tls": self.tls, "address": self.address}


@dataclass(frozen=True, slots=True)
class FetchResult:
    """peer -> workload: the answer to fetch `id`: a response, or an error with no response.

    `headers` holds lower-case names. `body` is empty unless the request wanted it, and is
    cut at the peer's body cap (then `truncated` is true).
    """

    id: int
    url: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    truncated: bool = False
    error: str | None = None  # a FetchError value
    message: str | None = None  # human-readable detail of the error
    details: FetchDetails | None = None  # version 2 only: what the peer measured

    def to_frame(self) -> dict[str, Any]:
        frame = {
            "type": "fetch_result",
            "id": self.id,
            "url": self.url,
            "status": self.status,
            "headers": self.headers,
            "body": self.body,
            "truncated": self.truncated,
            "error": self.error,
            "message": self.message,
        }
        if self.details is not None:
            frame.update(self.details.to_frame())
        return frame

    @classmethod
    def from_frame(cls, m: dict[str, Any]) -> FetchResult:
        v = _fields(
            m,
            {
                "id": int,
                "url": str,
                "status": (int, type(None)),
                "headers": dict,
                "body": bytes,
                "truncated": bool,
                "error": (str, type(None)),
                "message": (str, type(None)),
            },
        )
        if "timing" in m:  # version 2
            timing, tls = m["timing"], m.get("tls")
            if not isinstance(timing, dict) or not (tls is None or isinstance(tls, dict)):
                raise ProtocolError("fetch_result frame: timing must be a map and tls a map or nil")
            v["details"] = FetchDetails(timing, tls, m.get("address"))
        return cls(**v)


@dataclass(frozen=True, slots=True)
class Progress:
    """workload -> peer, version 2, optional: `done` of the unit's items are done, for the
    volunteer's page. It changes nothing else."""

    done: int

    def __post_init__(self) -> None:
        if self.done < 0:
            raise ProtocolError("progress frame: done must not be negative")

    def to_frame(self) -> dict[str, Any]:
        return {"type": "progress", "done": self.done}

    @classmethod
    def from_frame(cls, m: dict[str, Any]) -> Progress:
        return cls(**_fields(m, {"done": int}))


@dataclass(frozen=True, slots=True)
class Item:
    """workload -> peer, version 2, optional: one item's record, done, as the result's
    `payload.items` would hold it. The peer hands it to the coordinator while the unit runs;
    an item streamed counts, and the same item in a later frame or in the result is dropped."""

    record: dict[str, Any]

    def to_frame(self) -> dict[str, Any]:
        return {"type": "item", "record": self.record}

    @classmethod
    def from_frame(cls, m: dict[str, Any]) -> Item:
        return cls(**_fields(m, {"record": dict}))


class ItemStream:
    """A workload's records as it finishes them, sans I/O: `add` gives the bytes to write now
    (version 2: an `item` frame; version 1: nothing, the record waits for the result), and
    `result` the unit's result, holding only what was not streamed. One workload then runs on
    both versions:

        stream = ItemStream(unit.version)
        for item in items:
            stdout.write(stream.add(check(item)))
            stdout.flush()
        return stream.result(ExitCode.OK)
    """

    def __init__(self, version: int) -> None:
        self.streaming = version >= 2  # records become item frames (else they wait for the result)
        self._kept: list[dict[str, Any]] = []
        self.done = 0  # records added so far

    def add(self, record: dict[str, Any]) -> bytes:
        self.done += 1
        if self.streaming:
            return encode_frame(Item(record).to_frame())
        self._kept.append(record)
        return b""

    def result(self, status: int, error: str | None = None) -> Result:
        return Result(status, {"items": self._kept}, error)


@dataclass(frozen=True, slots=True)
class Result:
    """workload -> peer: the unit's outcome. The exit code that follows must agree with `status`."""

    status: int  # an ExitCode value
    payload: dict[str, Any]
    error: str | None = None

    def to_frame(self) -> dict[str, Any]:
        return {"type": "result", "status": self.status, "payload": self.payload, "error": self.error}

    @classmethod
    def from_frame(cls, m: dict[str, Any]) -> Result:
        v = _fields(m, {"status": int, "payload": dict, "error": (str, type(None))})
        if v["status"] not in set(ExitCode):
            raise ProtocolError("result frame: status must be 0, 1, 2 or 3")
        return cls(**v)


def answer_unit(run: Callable[[], Result], stdout: BinaryIO, log: logging.Logger) -> int:
    """A workload's last step: `run` its unit and write its result frame; a protocol error or
    a crash of `run` becomes a failed result with the reason (the traceback on stderr). The exit
    code to exit with, which agrees with the frame (2 when the frame could not be written)."""
    try:
        result = run()
    except ProtocolError as exc:
        log.error("protocol error: %s", exc)
        result = Result(ExitCode.FAILED, {"items": []}, f"protocol error: {exc}")
    except Exception as exc:
        log.exception("internal failure")
        result = Result(ExitCode.FAILED, {"items": []}, f"internal failure: {type(exc).__name__}")
    try:
        stdout.write(encode_frame(result.to_frame()))
        stdout.flush()
    except OSError as exc:
        log.error("could not write the result frame: %s", exc)
        return ExitCode.FAILED
    return result.status


# ---- reading frames from streams ------------------------------------------------------


def read_frame_blocking(stream: BinaryIO, max_frame: int = MAX_FRAME) -> dict[str, Any] | None:
    """Read one frame from a blocking binary stream; None at a clean end of stream."""
    header = _read_exactly(stream, HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise ProtocolError("stream ended inside a frame header")
    (length,) = HEADER.unpack(header)
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the {max_frame}-byte limit")
    body = _read_exactly(stream, length)
    if len(body) < length:
        raise ProtocolError("stream ended inside a frame")
    return decode_body(body)


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes: fewer only at end of stream."""
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


async def read_frame(reader: asyncio.StreamReader, max_frame: int = MAX_FRAME) -> dict[str, Any] | None:
    """Read one frame from an asyncio stream; None at a clean end of stream."""
    import asyncio

    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("stream ended inside a frame header") from exc
    (length,) = HEADER.unpack(header)
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the {max_frame}-byte limit")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("stream ended inside a frame") from exc
    return decode_body(body)
