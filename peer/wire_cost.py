"""What web traffic costs at the network interface, and how much of it may arrive unpaid.

Pure: sizes in, sizes out; no sockets and no clock. The egress (peer.egress) applies these at
the edge and the allowance (peer.allowance) pays them.

A volunteer's rates are about their link, and the link carries frames, not payload. Each TCP
segment of up to an MSS of payload also carries Ethernet (14 bytes), IP (20, or 40 for IPv6)
and TCP headers (20, plus 12 of timestamps); the receiver answers with acknowledgements, frames
of headers only that travel the other way: one for every two full segments (delayed ACK),
more when a tiny receive buffer makes the receiver send a window update at every read
(measured through 4 kB buffers: one per 1.3 segments; through 8 kB, the smallest used here,
one per 4.5, the kernel coalescing segments). Connections open and close with a few
header-only frames each way. So `on_wire` turns a payload into the bytes the interface counts
(about 4.6% more over IPv4 at MTU 1500, 6% over IPv6) and `acks_on_wire` says what receiving
it costs in the other direction (2.3%, 3% over IPv6).

And the kernel receives before the peer reads: whatever fits the socket's receive buffer and
the HTTP client's own buffer has crossed the link while the peer still waits to pay for it.
With autotuning (tcp_rmem) a receive buffer grows to megabytes, so a server could send
seconds of the volunteer's rate that nobody paid for. `fetch_window` sizes those buffers from
the rate and the number of concurrent fetches, so that all of them together hold at most about
WINDOW_SECONDS of the rate, and says how much one fetch may have unread (`unread`): what the
fetch pays as a deposit before it sends its request. `windows_capacity` is what the windows
of all fetches under way may hold together: a fetch waits for room before its deposit
(peer.allowance.WindowPool), so many concurrent fetches at a small rate, whose windows are at
their floors, do not together let in more than that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_SECONDS = 0.25  # the rate's worth of bytes that all fetches' buffers together may hold
# and one fetch's at most: its deposit must stay well under the rate bucket's burst (0.2 s,
# peer.rate_limit), or the time spent waiting for the part beyond it is lost to every fetch
FETCH_SECONDS = 0.1
DEFAULT_FETCHES = 8  # concurrent fetches assumed when the volunteer set no limit
# SO_RCVBUF at its smallest (the kernel doubles it). Smaller buffers drop segments: the kernel
# charges each its whole memory, more than its payload, so a window of a few segments overflows
# and the sender sends again what the interface already counted (4 kB: one segment in eight
# dropped, 7-9% more at the interface than was paid for; 8 kB: within the budget).
MIN_RECEIVE_BUFFER = 8192
MAX_RECEIVE_BUFFER = 4 * 1024 * 1024
MIN_READ = 2048  # the HTTP client's buffer and the egress's read size, at their smallest
MAX_READ_BUFFER = 256 * 1024  # aiohttp's default read_bufsize
MAX_READ_CHUNK = 16 * 1024
UNLIMITED_READ_BUFFER = 64 * 1024
CONNECTION_FRAMES = 4  # header-only frames each way per fetch: handshake, close, the request's ACK


@dataclass(frozen=True, slots=True)
class Framing:
    """How payload is cut into frames: `mss` payload bytes per segment, `header` bytes of
    headers per frame (Ethernet + IP + TCP with timestamps)."""

    mss: int
    header: int


IPV4 = Framing(mss=1448, header=14 + 20 + 32)
IPV6 = Framing(mss=1428, header=14 + 40 + 32)
WORST = IPV6  # for bytes whose connection is not known yet


def on_wire(payload: int, framing: Framing = WORST) -> int:
    """The bytes the interface counts for `payload` bytes of one stream, headers included."""
    _check(payload)
    return payload + math.ceil(payload / framing.mss) * framing.header


def acks_on_wire(payload: int, framing: Framing = WORST) -> int:
    """The bytes of acknowledgements the receiver of `payload` bytes sends back: one frame of
    headers per two segments."""
    _check(payload)
    return math.ceil(payload / (2 * framing.mss)) * framing.header


def connection_frames(framing: Framing = WORST) -> int:
    """The bytes each way of the header-only frames one fetch may cost beyond its payload."""
    return CONNECTION_FRAMES * framing.header


@dataclass(frozen=True, slots=True)
class FetchWindow:
    """Buffer sizes for one fetch's connection, and what they let arrive before it is read.

    `receive_buffer` is the SO_RCVBUF to set (None: leave the kernel's autotuning, for an
    unlimited rate); the kernel doubles it for its bookkeeping and accepts up to that much.
    `read_buffer` is the HTTP client's read_bufsize: it stops reading the socket at twice this,
    and a read then takes all the kernel holds. `read_chunk` is what the egress reads at a time
    before paying for it. `unread` is the most payload that can have arrived for the fetch and
    not been paid: the kernel's buffer twice over (once in the kernel, once just moved to the
    client's buffer), the client's buffer, and one chunk in hand."""

    receive_buffer: int | None
    read_buffer: int
    read_chunk: int
    unread: int


def fetch_window(rate: float | None, fetches: int | None) -> FetchWindow:
    """Buffers for a download `rate` (bytes/s, None: unlimited) shared by up to `fetches`
    concurrent fetches (None: DEFAULT_FETCHES). A buffer caps one connection at about
    buffer/RTT: a quarter second of the rate over all fetches keeps the rate reachable up to
    that round trip when several fetch at once; one fetch alone holds at most FETCH_SECONDS of
    the rate, which still lets it reach its rate up to a round trip of about half that."""
    if rate is None:
        return FetchWindow(None, UNLIMITED_READ_BUFFER, MAX_READ_CHUNK, 0)
    if rate <= 0:
        raise ValueError(f"rate must be positive, not {rate}")
    count = fetches if fetches is not None else DEFAULT_FETCHES
    if count < 1:
        raise ValueError(f"fetches must be at least 1, not {count}")
    share = rate * min(WINDOW_SECONDS / count, FETCH_SECONDS)  # what one fetch may hold
    receive = _clamp(share / 4, MIN_RECEIVE_BUFFER, MAX_RECEIVE_BUFFER)
    read_buffer = _clamp(share / 4, MIN_READ, MAX_READ_BUFFER)
    chunk = _clamp(share / 4, MIN_READ, MAX_READ_CHUNK)
    return FetchWindow(receive, read_buffer, chunk, 2 * (2 * receive) + 2 * read_buffer + chunk)


def windows_capacity(rate: float | None, fetches: int | None = None) -> int | None:
    """The most bytes the windows of all fetches under way may hold together: WINDOW_SECONDS
    of the download rate (None: no limit, for an unlimited rate). At small rates the buffers'
    floors make each window larger than its share, and fewer fetches fit at once; but two
    always fit while they hold at most twice WINDOW_SECONDS of the rate: a link checker waits
    on servers far more than on bytes, and one fetch at a time left a 300 kB/s peer waiting on
    each server's answer in turn (its deposits sat unused while the server thought)."""
    if rate is None:
        return None
    pair = 2 * fetch_window(rate, fetches).unread
    return round(max(rate * WINDOW_SECONDS, min(pair, 2 * rate * WINDOW_SECONDS)))


def _clamp(value: float, low: int, high: int) -> int:
    return int(min(max(value, low), high))


def _check(payload: int) -> None:
    if payload < 0:
        raise ValueError(f"a payload cannot be negative ({payload})")
