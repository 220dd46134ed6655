"""The BitTorrent peer wire protocol as the origin speaks it, sans I/O: `Reader.feed(bytes)`
gives messages, `encode(message)` gives bytes. Validated once, where bytes become messages;
whatever a peer sends that breaks the protocol or our caps raises `PeerWireError`.

Covered: the handshake and messages of BEP 3; the fast extension's (BEP 6: have all, have
none, reject, allowed fast, suggest); the extension protocol's envelope (BEP 10) with
ut_metadata (BEP 9); and BEP 52's hash request, read so it can be refused. Plaintext only:
an encrypted (MSE) handshake does not start with the protocol string and is refused.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from overlay.errors import OsaasError
from overlay.origin import bencoding

PROTOCOL = b"\x13BitTorrent protocol"
HANDSHAKE_SIZE = 68
BLOCK = 16 * 1024  # what peers ask for at once; the most we serve in one piece message
# Reserved bits (byte, mask): BEP 10 extension protocol, BEP 6 fast extension, BEP 52 v2.
EXTENSIONS = (5, 0x10)
FAST = (7, 0x04)
V2 = (7, 0x10)
UT_METADATA = b"ut_metadata"
UT_PEX = b"ut_pex"
OUR_UT_METADATA = 1  # the extended message ids peers use to send us ut_metadata, ut_pex
OUR_UT_PEX = 2
MAX_PEX_ADDED = 50  # addresses in one peer exchange message
# The largest message a fetcher need send a seed: a bitfield (64 KiB: 512 Ki pieces) or an
# extended handshake; blocks flow only the other way.
DEFAULT_MAX_MESSAGE = 64 * 1024 + 16


class PeerWireError(OsaasError):
    """A peer broke the wire protocol or one of our caps; its connection is closed."""


class Id(enum.IntEnum):
    CHOKE = 0
    UNCHOKE = 1
    INTERESTED = 2
    NOT_INTERESTED = 3
    HAVE = 4
    BITFIELD = 5
    REQUEST = 6
    PIECE = 7
    CANCEL = 8
    PORT = 9
    SUGGEST = 13
    HAVE_ALL = 14
    HAVE_NONE = 15
    REJECT = 16
    ALLOWED_FAST = 17
    EXTENDED = 20
    HASH_REQUEST = 21
    HASHES = 22
    HASH_REJECT = 23


@dataclass(frozen=True, slots=True)
class Handshake:
    reserved: bytes
    info_hash: bytes
    peer_id: bytes

    def __post_init__(self) -> None:
        if len(self.reserved) != 8 or len(self.info_hash) != 20 or len(self.peer_id) != 20:
            raise ValueError("a handshake has 8 reserved bytes, a 20-byte info-hash and a 20-byte peer id")

    def has(self, bit: tuple[int, int]) -> bool:
        byte, mask = bit
        return bool(self.reserved[byte] & mask)


def reserved(*bits: tuple[int, int]) -> bytes:
    out = bytearray(8)
    for byte, mask in bits:
        out[byte] |= mask
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Simple:
    """A message with no payload: keep-alive (id None), choke, unchoke, (not) interested, have all/none."""

    id: Id | None


@dataclass(frozen=True, slots=True)
class Index:
    """have, suggest, allowed fast: one piece index."""

    id: Id
    index: int


@dataclass(frozen=True, slots=True)
class Block:
    """request, cancel, reject: a block of a piece."""

    id: Id
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Bitfield:
    bits: bytes

    def pieces(self, count: int) -> set[int]:
        """The piece indices set; PeerWireError when the size or the spare bits are wrong."""
        if len(self.bits) != -(-count // 8):
            raise PeerWireError(f"a bitfield of {len(self.bits)} bytes for {count} pieces")
        found = {i for i in range(count) if self.bits[i >> 3] & (0x80 >> (i & 7))}
        spare = len(self.bits) * 8 - count
        if spare and self.bits[-1] & ((1 << spare) - 1):
            raise PeerWireError("a bitfield with spare bits set")
        return found


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    begin: int
    block: bytes


@dataclass(frozen=True, slots=True)
class Port:
    port: int


@dataclass(frozen=True, slots=True)
class Extended:
    ext_id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class HashRequest:
    """BEP 52: hashes of a file's merkle tree (answered, or refused, with the same fields)."""

    id: Id
    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int


Message = Simple | Index | Block | Bitfield | Piece | Port | Extended | HashRequest
KEEP_ALIVE = Simple(None)

_NO_PAYLOAD = {Id.CHOKE, Id.UNCHOKE, Id.INTERESTED, Id.NOT_INTERESTED, Id.HAVE_ALL, Id.HAVE_NONE}
_INDEX = {Id.HAVE, Id.SUGGEST, Id.ALLOWED_FAST}
_BLOCK = {Id.REQUEST, Id.CANCEL, Id.REJECT}
_HASHES = {Id.HASH_REQUEST, Id.HASH_REJECT}


def encode_handshake(handshake: Handshake) -> bytes:
    return PROTOCOL + handshake.reserved + handshake.info_hash + handshake.peer_id


def encode(message: Message) -> bytes:
    match message:
        case Simple(id=None):
            return b"\0\0\0\0"
        case Simple(id=ident):
            return struct.pack(">IB", 1, ident)
        case Index(id=ident, index=index):
            return struct.pack(">IBI", 5, ident, index)
        case Block(id=ident, index=index, begin=begin, length=length):
            return struct.pack(">IBIII", 13, ident, index, begin, length)
        case Bitfield(bits=bits):
            return struct.pack(">IB", 1 + len(bits), Id.BITFIELD) + bits
        case Piece(index=index, begin=begin, block=block):
            return struct.pack(">IBII", 9 + len(block), Id.PIECE, index, begin) + block
        case Port(port=port):
            return struct.pack(">IBH", 3, Id.PORT, port)
        case Extended(ext_id=ext_id, payload=payload):
            return struct.pack(">IBB", 2 + len(payload), Id.EXTENDED, ext_id) + payload
        case HashRequest(id=ident, pieces_root=root, base_layer=base, index=index, length=length, proof_layers=proof):
            return struct.pack(">IB32sIIII", 49, ident, root, base, index, length, proof)
    raise TypeError(f"cannot encode {message!r}")


def bitfield(pieces: set[int] | frozenset[int], count: int) -> Bitfield:
    bits = bytearray(-(-count // 8))
    for i in pieces:
        bits[i >> 3] |= 0x80 >> (i & 7)
    return Bitfield(bytes(bits))


class Reader:
    """Bytes from one peer in, messages out: the handshake first, then length-prefixed messages
    of at most `max_message` bytes."""

    def __init__(self, *, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max = max_message
        self.handshake: Handshake | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """Every whole message `data` completes (the handshake is kept in `handshake`)."""
        self._buffer += data
        if self.handshake is None:
            if self._buffer[: len(PROTOCOL)] != PROTOCOL[: len(self._buffer)]:
                raise PeerWireError("not a plaintext BitTorrent handshake (an encrypted one is not accepted)")
            if len(self._buffer) < HANDSHAKE_SIZE:
                return []
            raw = bytes(self._buffer[:HANDSHAKE_SIZE])
            del self._buffer[:HANDSHAKE_SIZE]
            self.handshake = Handshake(raw[20:28], raw[28:48], raw[48:68])
        messages: list[Message] = []
        at = 0
        while len(self._buffer) - at >= 4:
            (length,) = struct.unpack_from(">I", self._buffer, at)
            if length > self._max:
                raise PeerWireError(f"a message of {length} bytes (the most we take is {self._max})")
            if len(self._buffer) - at - 4 < length:
                break
            body = bytes(self._buffer[at + 4 : at + 4 + length])
            at += 4 + length
            messages.append(parse(body))
        del self._buffer[:at]
        return messages


def parse(body: bytes) -> Message:
    """One message from its body (the bytes after the length prefix)."""
    if not body:
        return KEEP_ALIVE
    try:
        ident = Id(body[0])
    except ValueError:
        raise PeerWireError(f"unknown message id {body[0]}") from None
    payload = body[1:]
    size = len(payload)
    if ident in _NO_PAYLOAD and size == 0:
        return Simple(ident)
    if ident in _INDEX and size == 4:
        return Index(ident, *struct.unpack(">I", payload))
    if ident in _BLOCK and size == 12:
        return Block(ident, *struct.unpack(">III", payload))
    if ident is Id.BITFIELD:
        return Bitfield(payload)
    if ident is Id.PIECE and size >= 8:
        index, begin = struct.unpack_from(">II", payload)
        return Piece(index, begin, payload[8:])
    if ident is Id.PORT and size == 2:
        return Port(*struct.unpack(">H", payload))
    if ident is Id.EXTENDED and size >= 1:
        return Extended(payload[0], payload[1:])
    if ident in _HASHES and size == 48:
        root, base, index, length, proof = struct.unpack(">32sIIII", payload)
        return HashRequest(ident, root, base, index, length, proof)
    if ident is Id.HASHES and size >= 48:
        raise PeerWireError("hashes sent to a seed that asked for none")
    raise PeerWireError(f"a {ident.name.lower()} message with {size} bytes of payload")


# ---- the extension protocol (BEP 10) and ut_metadata (BEP 9) ------------------------------


def extended_handshake(metadata_size: int, *, reqq: int, client: str) -> Extended:
    """Ours: we speak ut_metadata for an info dict of `metadata_size`, and ut_pex (we send
    peer lists; a libtorrent peer takes them only from a peer that offers ut_pex)."""
    names: bencoding.Value = {UT_METADATA: OUR_UT_METADATA, UT_PEX: OUR_UT_PEX}
    payload = bencoding.encode({b"m": names, b"metadata_size": metadata_size, b"reqq": reqq, b"v": client.encode()})
    return Extended(0, payload)


@dataclass(frozen=True, slots=True)
class TheirExtensions:
    """What a peer's extended handshake says: the ids to send it ut_metadata and ut_pex with
    (None: it takes none), and the port it listens on (None: it did not say)."""

    ut_metadata: int | None
    ut_pex: int | None
    listen_port: int | None


def their_extensions(payload: bytes) -> TheirExtensions:
    try:
        value = bencoding.decode(payload)
    except bencoding.BencodeError as exc:
        raise PeerWireError(f"an extended handshake that does not decode: {exc}") from None
    if not isinstance(value, dict):
        raise PeerWireError("an extended handshake that is not a dictionary")
    names = value.get(b"m")
    names = names if isinstance(names, dict) else {}

    def ident(name: bytes) -> int | None:
        found = names.get(name)
        return found if isinstance(found, int) and 0 < found < 256 else None

    port = value.get(b"p")
    return TheirExtensions(
        ident(UT_METADATA), ident(UT_PEX), port if isinstance(port, int) and 0 < port < 65536 else None
    )


def pex_added(ext_id: int, added: list[tuple[str, int]]) -> Extended:
    """A peer exchange message (BEP 11) naming `added` (IP literal, port), the first
    MAX_PEX_ADDED of them, with no flags."""
    v4, v6 = bytearray(), bytearray()
    for host, port in added[:MAX_PEX_ADDED]:
        address = ipaddress.ip_address(host)
        (v4 if address.version == 4 else v6).extend(address.packed + struct.pack(">H", port))
    fields: dict[bytes, bencoding.Value] = {b"added": bytes(v4), b"added.f": bytes(len(v4) // 6)}
    if v6:
        fields[b"added6"], fields[b"added6.f"] = bytes(v6), bytes(len(v6) // 18)
    return Extended(ext_id, bencoding.encode(fields))


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    piece: int


def metadata_request(payload: bytes) -> MetadataRequest | None:
    """A ut_metadata request in `payload`; None for its other kinds (data, reject), which a
    seed ignores."""
    try:
        value, _ = bencoding.decode_prefix(payload)
    except bencoding.BencodeError as exc:
        raise PeerWireError(f"a ut_metadata message that does not decode: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get(b"msg_type"), int):
        raise PeerWireError("a ut_metadata message without a msg_type")
    if value[b"msg_type"] != 0:
        return None
    piece = value.get(b"piece")
    if not isinstance(piece, int) or piece < 0:
        raise PeerWireError("a ut_metadata request without a piece")
    return MetadataRequest(piece)


def metadata_data(ext_id: int, piece: int, total_size: int, data: bytes) -> Extended:
    head = bencoding.encode({b"msg_type": 1, b"piece": piece, b"total_size": total_size})
    return Extended(ext_id, head + data)


def metadata_reject(ext_id: int, piece: int) -> Extended:
    return Extended(ext_id, bencoding.encode({b"msg_type": 2, b"piece": piece}))
