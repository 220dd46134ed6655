"""The one thread that owns the coordinator's SQLite connection, with group commit.

Calls run one at a time in the order they arrive. The calls that queued up while one group ran
go together as the next group: one `BEGIN IMMEDIATE`, each call in turn, one `COMMIT`, so many
requests share one fsync (with `synchronous=FULL` the fsync is most of a small transaction's
cost). A call's own transaction becomes a savepoint inside the group (see
`Database.transaction`): a call that fails takes back only its own changes. No caller
hears back before the commit that holds its changes returned, so an answer a peer got is on
disk, as it was with a transaction per call.

A lone call runs without a group around it, exactly as before; calls marked `alone` (opening
and closing the database) never share one. `take_group` and `run_group` are the rules;
`process` applies them too, when the store runs in a process of its own.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from coordinator.sql.connection import Connection

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_GROUP = 64  # calls per group: bounds how long the first of them waits for the commit
RETRIES = 10  # runs of a call that keeps meeting other writers' changes (several coordinators)
RETRY_PAUSE = 0.005  # seconds, times the attempt: the most a retry waits, drawn at random


@dataclass(slots=True)
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    alone: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class _Stop:
    """The mark that ends the thread: alone, so no group takes it in."""

    alone = True


_STOP = _Stop()


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Hand a call's outcome to its waiting caller (on the caller's loop), unless it gave up."""
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class StoreThread:
    def __init__(
        self,
        connection: Callable[[], Connection | None],
        *,
        on_rollback: Callable[[], None] = lambda: None,
        name: str = "sqlite-store",
    ) -> None:
        self._connection = connection
        self._on_rollback = on_rollback  # a group's commit failed: what its calls cached is void
        self._queue: queue.SimpleQueue[_Call | _Stop] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any, alone: bool = False) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(fn, args, alone, future, loop))
        return await future

    async def failure(self) -> str:
        """`StoreProcess.failure`'s twin: a thread does not die on its own, so this waits for ever."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Finish the calls already queued, then end the thread (blocks until it ended)."""
        self._queue.put(_STOP)
        self._thread.join()

    def _loop(self) -> None:
        leftover: _Call | _Stop | None = None  # taken from the queue but not fit for the last group
        while True:
            first = leftover if leftover is not None else self._queue.get()
            if isinstance(first, _Stop):
                return
            # The queue hands out calls and the stop mark alike: a group is of either.
            group, leftover = take_group(cast("_Call | _Stop", first), self._next_queued)
            calls = [call for call in group if isinstance(call, _Call)]
            outcomes = run_group(self._connection(), [(call.fn, call.args) for call in calls], self._on_rollback)
            for call, (result, error) in zip(calls, outcomes, strict=True):
                call.loop.call_soon_threadsafe(settle, call.future, result, error)

    def _next_queued(self) -> _Call | _Stop | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None


class _Groupable(Protocol):
    @property
    def alone(self) -> bool: ...


G = TypeVar("G", bound=_Groupable)


def take_group(first: G, next_call: Callable[[], G | None]) -> tuple[list[G], G | None]:
    """The calls to run as one group: `first`, then, unless it must run alone, the calls
    `next_call` hands out without waiting (None: no more) up to MAX_GROUP. Returns the group
    and the call taken but left for the next group (an `alone` one, or the stop mark)."""
    group = [first]
    while not first.alone and len(group) < MAX_GROUP:
        following = next_call()
        if following is None:
            break
        if following.alone:
            return group, following
        group.append(following)
    return group, None


Outcome = tuple[Any, BaseException | None]


def run_group(
    conn: Connection | None,
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]],
    on_rollback: Callable[[], None],
) -> list[Outcome]:
    """Run calls in one transaction (a lone call in its own); each call's (result, error)."""
    if len(calls) == 1:
        return [_outcome(*calls[0])]
    assert conn is not None, "group of store calls before the database was opened"
    try:
        conn.execute("BEGIN IMMEDIATE")
    except Exception as exc:
        return [(None, exc)] * len(calls)
    outcomes = [_outcome(fn, args, tries=1) for fn, args in calls]
    try:
        conn.execute("COMMIT")
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        on_rollback()
        if not _retryable(exc):
            log.error("group commit of %d store calls failed: %s", len(calls), exc)
            return [(None, exc)] * len(calls)
        outcomes = [(None, exc)] * len(calls)
    # Calls that met another writer's change run again, each alone in a new transaction.
    return [
        _outcome(fn, args) if _retryable(error) else (result, error)
        for (fn, args), (result, error) in zip(calls, outcomes, strict=True)
    ]


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...], tries: int = RETRIES) -> Outcome:
    for attempt in range(1, tries + 1):
        try:
            return fn(*args), None
        except Exception as exc:
            if attempt == tries or not _retryable(exc):
                return None, exc
            log.debug("store call %s met another writer's change; running it again", getattr(fn, "__name__", fn))
            # Apart from the writer it met, which may be running the same call right now.
            time.sleep(random.uniform(0, RETRY_PAUSE * attempt))
    raise AssertionError("unreachable")


def _retryable(error: BaseException | None) -> bool:
    """Did the call fail only because another writer changed what it read: a PostgreSQL
    serialization failure or deadlock, or a row it looked for and did not find, then could not
    insert because another writer just did (a unique violation; run again, the call sees that
    row)? SQLite has one writer and never fails so."""
    return getattr(error, "sqlstate", None) in ("40001", "40P01", "23505")
