"""Each signed request is taken once: the nonces seen within the clock window, remembered.

A signature is good for MAX_CLOCK_SKEW seconds either side of the coordinator's clock, so a
nonce needs remembering only until its request's timestamp leaves that window; after that the
timestamp alone refuses it. Memory is bounded: past `capacity` nonces the oldest still in the
window would have to be forgotten, which would let its request be replayed, so instead new
requests are refused as busy until the window moves on (rate limits keep honest traffic far
below the capacity).
"""

from __future__ import annotations

import heapq

from overlay.errors import OsaasError
from overlay.wire import MAX_CLOCK_SKEW

DEFAULT_CAPACITY = 200_000  # about 30 MB of nonces; a busy coordinator takes ~2,000 requests/s


class Busy(OsaasError):
    """Too many nonces to remember: come back when the window has moved on."""

    http_status = 429
    code = "busy"


class SeenNonces:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, window: float = MAX_CLOCK_SKEW) -> None:
        self._capacity = capacity
        self._window = window
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[float, str, str]] = []  # (forget at, signer, nonce), a heap

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, signer: str, nonce: str, sent_at: float, now: float) -> bool:
        """Remember the nonce; False if this signer used it before (a replay). Raises `Busy`
        when full of nonces that are all still in the window."""
        self._forget_expired(now)
        if (signer, nonce) in self._seen:
            return False
        if len(self._seen) >= self._capacity:
            busy = Busy("too many signed requests at once; try again shortly")
            busy.retry_after = max(1.0, self._expiry[0][0] - now)  # when the oldest nonce goes
            raise busy
        self._seen.add((signer, nonce))
        # From sent_at + window on, its timestamp alone refuses it.
        heapq.heappush(self._expiry, (sent_at + self._window, signer, nonce))
        return True

    def _forget_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, signer, nonce = heapq.heappop(self._expiry)
            self._seen.discard((signer, nonce))
