"""Whom the peer works for: choosing a coordinator, and registering with it.

A peer started with a coordinator URL works for that one. Otherwise it asks the DHT for the
coordinators of its network (peer.discovery ranks them), and keeps working for the best one
until that one stops answering (it then ranks last for AVOID_SECONDS, so that the peer tries
the others first) or the volunteer chooses someone else on the local page (`change`), which
ends the registration or lease loop under way at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import aiohttp

from overlay import wire
from overlay.dht import DhtNode
from overlay.identity import Identity
from peer.backoff import backoff_delay
from peer.client import CoordinatorClient
from peer.clock import Clock
from peer.discovery import find_coordinators
from peer.retrying import LOST_AFTER, retry, wait_any
from peer.work_choice import WorkChoice

log = logging.getLogger("peer.agent")  # one logger for the whole agent, as before it was split

# The peer runs whatever signed bundle a unit names: it fetches, checks and caches it itself.
WORKLOADS = [wire.ANY_WORKLOAD]
AVOID_SECONDS = 120.0  # how long a coordinator that failed us ranks last


def avoided(avoid: Mapping[str, float], now: float) -> set[str]:
    """The coordinators that still rank last at monotonic time `now` (URL -> until when)."""
    return {url for url, until in avoid.items() if until > now}


class CoordinatorChoice:
    """The volunteer's choice (`wanted`), the coordinator it led to, and those to avoid."""

    def __init__(
        self,
        wanted: WorkChoice,
        identity: Identity,
        registration: Callable[[], wire.RegisterRequest],
        clock: Clock,
        *,
        network_keys: Mapping[str, bytes] | None = None,
        allow_private: bool = False,
    ) -> None:
        self.wanted = wanted
        self._network_keys = dict(network_keys or {})  # network name -> its key
        self._allow_private = allow_private  # coordinators at private addresses too
        self._identity = identity
        self._registration = registration  # what to register with, as the peer is now
        self._clock = clock
        self._current: str | None = None  # the discovered coordinator we work for
        self._avoid: dict[str, float] = {}  # coordinator URL -> until when (monotonic) it ranks last
        self._changed = asyncio.Event()  # the choice changed: leave the coordinator worked for

    def change(self, wanted: WorkChoice) -> None:
        """Work for whom `wanted` says from the next choice on; the coordinator worked for is left."""
        self.wanted = wanted
        self._current = None
        self._changed.set()

    def take_change(self) -> bool:
        """Whether the choice changed since last asked."""
        if not self._changed.is_set():
            return False
        self._changed.clear()
        return True

    def avoid(self, url: str) -> None:
        """Rank the coordinator at `url` last for a while: it stopped answering."""
        self._avoid[url] = self._clock.monotonic() + AVOID_SECONDS

    def avoided_now(self) -> set[str]:
        """The coordinators that rank last now."""
        return avoided(self._avoid, self._clock.monotonic())

    async def choose(
        self, session: aiohttp.ClientSession, dht: DhtNode | None, stop: asyncio.Event
    ) -> CoordinatorClient | None:
        """The explicit coordinator, or the best one the DHT knows; None once stopped."""
        if dht is None:
            assert self.wanted.coordinator is not None
            log.info("working for %s", self.wanted.coordinator)
            return CoordinatorClient(self.wanted.coordinator, self._identity, session)
        failures = 0
        while not stop.is_set():
            choice = self.wanted
            network_key = self._network_keys.get(choice.network)
            if network_key is None:
                candidates = []
                if not failures:
                    log.warning(
                        "network %r: its network key is not known, so no coordinator of it is trusted;"
                        " restart with --network-file FILE or --network-key KEY from the network's operator",
                        choice.network,
                    )
            else:
                candidates = await find_coordinators(
                    dht,
                    session,
                    choice.network,
                    network_key,
                    workloads=WORKLOADS,
                    preferred=choice.prefer,
                    avoid=self.avoided_now(),
                    allow_private=self._allow_private,
                )
            if candidates:
                best = candidates[0].announcement
                if best.url == self._current:
                    return CoordinatorClient(best.url, self._identity, session)
                self._current = best.url
                log.info(
                    "working for %s (coordinator %s…, load %d, %d peers, %.0f ms away)",
                    best.url,
                    best.public_key[:12],
                    best.load,
                    best.peers,
                    candidates[0].rtt * 1000,
                )
                return CoordinatorClient(best.url, self._identity, session)
            delay = backoff_delay(failures, cap=15.0)
            failures += 1
            log.info("no coordinator of network %r found yet; looking again in %.1f s", choice.network, delay)
            await wait_any(set(), stop, timeout=delay)
            if not dht.neighbours():
                await dht.bootstrap_again()
        return None

    async def register(self, client: CoordinatorClient, stop: asyncio.Event, *, give_up: bool) -> float | None:
        """Register with the coordinator; the lease length it grants (seconds), or None when
        stopped, when it did not answer (`give_up`: after LOST_AFTER tries) or when the
        volunteer chose someone else meanwhile (`take_change` then says so)."""
        request = self._registration()
        registering = asyncio.create_task(
            retry(lambda: client.register(request), stop, "register", LOST_AFTER if give_up else None)
        )
        rechosen = asyncio.create_task(self._changed.wait())
        try:
            await asyncio.wait({registering, rechosen}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            rechosen.cancel()
            if not registering.done():  # the volunteer chose another coordinator meanwhile
                registering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await registering
        answer = registering.result() if not registering.cancelled() else None
        if answer is None:
            return None
        return max(answer.lease_seconds, 1.0)
