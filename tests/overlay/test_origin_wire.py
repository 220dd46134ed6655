"""The origin's pure parts that touch bytes: bencoding, the .torrent it serves, the peer wire
codec. Bytes in, messages out; no sockets."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.origin import bencoding, metainfo, peerwire
from overlay.origin.peerwire import Block, Id, Index, PeerWireError, Simple
from overlay.torrent import info_hash_of, make_torrent

values = st.recursive(
    st.integers() | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_bencoding_round_trips(value: bencoding.Value) -> None:
    assert bencoding.decode(bencoding.encode(value)) == value


@pytest.mark.parametrize(
    "bad",
    [
        b"i01e",
        b"i-0e",
        b"ie",
        b"i1x2e",
        b"5:abc",
        b"d1:b0:1:a0:e",
        b"d1:a0:1:a0:e",
        b"li1e",
        b"x",
        b"i1ei2e",
        b"di1e0:e",
    ],
)
def test_malformed_bencoding_is_refused(bad: bytes) -> None:
    with pytest.raises(bencoding.BencodeError):
        bencoding.decode(bad)


def test_nesting_is_bounded() -> None:
    with pytest.raises(bencoding.BencodeError):
        bencoding.decode(b"l" * 1000 + b"e" * 1000)


def test_a_torrent_of_ours_is_served_as_it_hashes(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    path.write_bytes(os.urandom(300_000))
    torrent = make_torrent(path)
    meta = metainfo.parse(torrent)
    assert meta.info_hash == info_hash_of(torrent) == hashlib.sha1(meta.info).digest()
    assert (meta.name, meta.length) == ("bundle.tar", 300_000)
    assert sum(meta.piece_size(i) for i in range(meta.num_pieces)) == meta.length
    assert b"".join(meta.metadata_piece(i) for i in range(meta.metadata_pieces)) == meta.info
    assert len(meta.piece_layer) == 32 * meta.num_pieces  # hybrid: v2 piece layer kept


def test_a_torrent_of_several_files_is_refused() -> None:
    info: dict[bytes, bencoding.Value] = {b"name": b"d", b"piece length": 16384, b"files": [], b"pieces": b""}
    with pytest.raises(metainfo.MetainfoError):
        metainfo.parse(bencoding.encode({b"info": info}))


HANDSHAKE = peerwire.Handshake(peerwire.reserved(peerwire.FAST, peerwire.EXTENSIONS), b"h" * 20, b"p" * 20)
MESSAGES: list[peerwire.Message] = [
    peerwire.KEEP_ALIVE,
    Simple(Id.INTERESTED),
    Simple(Id.HAVE_NONE),
    Index(Id.HAVE, 7),
    Block(Id.REQUEST, 3, 16384, 16384),
    Block(Id.CANCEL, 3, 0, 100),
    peerwire.Bitfield(b"\xf0"),
    peerwire.Port(6881),
    peerwire.Extended(0, b"d1:md11:ut_metadatai3eee"),
    peerwire.HashRequest(Id.HASH_REQUEST, b"r" * 32, 0, 0, 512, 3),
]


@given(st.lists(st.integers(min_value=1, max_value=400), max_size=20))
def test_messages_come_out_whole_however_the_bytes_are_cut(cuts: list[int]) -> None:
    data = peerwire.encode_handshake(HANDSHAKE) + b"".join(peerwire.encode(m) for m in MESSAGES)
    reader = peerwire.Reader()
    got: list[peerwire.Message] = []
    at = 0
    for size in [*cuts, len(data)]:
        got += reader.feed(data[at : at + size])
        at += size
    assert reader.handshake == HANDSHAKE
    assert got == MESSAGES
    assert reader.buffered == 0


def test_an_encrypted_handshake_is_refused_at_its_first_byte() -> None:
    with pytest.raises(PeerWireError, match="plaintext"):
        peerwire.Reader().feed(b"\x8f" + os.urandom(95))


@pytest.mark.parametrize(
    "body",
    [
        struct.pack(">B", 99),  # unknown id
        struct.pack(">BI", Id.REQUEST, 1),  # short request
        struct.pack(">BI", Id.INTERESTED, 1),  # payload where none belongs
        struct.pack(">B", Id.EXTENDED),  # no extended id
    ],
)
def test_malformed_messages_are_refused(body: bytes) -> None:
    reader = peerwire.Reader()
    reader.feed(peerwire.encode_handshake(HANDSHAKE))
    with pytest.raises(PeerWireError):
        reader.feed(struct.pack(">I", len(body)) + body)


def test_a_message_over_the_cap_is_refused_before_it_is_read() -> None:
    reader = peerwire.Reader(max_message=1000)
    reader.feed(peerwire.encode_handshake(HANDSHAKE))
    with pytest.raises(PeerWireError, match="1001 bytes"):
        reader.feed(struct.pack(">I", 1001))


def test_a_bitfield_is_checked_against_the_piece_count() -> None:
    assert peerwire.bitfield({0, 9}, 10).pieces(10) == {0, 9}
    with pytest.raises(PeerWireError):
        peerwire.Bitfield(b"\xff\xff").pieces(10)  # spare bits set
    with pytest.raises(PeerWireError):
        peerwire.Bitfield(b"\xff").pieces(10)  # too short


def test_their_extensions_and_ours() -> None:
    ours = peerwire.extended_handshake(1234, reqq=256, client="x")
    decoded = bencoding.decode(ours.payload)
    assert isinstance(decoded, dict) and decoded[b"metadata_size"] == 1234
    theirs = peerwire.their_extensions(b"d1:md11:ut_metadatai2e6:ut_pexi1ee1:pi6881ee")
    assert theirs == peerwire.TheirExtensions(ut_metadata=2, ut_pex=1, listen_port=6881)
    assert peerwire.their_extensions(b"d1:md11:ut_metadatai999eee").ut_metadata is None
    with pytest.raises(PeerWireError):
        peerwire.their_extensions(b"not bencoded")


def test_metadata_requests_and_peer_exchange() -> None:
    assert peerwire.metadata_request(b"d8:msg_typei0e5:piecei2ee") == peerwire.MetadataRequest(2)
    assert peerwire.metadata_request(b"d8:msg_typei2e5:piecei0ee") is None
    with pytest.raises(PeerWireError):
        peerwire.metadata_request(b"d5:piecei0ee")
    pex = peerwire.pex_added(3, [("10.0.0.1", 6881), ("::1", 80)])
    fields = bencoding.decode(pex.payload)
    assert isinstance(fields, dict)
    assert fields[b"added"] == bytes([10, 0, 0, 1]) + struct.pack(">H", 6881)
    assert fields[b"added.f"] == b"\0"
    assert fields[b"added6"] == bytes(15) + b"\x01" + struct.pack(">H", 80)
