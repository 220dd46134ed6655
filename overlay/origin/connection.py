"""One fetcher's connection to the origin: the handshake, then its messages until it goes.

Everything a peer sends is checked against the torrent and our caps; a peer that breaks the
protocol, asks for more than it may, stops reading, or says nothing for `SILENCE` seconds is
disconnected. Requests are served only for pieces the reveal rules showed it (else rejected,
BEP 6), one block at a time through the server's shared upload bucket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from overlay.origin import peerwire
from overlay.origin.metainfo import Metainfo
from overlay.origin.peerwire import Block, Id, PeerWireError, Simple
from overlay.origin.reveal import Reveal, Reveals

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # seconds from connect to a whole handshake
SILENCE = 120.0  # seconds a peer may send nothing (libtorrent sends a keep-alive every 2 min at most)
KEEP_ALIVE = 60.0  # seconds between our keep-alives when we have nothing else to say
MAX_QUEUE = 256  # requests a peer may have waiting (told to it as reqq)
MAX_WRITE_BUFFER = 256 * 1024  # bytes waiting in our send buffer before the peer counts as not reading
WRITE_LIMIT = 64 * 1024  # the transport's high-water mark: a block waits until the last drained
READ_SIZE = 64 * 1024
CLIENT = "osaas origin 0.1"
MAX_COPIES = 2  # copies of a torrent one connection may be sent: a fetcher needs one at most
METADATA_REPEATS = 3  # times a peer may ask for each piece of the info dict (a flood costs nothing then)
PEX_PER_MINUTE = 5
PEX_GAP = 1.0  # seconds between two peer exchange messages to one peer


class Uploads(Protocol):
    """The server's shared upload bucket: waits until `size` bytes may go out."""

    async def take(self, size: int) -> None: ...


@dataclass(slots=True)
class Served:
    """One torrent as the connections serve it."""

    meta: Metainfo
    fd: int  # the file, open for reading
    rules: Reveal
    connections: dict[int, Connection]
    uploaded: int = 0

    def introduce(self, now: float) -> None:
        """Tell each fetcher of the others (peer exchange), as far as each may be told now."""
        fetchers = [c for c in self.connections.values() if not self.rules.is_seed(c.key)]
        addresses = [a for c in fetchers if (a := c.listen_address) is not None]
        for connection in fetchers:
            connection.tell_peers(addresses, now)

    def dispatch(self, reveals: Reveals) -> None:
        for peer, pieces in reveals.items():
            connection = self.connections.get(peer)
            if connection is not None:
                connection.show(pieces)


class Connection:
    """Serves one peer; `run` returns when the connection is over."""

    def __init__(
        self,
        key: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        peer_id: bytes,
        find: Callable[[bytes], Served | None],
        uploads: Uploads,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self._reader = reader
        self._writer = writer
        self._peer_id = peer_id
        self._find = find
        self._uploads = uploads
        self._clock = clock
        self._wire = peerwire.Reader()
        self._served: Served | None = None
        self._fast = False
        self._theirs = peerwire.TheirExtensions(None, None, None)
        self._pex_times: collections.deque[float] = collections.deque()
        self._pex_told: set[tuple[str, int]] = set()
        self._queue: collections.deque[Block] = collections.deque()
        self._wanted = asyncio.Event()
        self._joined = False
        self._bitfield_allowed = True
        self._served_bytes = 0  # blocks sent on this connection; capped at MAX_COPIES of the torrent
        self._metadata_asked = 0  # ut_metadata requests answered: they pass the upload bucket by

    @property
    def peer(self) -> str:
        address = self._writer.get_extra_info("peername")
        return f"{address[0]}:{address[1]}" if address else "?"

    async def run(self) -> None:
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writer.transport.set_write_buffer_limits(high=WRITE_LIMIT)
        sender: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                messages = await self._handshake()
            sender = asyncio.create_task(self._send_blocks(), name=f"origin blocks to {self.peer}")
            keeper = asyncio.create_task(self._keep_alive(), name=f"origin keep-alive to {self.peer}")
            try:
                self._handle(messages)
                while True:
                    async with asyncio.timeout(SILENCE):
                        data = await self._reader.read(READ_SIZE)
                    if not data:
                        return
                    self._handle(self._wire.feed(data))
                    if sender.done():
                        return sender.result()
            finally:
                keeper.cancel()
        finally:
            if sender is not None:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            self._leave()

    def _leave(self) -> None:
        served = self._served
        if served is not None and self._joined:
            served.connections.pop(self.key, None)
            served.rules.leave(self.key)
            self._joined = False

    # -- the handshake --

    async def _handshake(self) -> list[peerwire.Message]:
        messages: list[peerwire.Message] = []
        while self._wire.handshake is None:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise ConnectionResetError("closed during the handshake")
            messages = self._wire.feed(data)
        theirs = self._wire.handshake
        served = self._find(theirs.info_hash)
        if served is None:
            raise PeerWireError(f"asked for torrent {theirs.info_hash.hex()}, which the origin does not seed")
        if theirs.peer_id == self._peer_id:
            raise PeerWireError("connected to ourselves")
        self._served = served
        self._fast = theirs.has(peerwire.FAST)
        log.debug("origin: %s: handshake for %s", self.peer, theirs.info_hash.hex())
        ours = peerwire.Handshake(
            peerwire.reserved(peerwire.EXTENSIONS, peerwire.FAST), served.meta.info_hash, self._peer_id
        )
        out = [peerwire.encode_handshake(ours)]
        if self._fast:
            out.append(peerwire.encode(Simple(Id.HAVE_NONE)))
        if theirs.has(peerwire.EXTENSIONS):
            meta = served.meta
            out.append(peerwire.encode(peerwire.extended_handshake(len(meta.info), reqq=MAX_QUEUE, client=CLIENT)))
        out.append(peerwire.encode(Simple(Id.UNCHOKE)))
        self._writer.write(b"".join(out))
        served.connections[self.key] = self
        self._joined = True
        self.show(served.rules.join(self.key, self._clock()))
        return messages

    # -- what we send --

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """Where this peer takes connections: its address and the port it told us."""
        address = self._writer.get_extra_info("peername")
        port = self._theirs.listen_port
        return (str(address[0]), port) if address and port else None

    def tell_peers(self, others: list[tuple[str, int]], now: float) -> None:
        """Tell the peer of other fetchers it was not told of yet (ut_pex), as often as
        libtorrent takes it: it disconnects a peer whose seventh message in a row came
        within 60 s of the first, so at most PEX_PER_MINUTE a minute, PEX_GAP apart."""
        ext_id = self._theirs.ut_pex
        own = self.listen_address
        new = [other for other in others if other not in self._pex_told and other != own]
        if ext_id is None or not new:
            return
        while self._pex_times and now - self._pex_times[0] >= 60.0:
            self._pex_times.popleft()
        if len(self._pex_times) >= PEX_PER_MINUTE or (self._pex_times and now - self._pex_times[-1] < PEX_GAP):
            return
        new = new[: peerwire.MAX_PEX_ADDED]
        self._write(peerwire.encode(peerwire.pex_added(ext_id, new)))
        self._pex_told.update(new)
        self._pex_times.append(now)

    def show(self, pieces: list[int]) -> None:
        """Announce pieces (HAVE), as the reveal rules decided."""
        if pieces:
            self._write(b"".join(peerwire.encode(peerwire.Index(Id.HAVE, p)) for p in pieces))

    def _write(self, data: bytes) -> None:
        """Send control messages (not blocks); a peer that lets them pile up unread is cut off
        (its read loop then ends), without raising here: other connections' events call this."""
        transport = self._writer.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.debug("origin: %s does not read what we send", self.peer)
            transport.abort()
            return
        self._writer.write(data)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(KEEP_ALIVE)
            self._write(peerwire.encode(peerwire.KEEP_ALIVE))

    async def _send_blocks(self) -> None:
        """Serve queued requests through the upload bucket; a failure hangs up at once (the
        read loop, waiting on the peer, then ends)."""
        try:
            await self._send_queued()
        except (PeerWireError, OSError) as exc:
            log.debug("origin: %s: %s", self.peer, exc)
            self._writer.transport.abort()
            raise

    async def _send_queued(self) -> None:
        served = self._served
        assert served is not None
        meta = served.meta
        while True:
            while not self._queue:
                self._wanted.clear()
                await self._wanted.wait()
            request = self._queue[0]
            await self._uploads.take(request.length + 13)
            if not self._queue or self._queue[0] is not request:
                continue  # cancelled meanwhile
            self._queue.popleft()
            self._served_bytes += request.length
            if self._served_bytes > MAX_COPIES * meta.length:
                raise PeerWireError(f"asked for more than {MAX_COPIES} copies of the torrent")
            offset = request.index * meta.piece_length + request.begin
            block = os.pread(served.fd, request.length, offset)  # the page cache: microseconds
            if len(block) != request.length:
                raise OSError(f"the file of {meta.name} is shorter than its torrent says")
            self._writer.write(peerwire.encode(peerwire.Piece(request.index, request.begin, block)))
            served.uploaded += request.length
            served.rules.served(self.key, request.index, self._clock())
            await self._writer.drain()

    # -- what they send --

    def _handle(self, messages: list[peerwire.Message]) -> None:
        served = self._served
        assert served is not None
        for message in messages:
            # The bitfield (or have all, have none) comes once, before any other message but
            # the extension protocol's (libtorrent sends its extended handshake first).
            first = self._bitfield_allowed
            if not isinstance(message, peerwire.Extended | peerwire.Port) and message != peerwire.KEEP_ALIVE:
                self._bitfield_allowed = False
            match message:
                case Simple(id=Id.HAVE_ALL) if first:
                    raise ConnectionAbortedError("a seed: nothing to trade")
                case Simple(id=Id.HAVE_NONE) if first:
                    pass
                case peerwire.Bitfield() if first:
                    self._has(message.pieces(served.meta.num_pieces))
                case peerwire.Index(id=Id.HAVE, index=index):
                    if not 0 <= index < served.meta.num_pieces:
                        raise PeerWireError(f"have of piece {index} of {served.meta.num_pieces}")
                    self._has({index})
                case Block(id=Id.REQUEST):
                    self._request(message, served)
                case Block(id=Id.CANCEL):
                    self._cancel(message)
                case peerwire.Extended():
                    self._extended(message, served)
                case peerwire.HashRequest(id=Id.HASH_REQUEST):
                    self._write(peerwire.encode(peerwire.HashRequest(Id.HASH_REJECT, *_fields(message))))
                case Simple(id=Id.HAVE_ALL | Id.HAVE_NONE) | peerwire.Bitfield():
                    raise PeerWireError("a bitfield after the first message")
                case peerwire.Piece():
                    raise PeerWireError("a piece sent to a seed")
                case _:
                    pass  # keep-alive, (un)choke, (not) interested, port, suggest, allowed fast, reject

    def _has(self, pieces: set[int]) -> None:
        served = self._served
        assert served is not None
        served.dispatch(served.rules.has(self.key, pieces, self._clock()))
        if served.rules.is_seed(self.key):
            raise ConnectionAbortedError("the peer holds every piece now")

    def _request(self, request: Block, served: Served) -> None:
        meta = served.meta
        index, begin, length = request.index, request.begin, request.length
        if not 0 <= index < meta.num_pieces or not 0 < length <= peerwire.BLOCK:
            raise PeerWireError(f"a request of {length} bytes of piece {index} of {meta.num_pieces}")
        if begin < 0 or begin + length > meta.piece_size(index):
            raise PeerWireError(f"a request past the end of piece {index}")
        if len(self._queue) >= MAX_QUEUE:
            raise PeerWireError(f"more than {MAX_QUEUE} requests waiting")
        if not served.rules.may_serve(self.key, index):
            if self._fast:
                self._write(peerwire.encode(Block(Id.REJECT, index, begin, length)))
            return
        self._queue.append(request)
        self._wanted.set()

    def _cancel(self, cancel: Block) -> None:
        for waiting in self._queue:
            if (waiting.index, waiting.begin, waiting.length) == (cancel.index, cancel.begin, cancel.length):
                self._queue.remove(waiting)
                if self._fast:  # BEP 6: every request is answered, a cancelled one by a reject
                    self._write(peerwire.encode(Block(Id.REJECT, cancel.index, cancel.begin, cancel.length)))
                return

    def _extended(self, message: peerwire.Extended, served: Served) -> None:
        if message.ext_id == 0:
            self._theirs = peerwire.their_extensions(message.payload)
            return
        if message.ext_id != peerwire.OUR_UT_METADATA:
            return  # an extension we did not offer
        request = peerwire.metadata_request(message.payload)
        reply_id = self._theirs.ut_metadata
        if request is None or reply_id is None:
            return
        meta = served.meta
        self._metadata_asked += 1
        if self._metadata_asked > METADATA_REPEATS * meta.metadata_pieces:
            raise PeerWireError(f"asked for the torrent's metadata more than {METADATA_REPEATS} times over")
        if request.piece < meta.metadata_pieces:
            data = meta.metadata_piece(request.piece)
            reply = peerwire.metadata_data(reply_id, request.piece, len(meta.info), data)
        else:
            reply = peerwire.metadata_reject(reply_id, request.piece)
        self._write(peerwire.encode(reply))


def _fields(request: peerwire.HashRequest) -> tuple[bytes, int, int, int, int]:
    return request.pieces_root, request.base_layer, request.index, request.length, request.proof_layers
