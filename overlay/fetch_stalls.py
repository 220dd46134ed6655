"""What a fetch does while it is stalled (`overlay.torrent` `TorrentSession.fetch`): ask for
addresses again and connect to them again, first `every` seconds after its last progress, then
every `every` seconds while it stays stalled. The clock is the caller's (it says `now`); one
question runs at a time, in a task of its own, so the fetch's own timeout keeps running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("overlay.torrent")

Address = tuple[str, int]


class StallAsker:
    """Asks `more_peers` for addresses while a fetch is stalled and hands them to `connect`
    (which says whether the fetch was still there to take them). None: nobody to ask."""

    def __init__(
        self,
        name: str,
        more_peers: Callable[[], Awaitable[list[Address]]] | None,
        connect: Callable[[list[Address]], bool],
        every: float,
    ) -> None:
        self._name = name
        self._more_peers = more_peers
        self._connect = connect
        self._every = every
        self._next: float | None = None  # when to ask next; None until the first look
        self._task: asyncio.Task[None] | None = None

    def progressed(self, now: float) -> None:
        self._next = now + self._every

    def stalled(self, now: float) -> None:
        if self._next is None:
            self._next = now + self._every
        if self._more_peers is None or now < self._next or (self._task is not None and not self._task.done()):
            return
        self._next = now + self._every
        self._task = asyncio.create_task(self._ask(self._more_peers), name=f"more peers {self._name}")

    async def _ask(self, more_peers: Callable[[], Awaitable[list[Address]]]) -> None:
        try:
            peers = await more_peers()
        except Exception:  # a bug of the caller's; the fetch goes on with the peers it has
            log.exception("asking for more peers of %s failed", self._name)
            return
        if not peers:
            log.info("fetch of %s stalled; no peer to connect to yet", self._name)
            return
        if self._connect(peers):
            log.info("fetch of %s stalled; connecting to %d peer(s) again", self._name, len(peers))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
