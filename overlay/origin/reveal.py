"""Which pieces the origin shows each fetcher, and so serves it: pure rules, time passed in.

The origin wants to send each piece about once and let fetchers trade the rest (BEP 16's aim).
It shows a fetcher only pieces it means to serve it, and serves only what it showed:

- Few fetchers (at most `few`, after `settle` seconds connected): each is shown every piece,
  so a lone fetcher downloads at its link's speed with no stall.
- More: each fetcher is shown a batch of pieces nobody else has been given (`batch`
  outstanding: shown, not yet reported had), and one more each time it reports one of them
  (HAVE) or has made no progress for `idle` seconds.
- Once every piece has gone out (shown to one fetcher, or served), a fetcher is shown only
  pieces no connected fetcher and no departed seed has, and that are not on their way to a
  fetcher that made progress within `stale` seconds: a departed or stuck holder's pieces go out
  again. And, while the origin's extra allowance lasts (`spare` of the pieces once more), the
  pieces fewest fetchers hold: the end of a swarm waits on its rarest pieces, and the origin
  is idle by then.

Fetchers are keyed by an int the server chooses. Every call returns the pieces to announce
(HAVE) to each fetcher now; `may_serve` says which requests to serve.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Settings:
    batch: int = 4  # pieces shown and not yet had, per fetcher
    few: int = 1  # at most this many fetchers: each is shown every piece
    settle: float = 0.5  # seconds a fetcher is connected before it may count as one of few
    idle: float = 1.0  # seconds without progress before a fetcher is shown one piece more
    stale: float = 3.0  # seconds without progress before its pieces on the way go out again
    spare: float = 0.2  # share of the pieces shown once more, after all went out, to speed the end

    def __post_init__(self) -> None:
        if self.batch < 1 or self.few < 0 or min(self.settle, self.idle, self.stale, self.spare) < 0:
            raise ValueError("batch must be at least 1; few and the times at least 0")


@dataclass(slots=True)
class _Fetcher:
    joined: float
    progress: float  # last time it reported a piece or was served a block
    has: set[int] = field(default_factory=set)
    shown: set[int] = field(default_factory=set)
    full: bool = False  # shown every piece

    def outstanding(self) -> set[int]:
        return self.shown - self.has


Reveals = dict[int, list[int]]


class Reveal:
    """The rules for one torrent of `pieces` pieces."""

    def __init__(self, pieces: int, settings: Settings | None = None) -> None:
        if pieces < 1:
            raise ValueError("a torrent has at least one piece")
        self._n = pieces
        self._settings = settings or Settings()
        self._peers: dict[int, _Fetcher] = {}
        self._copies = [0] * pieces  # connected peers that have each piece
        self._uncopied = set(range(pieces))  # pieces no connected peer has
        self._seeds_gone = 0  # peers that left holding every piece (they seed on, mostly)
        self._gone_out = [False] * pieces  # shown to one fetcher (not a full one) or served
        self._served = [False] * pieces
        self._on_way: list[set[int]] = [set() for _ in range(pieces)]  # fetchers shown it, lacking it
        self._unsent = pieces  # pieces not yet gone out
        self._extra = int(self._settings.spare * pieces)  # pieces that may still be shown once more
        self._cursor = 0

    # -- what the server reports --

    def join(self, peer: int, now: float) -> list[int]:
        """A fetcher finished its handshake: the pieces to show it at once."""
        if peer in self._peers:
            raise ValueError(f"peer {peer} joined twice")
        self._peers[peer] = _Fetcher(joined=now, progress=now)
        return self._top_up(peer, now)

    def leave(self, peer: int) -> None:
        fetcher = self._peers.pop(peer)
        for piece in fetcher.has:
            self._copies[piece] -= 1
            if not self._copies[piece]:
                self._uncopied.add(piece)
        if len(fetcher.has) == self._n:
            self._seeds_gone += 1
        for piece in fetcher.outstanding():
            self._on_way[piece].discard(peer)
            unsent = not self._served[piece] and not self._copies[piece]
            if unsent and not self._on_way[piece] and self._gone_out[piece]:
                self._gone_out[piece] = False  # never sent, nobody has it: it may be given to another
                self._unsent += 1

    def has(self, peer: int, pieces: Iterable[int], now: float) -> Reveals:
        """A fetcher reported pieces (bitfield, have all, have): what to show now."""
        fetcher = self._peers[peer]
        for piece in pieces:
            if not 0 <= piece < self._n:
                raise ValueError(f"piece {piece} of {self._n}")
            if piece in fetcher.has:
                continue
            fetcher.has.add(piece)
            self._copies[piece] += 1
            self._uncopied.discard(piece)
            self._on_way[piece].discard(peer)
            if piece in fetcher.shown:
                fetcher.progress = now
            self._mark_gone_out(piece)
        return {peer: new} if (new := self._top_up(peer, now)) else {}

    def served(self, peer: int, piece: int, now: float) -> None:
        """A block of `piece` was sent to `peer`."""
        self._peers[peer].progress = now
        if not self._served[piece]:
            self._served[piece] = True
            self._mark_gone_out(piece)

    def tick(self, now: float) -> Reveals:
        """What time alone changes: few fetchers settled, idle fetchers, stale pieces."""
        found: Reveals = {}
        for peer in list(self._peers):
            if pieces := self._top_up(peer, now):
                found[peer] = pieces
        return found

    # -- what the server asks --

    def may_serve(self, peer: int, piece: int) -> bool:
        fetcher = self._peers.get(peer)
        return fetcher is not None and (fetcher.full or piece in fetcher.shown)

    def is_seed(self, peer: int) -> bool:
        return len(self._peers[peer].has) == self._n

    def shown(self, peer: int) -> frozenset[int]:
        return frozenset(self._peers[peer].shown)

    @property
    def all_gone_out(self) -> bool:
        return self._unsent == 0

    # -- the rules --

    def _fetchers(self) -> int:
        return sum(1 for f in self._peers.values() if len(f.has) < self._n)

    def _mark_gone_out(self, piece: int) -> None:
        if not self._gone_out[piece]:
            self._gone_out[piece] = True
            self._unsent -= 1

    def _top_up(self, peer: int, now: float) -> list[int]:
        fetcher = self._peers[peer]
        settings = self._settings
        if fetcher.full or len(fetcher.has) == self._n:
            return []
        if now - fetcher.joined >= settings.settle and self._fetchers() <= settings.few:
            fetcher.full = True
            new = [p for p in range(self._n) if p not in fetcher.shown and p not in fetcher.has]
            fetcher.shown.update(new)
            return new
        want = settings.batch - len(fetcher.outstanding())
        if want <= 0 and now - fetcher.progress >= settings.idle and len(fetcher.outstanding()) < 2 * settings.batch:
            want = 1
            fetcher.progress = now  # one more per idle period, not one per tick
        new = []
        while want > 0:
            piece = self._next_for(fetcher, now)
            if piece is None:
                break
            fetcher.shown.add(piece)
            self._on_way[piece].add(peer)
            self._mark_gone_out(piece)
            new.append(piece)
            want -= 1
        return new

    def _next_for(self, fetcher: _Fetcher, now: float) -> int | None:
        """A piece nobody was given yet; once there is none, one nobody holds and none is
        fetching with progress; None when the fetchers can trade the rest."""
        if self._unsent:
            for step in range(self._n):
                piece = (self._cursor + step) % self._n
                if not self._gone_out[piece] and piece not in fetcher.has:
                    self._cursor = (piece + 1) % self._n
                    return piece
        if not self._seeds_gone:
            for piece in sorted(self._uncopied):
                if piece in fetcher.has or piece in fetcher.shown:
                    continue
                if all(now - self._peers[other].progress >= self._settings.stale for other in self._on_way[piece]):
                    return piece
        if self._extra <= 0:
            return None
        held = [
            (self._copies[p] + len(self._on_way[p]), p)
            for p in range(self._n)
            if self._copies[p] and p not in fetcher.has and p not in fetcher.shown
        ]
        if not held:
            return None
        self._extra -= 1
        return min(held)[1]
