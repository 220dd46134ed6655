"""A running unit's streamed items on their way to its coordinator (process API version 2).

A version 2 workload may hand over each item's record as soon as it is done (`item` frames,
peer.runner). They are sent to the coordinator that leased the unit while the unit still
runs, under its lease (`POST /v1/reports/items`), in batches: every BATCH_ITEMS items,
BATCH_BYTES bytes or BATCH_SECONDS seconds, whichever comes first. So the owner sees a big
unit's results before it ends, and what was handed over stays done if the unit later fails
or its lease is lost.

Memory is bounded: at most MAX_HELD bytes of records wait to be delivered; beyond that the
workload waits (its stdout is not read) until a batch is taken, so it cannot stream faster
than its coordinator takes its items. Records not acknowledged when the unit ends go with its
final report (`Report.items`), which the outbox keeps until delivered; the coordinator takes
an item once, whichever report comes first. A coordinator that refuses a batch (its records
break the job's model, or the lease is no longer this peer's) ends the unit: `lost` is told why.
A coordinator from before streamed items (404) gets them in the final report's payload, as the
workload's result would have held them (`final`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from overlay.http import Rejected, Unavailable
from overlay.wire import Lease, clip
from overlay.wire_reports import MAX_STREAMED_BATCH, ItemsReport
from peer.backoff import backoff_delay
from peer.client import CoordinatorClient

log = logging.getLogger("peer.agent")  # one logger for the whole agent

BATCH_ITEMS = 100
BATCH_BYTES = 1024 * 1024
BATCH_SECONDS = 2.0
MAX_HELD = 4 * 1024 * 1024  # bytes of records waiting for the coordinator, at most (one record more)


class ItemStreamer:
    """One unit's streamed records: `put` (the runner's `Streamed`) holds them, `run` (a task
    for the unit's life) delivers them in batches; `leftover` and `taken` go in the unit's
    final report."""

    def __init__(
        self,
        client: CoordinatorClient,
        lease: Lease,
        lost: Callable[[str], None],
        *,
        batch_seconds: float = BATCH_SECONDS,
    ) -> None:
        self._client = client
        self._lease = lease
        self._lost = lost
        self._batch_seconds = batch_seconds
        self._held: list[tuple[dict[str, Any], int]] = []  # not acknowledged yet, oldest first
        self._held_bytes = 0
        self._full = asyncio.Event()  # a batch is ready
        self._room = asyncio.Condition()
        self.taken = 0  # items the coordinator finished from this unit's batches
        self.gone: str | None = None  # why the unit is no longer this peer's
        self._unheard = False  # the coordinator takes no streamed items: they wait for the report

    async def put(self, record: dict[str, Any], size: int) -> None:
        """Hold one record for delivery; wait while MAX_HELD bytes are held already."""
        async with self._room:
            await self._room.wait_for(lambda: self._unheard or not self._held or self._held_bytes + size <= MAX_HELD)
            self._held.append((record, size))
            self._held_bytes += size
        if self._batch_full():
            self._full.set()

    def leftover(self) -> list[dict[str, Any]]:
        """The records not acknowledged (none delivered or a delivery's answer lost)."""
        return [record for record, _ in self._held]

    def final(self, exit_code: int, payload: dict[str, Any] | None) -> tuple[dict[str, Any] | None, list[Any]]:
        """The final report's payload and streamed records not acknowledged (`Report.items`);
        for a coordinator that takes no streamed items, they go first in the payload's items."""
        leftover = self.leftover()
        if self._unheard and leftover and exit_code in (0, 1) and payload is not None:
            items = payload.get("items")
            if isinstance(items, list):
                return payload | {"items": leftover + items}, []
        return payload, leftover

    async def run(self) -> None:
        """Deliver held records until cancelled: a batch as soon as one is full, else what is
        held every `batch_seconds`; backing off while the coordinator does not answer."""
        failures = 0
        trouble: Unavailable | None = None
        while self.gone is None and not self._unheard:
            if trouble is not None:
                await asyncio.sleep(backoff_delay(failures, retry_after=trouble.retry_after))
            elif not self._batch_full():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._batch_seconds):
                        await self._full.wait()
            self._full.clear()
            if not self._held:
                continue
            trouble = await self.deliver()
            failures = 0 if trouble is None else failures + 1

    async def deliver(self) -> Unavailable | None:
        """Send one batch of the oldest held records; the reason when it must be sent again."""
        batch = self._batch()
        if not batch or self._unheard:
            return None
        report = ItemsReport(
            unit_id=self._lease.unit_id,
            token=self._lease.token,
            items=[record for record, _ in batch],
            bundle_version=self._lease.bundle.version if self._lease.bundle else None,
        )
        try:
            answer = await self._client.report_items(report)
        except Unavailable as exc:
            log.info("unit %d: %d streamed items kept for later: %s", self._lease.unit_id, len(batch), exc)
            return exc
        except Rejected as exc:
            if exc.status == 404:
                log.info("unit %d: its coordinator takes no streamed items (%s)", self._lease.unit_id, exc)
                self._unheard = True
                async with self._room:
                    self._room.notify_all()
                return None
            self._end(f"streamed items refused: {exc}")
            return None
        if not answer.accepted:
            self._end(f"streamed items refused: {answer.reason}")
            return None
        self.taken += answer.taken
        async with self._room:
            del self._held[: len(batch)]
            self._held_bytes -= sum(size for _, size in batch)
            self._room.notify_all()
        log.debug("unit %d: %d streamed items delivered", self._lease.unit_id, len(batch))
        return None

    def _batch_full(self) -> bool:
        return len(self._held) >= BATCH_ITEMS or self._held_bytes >= BATCH_BYTES

    def _batch(self) -> list[tuple[dict[str, Any], int]]:
        batch: list[tuple[dict[str, Any], int]] = []
        size = 0
        for record, record_size in self._held[:MAX_STREAMED_BATCH]:
            if batch and size + record_size > BATCH_BYTES:
                break
            batch.append((record, record_size))
            size += record_size
        return batch

    def _end(self, why: str) -> None:
        self.gone = clip(why)
        log.warning("unit %d: %s; stopping it", self._lease.unit_id, self.gone)
        self._lost(self.gone or why)
