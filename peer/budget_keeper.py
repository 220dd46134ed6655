"""The budget's tick: every BUDGET_TICK the bundle traffic libtorrent moved is charged to the
volunteer's allowance (workload traffic pays as it flows, in peer.egress), the recent rates are
measured, and the pauses are checked again (a cap used up, active hours over or begun, the
person back at the computer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from overlay import wire
from overlay.torrent import TorrentError, TorrentSession
from peer.allowance import Allowance
from peer.controls import Pauses
from peer.retrying import wait_any

BUDGET_TICK = 1.0  # seconds between charging bundle traffic to the budget and checking for a pause

Moved = dict[bytes, tuple[int, int]]  # info-hash -> (bytes down, bytes up) so far


def newly_moved(before: Moved, now: Moved) -> tuple[int, int]:
    """Bytes (down, up) moved since `before`, torrent by torrent; a count that went down (a
    torrent removed and added again) counts nothing."""
    down = up = 0
    for info_hash, (total_down, total_up) in now.items():
        was_down, was_up = before.get(info_hash, (0, 0))
        down += max(total_down - was_down, 0)
        up += max(total_up - was_up, 0)
    return down, up


def rates(used: tuple[int, int], last_used: tuple[int, int], seconds: float) -> tuple[float, float]:
    """Bytes/s (down, up) over `seconds` between two readings of the period's usage. Refunds of
    unused reservations can make a tick's count go down: not a negative rate."""
    return max(used[0] - last_used[0], 0) / seconds, max(used[1] - last_used[1], 0) / seconds


class BudgetKeeper:
    def __init__(self, allowance: Allowance, pauses: Pauses) -> None:
        self._allowance = allowance
        self._pauses = pauses
        self.recent_rates = (0.0, 0.0)  # bytes/s down, up over the last tick

    def usage(self) -> wire.PeerUsage:
        """What the peer tells its coordinator about its budget with every lease request."""
        status = self._allowance.status()
        down, up = self.recent_rates
        return wire.PeerUsage(capacity=status.capacity, used=status.used, cap=status.cap, down_rate=down, up_rate=up)

    async def run(self, torrents: TorrentSession, stop: asyncio.Event) -> None:
        """Charge bundle traffic to the budget, and pause or resume work as it says."""
        moved: Moved = {}  # what was charged already
        last_used = self._allowance.down.used, self._allowance.up.used
        while not stop.is_set():
            await wait_any(set(), stop, timeout=BUDGET_TICK)
            now = _moved(torrents, torrents.torrents())
            down, up = newly_moved(moved, now)
            moved.update(now)
            if down or up:
                self._allowance.charge(down=down, up=up)
            used = self._allowance.down.used, self._allowance.up.used
            self.recent_rates = rates(used, last_used, BUDGET_TICK)
            last_used = used
            self._pauses.check()


def _moved(torrents: TorrentSession, info_hashes: Iterable[bytes]) -> Moved:
    totals: Moved = {}
    for info_hash in info_hashes:
        with contextlib.suppress(TorrentError):  # removed since the listing
            stats = torrents.stats(info_hash)
            totals[info_hash] = (stats.total_download, stats.total_upload)
    return totals
