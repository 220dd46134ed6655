"""The lease loop: while registered with a coordinator, ask it for as many units as there are
free slots, start each (peer.unit_work), and wait for a slot, for the coordinator's
`retry_after`, or for a pause to end.

A loop ends (`LeaseEnd`) when the peer stops, when the volunteer chooses someone else, and,
for a coordinator found in the DHT (`give_up`), when it stops answering or has had no work for
IDLE_RECHECK seconds (another coordinator may need this peer more).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from overlay import wire
from overlay.http import Rejected, Unavailable
from peer.backoff import backoff_delay
from peer.budget_keeper import BUDGET_TICK
from peer.client import CoordinatorClient
from peer.clock import Clock
from peer.controls import Pauses
from peer.coordinator_choice import WORKLOADS, CoordinatorChoice
from peer.retrying import LOST_AFTER, wait_any
from peer.trust import WorkloadTrust

log = logging.getLogger("peer.agent")  # one logger for the whole agent, as before it was split

IDLE_RECHECK = 30.0  # seconds without work before looking for a coordinator that needs us more

StartUnit = Callable[[CoordinatorClient, wire.Lease, float], Coroutine[Any, Any, None]]


class LeaseEnd(enum.Enum):
    STOPPED = "stopped"
    CHANGED = "changed"  # the volunteer chose to work for someone else
    LOST = "lost"  # the coordinator stopped answering
    IDLE = "idle"  # no work for a while: another coordinator may need this peer more


def idle_too_long(idle_since: float, now: float) -> bool:
    """Whether a peer without work since `idle_since` (monotonic) should look elsewhere."""
    return now - idle_since >= IDLE_RECHECK


class Leasing:
    def __init__(
        self,
        *,
        slots: int,
        trust: WorkloadTrust,
        pauses: Pauses,
        choice: CoordinatorChoice,
        usage: Callable[[], wire.PeerUsage],
        running: set[asyncio.Task[None]],
        start_unit: StartUnit,
        clock: Clock,
    ) -> None:
        self._slots = slots
        self._trust = trust
        self._pauses = pauses
        self._choice = choice
        self._usage = usage
        self._running = running  # the units under way: added here, each removes itself when done
        self._start_unit = start_unit
        self._clock = clock

    async def run(
        self, client: CoordinatorClient, stop: asyncio.Event, *, give_up: bool, lease_seconds: float
    ) -> LeaseEnd:
        """Lease and start units until stopped or, with `give_up` (a discovered coordinator),
        until the coordinator stops answering or has had no work for a while. `lease_seconds`:
        the lease length the coordinator granted at registration."""
        running = self._running
        failures = 0
        idle_since: float | None = None
        while not stop.is_set():
            if self._choice.take_change():
                return LeaseEnd.CHANGED
            if give_up and failures >= LOST_AFTER:
                return LeaseEnd.LOST
            if self._pauses.reason is not None:
                await wait_any(set(), stop, timeout=BUDGET_TICK)  # the budget keeper lifts the pause
                idle_since = None
                continue
            free = self._slots - len(running)
            if free <= 0:
                await wait_any(running, stop, timeout=None)
                continue
            try:
                answer = await client.lease(
                    wire.LeaseRequest(
                        max_units=free,
                        workloads=sorted(WORKLOADS),
                        usage=self._usage(),
                        trusted_owners=self._trust.advertised_owners(),
                    )
                )
            except Unavailable as exc:
                delay = backoff_delay(failures, retry_after=exc.retry_after)
                failures += 1
                log.warning("%s; retrying in %.1f s", exc, delay)
                await wait_any(running, stop, timeout=delay)
                continue
            except Rejected as exc:
                failures += 1
                if exc.status == 403:  # the coordinator does not know this peer (any more): register again
                    registered = await self._choice.register(client, stop, give_up=give_up)
                    if registered is not None:
                        lease_seconds = registered
                        continue
                log.error("coordinator refused to lease: %s", exc)
                await wait_any(running, stop, timeout=backoff_delay(failures))
                continue
            failures = 0
            for lease in answer.leases:
                task = asyncio.create_task(self._start_unit(client, lease, lease_seconds))
                running.add(task)
                task.add_done_callback(running.discard)
            if answer.leases:
                idle_since = None
                continue
            now = self._clock.monotonic()
            idle_since = idle_since or now
            if give_up and not running and idle_too_long(idle_since, now):
                return LeaseEnd.IDLE
            await wait_any(running, stop, timeout=answer.retry_after or 1.0)
        return LeaseEnd.STOPPED
