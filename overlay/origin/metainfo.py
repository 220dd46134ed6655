"""A single-file .torrent as the origin serves it: the info dict's exact bytes (ut_metadata
hands them out; their SHA-1 is the v1 info-hash), the piece geometry, the v1 piece hashes,
and the v2 piece layer of the file (what BEP 52 hash requests are answered from).

Read from a .torrent the coordinator made itself (`overlay.torrent.make_torrent`), but checked
all the same: a torrent this module cannot serve exactly is refused with `MetainfoError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from overlay.errors import OsaasError
from overlay.origin import bencoding

METADATA_PIECE = 16 * 1024  # BEP 9: the info dict travels in pieces of 16 KiB


class MetainfoError(OsaasError):
    """A .torrent the origin cannot serve (malformed, several files, sizes that do not add up)."""


@dataclass(frozen=True, slots=True)
class Metainfo:
    info: bytes  # the info dict, bencoded, exactly as hashed
    info_hash: bytes  # v1: SHA-1 of `info`
    name: str
    length: int  # bytes of the one file
    piece_length: int
    piece_hashes: bytes  # v1: 20 bytes a piece
    piece_layer: bytes  # v2: 32 bytes a piece, b"" when the torrent has none

    def __post_init__(self) -> None:
        if self.length <= 0 or self.piece_length <= 0:
            raise MetainfoError("a torrent needs a positive length and piece length")
        if len(self.piece_hashes) != 20 * self.num_pieces:
            raise MetainfoError(f"{len(self.piece_hashes)} bytes of v1 piece hashes for {self.num_pieces} pieces")

    @property
    def num_pieces(self) -> int:
        return -(-self.length // self.piece_length)

    def piece_size(self, index: int) -> int:
        if not 0 <= index < self.num_pieces:
            raise IndexError(index)
        return min(self.piece_length, self.length - index * self.piece_length)

    @property
    def metadata_pieces(self) -> int:
        return -(-len(self.info) // METADATA_PIECE)

    def metadata_piece(self, index: int) -> bytes:
        if not 0 <= index < self.metadata_pieces:
            raise IndexError(index)
        return self.info[index * METADATA_PIECE : (index + 1) * METADATA_PIECE]


def parse(torrent: bytes) -> Metainfo:
    """The Metainfo of a bencoded single-file .torrent (v1 or hybrid)."""
    top = bencoding.decode(torrent)
    if not isinstance(top, dict) or not isinstance(top.get(b"info"), dict):
        raise MetainfoError("not a .torrent: no info dictionary")
    info = _raw_info(torrent)
    fields = top[b"info"]
    assert isinstance(fields, dict)
    name, length, piece_length, pieces = (
        fields.get(b"name"),
        fields.get(b"length"),
        fields.get(b"piece length"),
        fields.get(b"pieces"),
    )
    if not isinstance(name, bytes) or not isinstance(length, int) or not isinstance(piece_length, int):
        raise MetainfoError("the origin serves single-file torrents with a name, length and piece length")
    if not isinstance(pieces, bytes):
        raise MetainfoError("the torrent has no v1 piece hashes; the origin serves v1 and hybrid torrents")
    layer = b""
    layers = top.get(b"piece layers")
    if isinstance(layers, dict) and len(layers) == 1:
        (only,) = layers.values()
        layer = only if isinstance(only, bytes) else b""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise MetainfoError("the file name is not UTF-8") from None
    return Metainfo(info, hashlib.sha1(info).digest(), text, length, piece_length, pieces, layer)


def _raw_info(torrent: bytes) -> bytes:
    """The exact bytes of the top-level "info" value: walk the top dictionary's keys."""
    at = 1
    while torrent[at : at + 1] != b"e":
        key, after_key = bencoding.decode_prefix(torrent, at)
        end = bencoding.span(torrent, after_key)
        if key == b"info":
            return torrent[after_key:end]
        at = end
    raise MetainfoError("not a .torrent: no info dictionary")
