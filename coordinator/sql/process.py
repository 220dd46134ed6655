"""The coordinator's SQLite store in a process of its own.

A coordinator under load is held to one core by its GIL: the HTTP side (signatures, msgpack,
aiohttp) and the store's Python (rules, rows) take turns, and the store, which every lease and
report waits for, waits for the HTTP side's turn. In a process of its own the store has a core
to itself.

The parent keeps the store's interface: `SqlStore` hands every call to `call` as it hands
it to a `StoreThread`, and the call runs here as the same function (a module-level function
crosses by its name) on the child's own database. The child groups the calls that queued up and commits them together
exactly as the thread does (`thread.take_group`, `run_group`), and answers each group
with one message after its commit, so an answer a peer got is on disk as before.

Messages are pickled over a pipe: a list of calls `(call id, function, args, alone)` to
the child (a sender thread batches what queued up, so the event loop never blocks on a full
pipe), a list of `(call id, result, error)` back (a receiver thread settles the futures).
The child ends when told to, or when the pipe closes (the coordinator died); if the child
dies, every waiting and later call fails with a StoreError that says so, and `failure`
returns (the coordinator then stops with that line: its commits are on disk, a restart goes on).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import multiprocessing
import pickle
import queue
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from typing import Any, NamedTuple, TypeVar

from coordinator.sql.connection import Connection
from coordinator.sql.thread import Outcome, run_group, settle, take_group
from coordinator.store import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

_JOIN_SECONDS = 10.0  # how long stop() waits for the child to close the database


class _Message(NamedTuple):
    """One call for the child (a tuple: cheap to pickle, one per call)."""

    call_id: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    alone: bool


def _never(*_: Any) -> None:
    """The stop mark's function: never called (the child ends at the mark)."""


_STOP = _Message(-1, _never, (), alone=True)


class Hosted(NamedTuple):
    """What the child needs of the store it hosts."""

    target: Any  # what every call's function is called with first (the child's database)
    connection: Callable[[], Connection | None]  # for group commits
    on_rollback: Callable[[], None]  # a group's commit failed (`StoreThread`'s on_rollback)
    close: Callable[[], None]  # the coordinator is gone: close the database


class StoreProcess:
    """Runs a store's methods in a child process; `call` is `StoreThread.call`'s twin.

    `host` must be picklable (a module-level function, through functools.partial): the child
    calls it to build what it hosts, and runs each call as `fn(target, *args)`, as the
    store's thread would run `fn(database, *args)`."""

    def __init__(self, host: Callable[[], Hosted], *, name: str = "sqlite-store") -> None:
        context = multiprocessing.get_context("spawn")  # the parent has threads: never fork it
        self._pipe, child_end = context.Pipe()
        root = logging.getLogger()
        self._process = context.Process(
            target=_serve, args=(child_end, host, root.getEffectiveLevel(), _formatter(root)), name=name, daemon=True
        )
        self._process.start()
        child_end.close()
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[asyncio.Future[Any], asyncio.AbstractEventLoop]] = {}
        self._lock = threading.Lock()  # guards _waiting and _ended between the loop and receiver
        self._ended: str | None = None  # why calls fail from now on
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._died = asyncio.Event()  # set when the child ended without being told to
        self._outbox: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name=f"{name}-send", daemon=True)
        self._receiver = threading.Thread(target=self._receive_loop, name=f"{name}-receive", daemon=True)
        self._sender.start()
        self._receiver.start()

    async def call(self, fn: Callable[..., T], *args: Any, alone: bool = False) -> T:
        """Run `fn(target, *args)` in the child (`fn` is module-level: it crosses by name)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        call_id = next(self._ids)
        with self._lock:
            if self._ended is not None:
                raise StoreError(self._ended)
            self._waiting[call_id] = (future, loop)
        self._outbox.put(_Message(call_id, fn, args, alone))
        return await future

    async def failure(self) -> str:
        """Wait until the child died without being told to stop; why it can no longer work."""
        await self._died.wait()
        assert self._ended is not None
        return self._ended

    def stop(self) -> None:
        """Let the calls already sent finish, end the child, wait for it (blocks)."""
        self._stopping = True
        self._outbox.put(_STOP)
        self._sender.join()
        self._process.join(_JOIN_SECONDS)
        if self._process.is_alive():
            log.error("store process did not end within %g s; killing it", _JOIN_SECONDS)
            self._process.kill()
            self._process.join()
        self._receiver.join()
        self._pipe.close()

    def _send_loop(self) -> None:
        while True:
            batch = [self._outbox.get()]
            while batch[-1] is not _STOP:
                try:
                    batch.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            try:
                data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                batch, data = self._without_unpicklable(batch)
            try:
                self._pipe.send_bytes(data)
            except OSError:
                # The child is gone (or its pipe is): the receiver sees the pipe close and fails
                # every waiting call with the child's exit code. Make sure it does close.
                self._process.kill()
                return
            if batch and batch[-1] is _STOP:
                return

    def _without_unpicklable(self, batch: list[_Message]) -> tuple[list[_Message], bytes]:
        """Fail the calls whose arguments cannot be pickled; the rest go on."""
        kept = []
        for message in batch:
            try:
                pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                self._settle(message.call_id, None, StoreError(f"store call {message.fn.__qualname__}: {exc}"))
            else:
                kept.append(message)
        return kept, pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL)

    def _receive_loop(self) -> None:
        while True:
            try:
                answers: list[tuple[int, Any, BaseException | None]] = self._pipe.recv()
            except (EOFError, OSError):
                break
            except Exception:  # an answer that cannot be read: its callers would wait for ever
                log.exception("cannot read the store process's answers; stopping it")
                self._process.kill()
                break
            for call_id, result, error in answers:
                self._settle(call_id, result, error)
        self._process.join(_JOIN_SECONDS)
        self._end(f"the store process ended (exit code {self._process.exitcode})")

    def _settle(self, call_id: int, result: Any, error: BaseException | None) -> None:
        with self._lock:
            waiting = self._waiting.pop(call_id, None)
        if waiting is not None:
            future, loop = waiting
            loop.call_soon_threadsafe(settle, future, result, error)

    def _end(self, why: str) -> None:
        with self._lock:
            if self._ended is None:
                self._ended = why
            waiting, self._waiting = self._waiting, {}
        for future, loop in waiting.values():
            loop.call_soon_threadsafe(settle, future, None, StoreError(why))
        if not self._stopping:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._died.set)


def _formatter(root: logging.Logger) -> logging.Formatter | None:
    """The root handler's formatter, for the child to log alike, if it can cross over."""
    for handler in root.handlers:
        if handler.formatter is not None:
            try:
                pickle.dumps(handler.formatter)
            except Exception:
                return None
            return handler.formatter
    return None


# ---- the child -----------------------------------------------------------------------------


def _serve(pipe: Pipe, host: Callable[[], Hosted], level: int, formatter: logging.Formatter | None) -> None:
    """The child: run the calls that arrive, a group at a time, until told to stop. It logs
    as the coordinator does: at its level, in its format, to the stderr they share."""
    handler = logging.StreamHandler(sys.stderr)
    if formatter is not None:
        handler.setFormatter(formatter)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(level)
    store = host()
    queued: collections.deque[_Message] = collections.deque()

    def next_queued() -> _Message | None:
        while not queued and pipe.poll():
            queued.extend(pipe.recv())
        return queued.popleft() if queued else None

    try:
        while True:
            while not queued:  # a message may be empty (its calls could not be pickled)
                queued.extend(pipe.recv())
            first = queued.popleft()
            if first.call_id == _STOP.call_id:
                return
            group, leftover = take_group(first, next_queued)
            if leftover is not None:
                queued.appendleft(leftover)
            outcomes = run_group(
                store.connection(), [(m.fn, (store.target, *m.args)) for m in group], store.on_rollback
            )
            pipe.send_bytes(_answers(group, outcomes))
    except (EOFError, OSError):
        pass  # the coordinator is gone: nobody waits for an answer
    finally:
        store.close()


def _answers(group: list[_Message], outcomes: list[Outcome]) -> bytes:
    answers = [(m.call_id, result, _crossing(error)) for m, (result, error) in zip(group, outcomes, strict=True)]
    try:
        return pickle.dumps(answers, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return pickle.dumps([_picklable(*answer) for answer in answers], protocol=pickle.HIGHEST_PROTOCOL)


def _crossing(error: BaseException | None) -> BaseException | None:
    """The error as the coordinator can rebuild it: some exceptions pickle but do not unpickle
    (their __init__ wants other arguments); those cross as a StoreError naming them."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        return StoreError(f"{type(error).__name__}: {error}")
    return error


def _picklable(call_id: int, result: Any, error: BaseException | None) -> tuple[int, Any, BaseException | None]:
    try:
        pickle.dumps((result, error), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return call_id, None, StoreError(f"store answer cannot cross to the coordinator: {error or exc}")
    return call_id, result, error
