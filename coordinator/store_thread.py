"""The one thread that owns the coordinator's SQLite connection, with group commit.

Calls run one at a time in the order they arrive. The calls that queued up while one group ran
go together as the next group: one `BEGIN IMMEDIATE`, each call in turn, one `COMMIT`, so many
requests share one fsync (with `synchronous=FULL` the fsync is most of a small transaction's
cost). A call's own transaction becomes a savepoint inside the group (see
`SqliteStore._transaction`): a call that fails takes back only its own changes. No caller
hears back before the commit that holds its changes returned, so an answer a peer got is on
disk, as it was with a transaction per call.

A lone call runs without a group around it, exactly as before; calls marked `alone` (opening
and closing the database) never share one.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_GROUP = 64  # calls per group: bounds how long the first of them waits for the commit


@dataclass(slots=True)
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    alone: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class StoreThread:
    def __init__(
        self,
        connection: Callable[[], sqlite3.Connection | None],
        *,
        on_rollback: Callable[[], None] = lambda: None,
        name: str = "sqlite-store",
    ) -> None:
        self._connection = connection
        self._on_rollback = on_rollback  # a group's commit failed: what its calls cached is void
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any, alone: bool = False) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(fn, args, alone, future, loop))
        return await future

    def stop(self) -> None:
        """Finish the calls already queued, then end the thread (blocks until it ended)."""
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        pending: list[_Call | None] = []  # taken from the queue but not fit for the last group
        while True:
            first = pending.pop() if pending else self._queue.get()
            if first is None:
                return
            group = [first]
            while not first.alone and len(group) < MAX_GROUP:
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is None or following.alone:
                    pending.append(following)
                    break
                group.append(following)
            for call, (result, error) in zip(group, self._run_group(group)):
                call.loop.call_soon_threadsafe(_settle, call.future, result, error)

    def _run_group(self, group: list[_Call]) -> list[tuple[Any, BaseException | None]]:
        if len(group) == 1:
            return [_outcome(group[0])]
        conn = self._connection()
        assert conn is not None, "group of store calls before the database was opened"
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(None, exc)] * len(group)
        outcomes = [_outcome(call) for call in group]
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("group commit of %d store calls failed: %s", len(group), exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._on_rollback()
            return [(None, exc)] * len(group)
        return outcomes


def _outcome(call: _Call) -> tuple[Any, BaseException | None]:
    try:
        return call.fn(*call.args), None
    except Exception as exc:
        return None, exc
