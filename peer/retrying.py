"""Waiting and retrying for the peer's calls to a coordinator.

The waits end early when the peer is told to stop, so that a stop never waits out a backoff.
How long to wait is peer.backoff's (pure); this module only does the waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from overlay.http import Rejected, Unavailable
from peer.backoff import backoff_delay

log = logging.getLogger("peer.agent")  # one logger for the whole agent, as before it was split

T = TypeVar("T")

LOST_AFTER = 3  # consecutive unanswered calls before a discovered coordinator counts as gone


async def wait_any(tasks: set[asyncio.Task[None]], stop: asyncio.Event, timeout: float | None) -> None:
    """Return when a task finishes, `stop` is set, or `timeout` passes."""
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopper, *tasks}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()


async def patiently(call: Callable[[], Awaitable[T]]) -> T:
    """A call a unit depends on, retried while the coordinator is only busy (LOST_AFTER tries)."""
    for failures in range(LOST_AFTER):
        try:
            return await call()
        except Unavailable as exc:
            if failures + 1 == LOST_AFTER:
                raise
            await asyncio.sleep(backoff_delay(failures, retry_after=exc.retry_after, cap=10.0))
    raise AssertionError("unreachable")


async def retry(
    call: Callable[[], Awaitable[T]], stop: asyncio.Event, what: str, max_failures: int | None = None
) -> T | None:
    """Call until it succeeds; None if `stop` is set first or after `max_failures` failures.
    Refusals are retried too, slowly."""
    failures = 0
    while not stop.is_set() and (max_failures is None or failures < max_failures):
        try:
            return await call()
        except (Unavailable, Rejected) as exc:
            retry_after = exc.retry_after if isinstance(exc, Unavailable) else None
            delay = backoff_delay(failures, retry_after=retry_after, cap=30.0 if isinstance(exc, Unavailable) else 60.0)
            failures += 1
            log.warning("%s failed: %s; retrying in %.1f s", what, exc, delay)
            await wait_any(set(), stop, timeout=delay)
    return None
