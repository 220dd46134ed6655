"""Process API framing and messages: bytes in, messages out, and back."""

import asyncio
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workloads.process_api import (
    MAX_FRAME,
    TIMINGS,
    FetchDetails,
    FetchRequest,
    FetchResult,
    FrameDecoder,
    Item,
    ItemStream,
    ProtocolError,
    Result,
    Unit,
    encode_frame,
    read_frame,
)

MESSAGES = [
    Unit(7, {"job_id": 1, "items": [{"url": "http://a.test/", "crawl": True}]}),
    FetchRequest(1, "HEAD", "http://a.test/"),
    FetchRequest(2, "GET", "http://a.test/x", want_body=True),
    FetchResult(1, "http://a.test/", 200, {"content-type": "text/html"}, b"<html>\x00\xff", truncated=True),
    FetchResult(2, "http://a.test/x", error="dns", message="name does not resolve"),
    # Version 2: what the peer measured.
    Unit(8, {"job_id": 1, "items": []}, version=2),
    FetchResult(
        3,
        "https://a.test/",
        200,
        details=FetchDetails(
            {"dns": 0.01, "connect": 0.02, "tls": 0.03, "first_byte": 0.04, "total": 0.05},
            {"version": "TLSv1.3", "issuer": "CN=ca", "subject": "CN=a.test", "not_after": 1767225600},
            "203.0.113.7",
        ),
    ),
    FetchResult(
        4, "http://a.test/", error="robots", message="disallowed", details=FetchDetails(dict.fromkeys(TIMINGS))
    ),
    FetchRequest(5, "GET", "https://a.test/", want_body=True, measure=False),
    Item({"url": "https://a.test/", "status": 200, "links": ["https://a.test/b"]}),
    Result(0, {"items": []}),
    Result(3, {}, "bad input: items[0]: 'url' must be a string"),
]
FROM_FRAME: dict[str, Any] = {
    "unit": Unit,
    "fetch": FetchRequest,
    "fetch_result": FetchResult,
    "item": Item,
    "result": Result,
}


def decode(frame: dict) -> object:
    return FROM_FRAME[frame["type"]].from_frame(frame)


def test_a_fetch_frame_says_measure_only_when_it_does_without() -> None:
    assert "measure" not in FetchRequest(1, "GET", "http://a.test/").to_frame()
    assert FetchRequest(1, "GET", "http://a.test/", measure=False).to_frame()["measure"] is False
    frame = {"type": "fetch", "id": 1, "method": "GET", "url": "http://a.test/", "want_body": False}
    assert FetchRequest.from_frame(frame).measure is True


def test_an_item_stream_sends_each_record_in_version_2_and_keeps_them_for_the_result_in_version_1() -> None:
    records = [{"url": "http://a.test/1"}, {"url": "http://a.test/2"}]
    streaming = ItemStream(2)
    sent = b"".join(streaming.add(record) for record in records)
    assert [Item.from_frame(f).record for f in FrameDecoder().feed(sent)] == records
    assert streaming.result(1, "one left") == Result(1, {"items": []}, "one left")
    keeping = ItemStream(1)
    assert [keeping.add(record) for record in records] == [b"", b""]
    assert keeping.result(0) == Result(0, {"items": records})
    assert (streaming.done, keeping.done) == (2, 2)


def test_frame_layout() -> None:
    assert encode_frame({"type": "x"}) == bytes.fromhex("00000008" + "81" + "a474797065" + "a178")


@pytest.mark.parametrize("message", MESSAGES)
def test_round_trip(message: object) -> None:
    (frame,) = FrameDecoder().feed(encode_frame(message.to_frame()))  # type: ignore[attr-defined]
    assert decode(frame) == message


def test_frames_split_at_every_byte_and_joined() -> None:
    data = b"".join(encode_frame(m.to_frame()) for m in MESSAGES)  # type: ignore[attr-defined]
    decoder = FrameDecoder()
    frames = []
    for index in range(len(data)):
        frames += decoder.feed(data[index : index + 1])
    assert [decode(f) for f in frames] == MESSAGES
    assert decoder.pending == 0
    assert [decode(f) for f in FrameDecoder().feed(data)] == MESSAGES


def test_incomplete_frame_is_pending() -> None:
    data = encode_frame({"type": "x", "pad": "y" * 100})
    decoder = FrameDecoder()
    assert decoder.feed(data[:50]) == []
    assert decoder.pending == 50
    assert decoder.feed(data[50:]) == [{"type": "x", "pad": "y" * 100}]


def test_oversized_frame_is_refused_from_its_header() -> None:
    with pytest.raises(ProtocolError, match="exceeds the 16-byte limit"):
        FrameDecoder(max_frame=16).feed(struct.pack(">I", 17))
    with pytest.raises(ProtocolError, match=f"exceeds the {MAX_FRAME}-byte limit"):
        FrameDecoder().feed(struct.pack(">I", MAX_FRAME + 1))


def test_oversized_frame_is_not_encoded() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame({"type": "x", "blob": b"\x00" * (MAX_FRAME + 1)})


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # a byte msgpack never uses
        msgpack.packb([1, 2]),
        msgpack.packb({"kind": "x"}),
        msgpack.packb({"type": 5}),
        msgpack.packb({1: "x", "type": "x"}),
        msgpack.packb({"type": "x"}) + b"\x00",  # trailing bytes inside the frame
    ],
)
def test_garbage_bodies(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack(">I", len(body)) + body)


@pytest.mark.parametrize(
    ("cls", "frame"),
    [
        (Unit, {"type": "unit", "version": 1, "unit_id": "7", "payload": {}}),
        (Unit, {"type": "unit", "version": 1, "unit_id": 7, "payload": []}),
        (Unit, {"type": "unit", "unit_id": 7, "payload": {}}),
        (FetchRequest, {"type": "fetch", "id": 1, "method": "POST", "url": "http://a.test/", "want_body": False}),
        (FetchRequest, {"type": "fetch", "id": True, "method": "GET", "url": "http://a.test/", "want_body": False}),
        (FetchRequest, {"type": "fetch", "id": 1, "method": "GET", "url": "http://a.test/", "want_body": 1}),
        (FetchResult, {**FetchResult(1, "u").to_frame(), "body": "text, not bytes"}),
        (FetchResult, {**FetchResult(1, "u").to_frame(), "status": "200"}),
        (FetchResult, {**FetchResult(1, "u").to_frame(), "headers": None}),
        (FetchResult, {**FetchResult(1, "u").to_frame(), "timing": {"dns": 0.1}, "tls": None, "address": None}),
        (FetchResult, {**FetchResult(1, "u").to_frame(), "timing": dict.fromkeys(TIMINGS, -1.0), "tls": None}),
        (FetchResult, {**FetchResult(1, "u").to_frame(), "timing": dict.fromkeys(TIMINGS), "tls": {"issuer": 1}}),
        (FetchResult, {**FetchResult(1, "u").to_frame(), "timing": dict.fromkeys(TIMINGS), "tls": None, "address": 7}),
        (FetchResult, {**FetchResult(1, "u").to_frame(), "timing": [], "tls": None, "address": None}),
        (
            FetchRequest,
            {"type": "fetch", "id": 1, "method": "GET", "url": "http://a/", "want_body": False, "measure": 0},
        ),
        (Item, {"type": "item", "record": [{"url": "http://a.test/"}]}),
        (Item, {"type": "item", "url": "http://a.test/"}),
        (Result, {"type": "result", "status": 4, "payload": {}, "error": None}),
        (Result, {"type": "result", "status": 0, "payload": {}, "error": 1}),
    ],
)
def test_wrong_field_types(cls: Any, frame: dict) -> None:
    with pytest.raises(ProtocolError):
        cls.from_frame(frame)


async def test_read_frame_from_a_stream() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode_frame({"type": "a"}) + encode_frame({"type": "b"}))
    reader.feed_eof()
    assert await read_frame(reader) == {"type": "a"}
    assert await read_frame(reader) == {"type": "b"}
    assert await read_frame(reader) is None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x00", "inside a frame header"),
        (encode_frame({"type": "a"})[:-1], "inside a frame"),
        (struct.pack(">I", MAX_FRAME + 1), "exceeds"),
        (struct.pack(">I", 1) + b"\xc1", "not valid msgpack"),
    ],
)
async def test_read_frame_errors(data: bytes, error: str) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    with pytest.raises(ProtocolError, match=error):
        await read_frame(reader)


_ints = st.integers(min_value=0, max_value=2**63 - 1)
_text = st.text(max_size=50)
_fetch_results = st.builds(
    FetchResult,
    id=_ints,
    url=_text,
    status=st.none() | st.integers(min_value=100, max_value=999),
    headers=st.dictionaries(_text, _text, max_size=5),
    body=st.binary(max_size=200),
    truncated=st.booleans(),
    error=st.none() | st.sampled_from(["timeout", "connection", "dns", "policy", "robots", "invalid_url", "limit"]),
    message=st.none() | _text,
)
_fetch_requests = st.builds(
    FetchRequest, id=_ints, method=st.sampled_from(["GET", "HEAD"]), url=_text, want_body=st.booleans()
)


@given(messages=st.lists(_fetch_results | _fetch_requests, max_size=5), cuts=st.lists(st.integers(0, 2000), max_size=5))
def test_round_trip_property(messages: list, cuts: list[int]) -> None:
    data = b"".join(encode_frame(m.to_frame()) for m in messages)
    decoder = FrameDecoder()
    frames = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        frames += decoder.feed(data[start:cut])
        start = max(start, cut)
    assert [decode(f) for f in frames] == messages
    assert decoder.pending == 0


@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_give_messages_or_protocol_errors(data: bytes) -> None:
    try:
        frames = FrameDecoder().feed(data)
    except ProtocolError:
        return
    assert all(isinstance(f, dict) and isinstance(f["type"], str) for f in frames)
