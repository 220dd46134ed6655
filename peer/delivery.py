"""Handing finished units over: every report goes to the outbox first (peer.outbox), and leaves
it only once a coordinator has answered, so a coordinator restart or a network drop never
loses a result.

A report is sent once as soon as its unit ends (`keep_and_deliver`); what could not be sent is
sent again by the flush loop, several to one coordinator in batches, backing off while the
coordinators are away, and once more when the peer stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from overlay import wire
from overlay.http import Rejected, Unavailable
from overlay.identity import Identity
from overlay.wire_reports import MAX_REPORT_BATCH
from peer.backoff import backoff_delay
from peer.client import CoordinatorClient
from peer.outbox import Outbox, PendingReport
from peer.retrying import wait_any

log = logging.getLogger("peer.agent")  # one logger for the whole agent, as before it was split

FLUSH_EVERY = 2.0  # seconds between looks at the outbox while the coordinators answer


class Delivery:
    def __init__(self, outbox: Outbox, identity: Identity) -> None:
        self.outbox = outbox
        self._identity = identity

    async def keep_and_deliver(self, client: CoordinatorClient, report: wire.Report) -> None:
        """Keep `report` in the outbox, then try once to hand it to the coordinator that leased
        the unit; the flush loop sends it again if that fails."""
        pending = self.outbox.put(client.base_url, report)
        await self.deliver(client, pending)

    async def deliver(self, client: CoordinatorClient, pending: PendingReport) -> Unavailable | None:
        """Try once to hand a finished report over; the reason when it must be sent again."""
        try:
            answer = await client.report(pending.report)
        except Unavailable as exc:
            log.info("report of unit %d kept for later: %s", pending.report.unit_id, exc)
            return exc
        except Rejected as exc:
            # A stale lease or a refused body will be refused again: drop it, say why.
            log.warning("report of unit %d refused: %s", pending.report.unit_id, exc)
        else:
            if not answer.accepted:  # its records broke the job's schema: the version's failure
                log.warning("report of unit %d refused: %s", pending.report.unit_id, answer.reason)
            log.debug("report of unit %d: accepted=%s %s", pending.report.unit_id, answer.accepted, answer.reason)
        self.outbox.remove(pending)
        return None

    async def flush_once(self, session: aiohttp.ClientSession, deadline: float) -> None:
        """Send what the outbox holds, giving up after `deadline` seconds (the peer is stopping)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush_all(session), timeout=deadline)

    async def flush_all(self, session: aiohttp.ClientSession) -> Unavailable | None:
        """Send every report in the outbox, several to one coordinator in batches; the last
        reason one of them must be sent again."""
        by_coordinator: dict[str, list[PendingReport]] = {}
        for pending in self.outbox.pending():
            by_coordinator.setdefault(pending.coordinator, []).append(pending)
        trouble = None
        for url, pendings in by_coordinator.items():
            client = CoordinatorClient(url, self._identity, session)
            for start in range(0, len(pendings), MAX_REPORT_BATCH):
                trouble = await self.deliver_batch(client, pendings[start : start + MAX_REPORT_BATCH]) or trouble
        return trouble

    async def deliver_batch(self, client: CoordinatorClient, pendings: list[PendingReport]) -> Unavailable | None:
        if len(pendings) == 1:
            return await self.deliver(client, pendings[0])
        try:
            verdicts = await client.report_batch([pending.report for pending in pendings])
        except Unavailable as exc:
            log.info("%d reports kept for later: %s", len(pendings), exc)
            return exc
        except Rejected as exc:
            # A coordinator without the batch endpoint (404), or one refusing the batch as a
            # whole: each report on its own then, as before batches existed.
            log.info("report batch refused (%s); sending the %d reports one by one", exc, len(pendings))
            trouble = None
            for pending in pendings:
                trouble = await self.deliver(client, pending) or trouble
            return trouble
        for pending, verdict in zip(pendings, verdicts, strict=False):
            if not verdict.accepted:
                log.warning("report of unit %d refused: %s", verdict.unit_id, verdict.reason)
            self.outbox.remove(pending)
        log.info("%d reports delivered in one batch", len(pendings))
        return None

    async def flush_loop(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Send what the outbox holds until `stop`, backing off while coordinators are away."""
        failures = 0
        while not stop.is_set():
            trouble = await self.flush_all(session)
            if trouble is None:
                failures = 0
                delay = FLUSH_EVERY
            else:
                delay = backoff_delay(failures, retry_after=trouble.retry_after)
                failures += 1
                log.info("outbox: %s; retrying in %.1f s", trouble, delay)
            await wait_any(set(), stop, timeout=delay)
