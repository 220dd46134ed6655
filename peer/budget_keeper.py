"""The budget's tick: every BUDGET_TICK the bundle traffic libtorrent moved is charged to the
volunteer's allowance as the interface counts it (frames and acknowledgements,
peer.wire_cost; workload traffic pays as it flows, in peer.egress), the recent rates are
measured, libtorrent is given the part of the rates web traffic left (`bundle_share`), and the
pauses are checked again (a cap used up, active hours over or begun, the person back at the
computer).

Web and bundle traffic share one budget: bundle bytes charged to the buckets make the egress
wait for them, and libtorrent's own limits shrink while the egress uses the rates, down to
BUNDLE_FLOOR of them, so that a bundle a unit needs still arrives while other units browse.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterable

from overlay import wire
from overlay.torrent import TorrentError, TorrentSession
from peer.allowance import Allowance
from peer.controls import Pauses, bundle_upload_limit
from peer.retrying import wait_any
from peer.wire_cost import acks_on_wire, on_wire

# Seconds between charging bundle traffic to the budget and checking for a pause: short, since
# the egress can make up for bundle bytes only once they are charged (at 1 s, a peer fetching
# web pages and a bundle together saw 1.07x of its rate over 10 s at its interface).
BUDGET_TICK = 0.25
RATE_TICKS = 4  # the recent rates are measured over this many ticks
BUNDLE_FLOOR = 0.1  # of each rate, what bundle traffic keeps however much web traffic uses

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


def on_the_wire(down: int, up: int) -> tuple[int, int]:
    """Bytes (down, up) at the interface for `down` and `up` bytes of payload over TCP: each
    direction's frames, and the acknowledgements of the other direction's."""
    return on_wire(down) + acks_on_wire(up), on_wire(up) + acks_on_wire(down)


def bundle_share(rate: int | None, web: float) -> int | None:
    """The rate (bytes/s) libtorrent may use while web traffic used `web` bytes/s of `rate`:
    what it left, but at least BUNDLE_FLOOR of the rate; None (unlimited) without a rate."""
    if rate is None:
        return None
    return max(round(rate - web), round(rate * BUNDLE_FLOOR), 1)


def rates(used: tuple[int, int], last_used: tuple[int, int], seconds: float) -> tuple[float, float]:
    """Bytes/s (down, up) over `seconds` between two readings of the period's usage. Refunds of
    unused reservations can make a tick's count go down: not a negative rate."""
    return max(used[0] - last_used[0], 0) / seconds, max(used[1] - last_used[1], 0) / seconds


class BudgetKeeper:
    def __init__(self, allowance: Allowance, pauses: Pauses, *, bundle_upload_rate: int | None = None) -> None:
        self._allowance = allowance
        self._pauses = pauses
        self._bundle_upload_rate = bundle_upload_rate  # the volunteer's own limit on seeding
        self.recent_rates = (0.0, 0.0)  # bytes/s down, up over the last tick

    def usage(self) -> wire.PeerUsage:
        """What the peer tells its coordinator about its budget with every lease request."""
        status = self._allowance.status()
        down, up = self.recent_rates
        return wire.PeerUsage(capacity=status.capacity, used=status.used, cap=status.cap, down_rate=down, up_rate=up)

    async def run(self, torrents: TorrentSession, stop: asyncio.Event) -> None:
        """Charge bundle traffic to the budget, and pause or resume work as it says."""
        moved: Moved = {}  # what was charged already
        charged = (0, 0)
        # (used down, used up, charged down, charged up) at the last RATE_TICKS ticks
        history = collections.deque([(self._allowance.down.used, self._allowance.up.used, 0, 0)], maxlen=RATE_TICKS)
        while not stop.is_set():
            await wait_any(set(), stop, timeout=BUDGET_TICK)
            now = _moved(torrents, torrents.torrents())
            down, up = on_the_wire(*newly_moved(moved, now))
            moved.update(now)
            if down or up:
                self._allowance.charge(down=down, up=up)
            charged = charged[0] + down, charged[1] + up
            used = self._allowance.down.used, self._allowance.up.used
            first = history[0]
            seconds = len(history) * BUDGET_TICK
            self.recent_rates = rates(used, first[:2], seconds)
            web = rates(
                (used[0] - charged[0], used[1] - charged[1]), (first[0] - first[2], first[1] - first[3]), seconds
            )
            history.append((*used, *charged))
            self._share(torrents, web)
            self._pauses.check()

    def _share(self, torrents: TorrentSession, web: tuple[float, float]) -> None:
        """Give libtorrent what web traffic left of the rates over the last tick."""
        budget = self._allowance.budget
        upload = bundle_share(budget.max_up, web[1])
        limit = bundle_upload_limit(self._bundle_upload_rate, budget)
        if limit is not None:
            upload = limit if upload is None else min(upload, limit)
        with contextlib.suppress(TorrentError):  # closed meanwhile
            torrents.set_rates(upload_rate=upload, download_rate=bundle_share(budget.max_down, web[0]))


def _moved(torrents: TorrentSession, info_hashes: Iterable[bytes]) -> Moved:
    totals: Moved = {}
    for info_hash in info_hashes:
        with contextlib.suppress(TorrentError):  # removed since the listing
            stats = torrents.stats(info_hash)
            totals[info_hash] = (stats.total_download, stats.total_upload)
    return totals
