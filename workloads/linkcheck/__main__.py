"""`python -m workloads.linkcheck`: the I/O shell that runs one unit of link checks.

Reads the unit from stdin, drives one check.LinkCheck per item, sends their fetches to the
peer on stdout (at most MAX_OUTSTANDING at once), routes the peer's fetch_results back, holds
back checks that asked to wait, then writes the result frame and exits with its status.
Opens no sockets. Logs to stderr.

Speaks process API versions 1 and 2 (its bundle asks for 2). In version 2 each item's record
goes to the peer as an `item` frame as soon as its check ends, so a big crawl unit's pages
reach the owner while it runs, and its fetches do without the peer's measurements
(`measure: false`), over the peer's shared connections.

A workload process is started for every unit, so start-up time is paid thousands of times in
a crawl: this shell uses a reader thread and a queue rather than asyncio, whose import alone
would cost more than the rest of the program's start-up.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import sys
import threading
import time
from collections import deque
from typing import BinaryIO

from workloads.linkcheck.check import Action, Fetch, LinkCheck, Unfinished, Verdict, Wait
from workloads.linkcheck.payload import BadPayload, Job, parse_job, within_caps
from workloads.process_api import (
    VERSIONS,
    ExitCode,
    FetchError,
    FetchRequest,
    FetchResult,
    ItemStream,
    ProtocolError,
    Result,
    Unit,
    answer_unit,
    encode_frame,
    read_frame_blocking,
)

MAX_OUTSTANDING = 16
_ALLOWANCE_GONE = "fetch allowance used up"

log = logging.getLogger("workloads.linkcheck")


class _Unit:
    """The checks of one unit and the bookkeeping of the conversation with the peer."""

    def __init__(self, job: Job, inbox: queue.Queue, stdout: BinaryIO, stream: ItemStream) -> None:
        self._machines = [LinkCheck(item) for item in job.items]
        self._inbox = inbox
        self._stdout = stdout
        self._stream = stream  # version 2: each verdict goes out as it is made
        self._ids = itertools.count(1)
        self._ready: deque[tuple[int, Fetch]] = deque()
        self._timers: list[tuple[float, int, Fetch]] = []  # (due, check index, fetch)
        self._in_flight: dict[int, int] = {}  # fetch id -> check index
        self._outcomes: dict[int, Verdict | Unfinished] = {}
        self._exhausted = False  # the peer said `limit`: it would say so to every later fetch

    def run(self) -> list[Verdict | Unfinished]:
        for index, machine in enumerate(self._machines):
            self._ready.append((index, machine.start()))
        while len(self._outcomes) < len(self._machines):
            self._release_due_timers()
            self._send_ready()
            if len(self._outcomes) == len(self._machines):
                break
            timeout = max(0.0, self._timers[0][0] - time.monotonic()) if self._timers else None
            try:
                message = self._inbox.get(timeout=timeout)
            except queue.Empty:
                continue  # a timer is due
            self._receive(message)
        return [self._outcomes[i] for i in range(len(self._machines))]

    def _release_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, index, fetch = heapq.heappop(self._timers)
            self._ready.append((index, fetch))

    def _send_ready(self) -> None:
        if self._exhausted:
            for index, _ in self._ready:
                self._outcomes[index] = Unfinished(self._machines[index].item.url, _ALLOWANCE_GONE)
            for _, index, _ in self._timers:
                self._outcomes[index] = Unfinished(self._machines[index].item.url, _ALLOWANCE_GONE)
            self._ready.clear()
            self._timers.clear()
            return
        frames = []
        while self._ready and len(self._in_flight) < MAX_OUTSTANDING:
            index, fetch = self._ready.popleft()
            request = FetchRequest(
                next(self._ids), fetch.method, fetch.url, fetch.want_body, measure=not self._stream.streaming
            )
            self._in_flight[request.id] = index
            frames.append(encode_frame(request.to_frame()))
        if frames:
            self._stdout.write(b"".join(frames))
            self._stdout.flush()

    def _receive(self, message: dict | ProtocolError | None) -> None:
        frame = _expect(message, "fetch_result", "the peer closed stdin before the unit was done")
        result = FetchResult.from_frame(frame)
        index = self._in_flight.pop(result.id, None)
        if index is None:
            raise ProtocolError(f"fetch_result for id {result.id}, which is not outstanding")
        if result.error == FetchError.LIMIT:
            self._exhausted = True
        self._act(index, self._machines[index].receive(result))

    def _act(self, index: int, action: Action) -> None:
        if isinstance(action, Fetch):
            self._ready.append((index, action))
        elif isinstance(action, Wait):
            heapq.heappush(self._timers, (time.monotonic() + action.seconds, index, action.then))
        else:
            self._outcomes[index] = action
            if isinstance(action, Verdict) and self._stream.streaming:
                self._stdout.write(self._stream.add(within_caps(action.to_dict())))
                self._stdout.flush()


def _expect(message: dict | ProtocolError | None, frame_type: str, if_closed: str) -> dict:
    """The frame the reader thread passed on, if it is of `frame_type`; else ProtocolError."""
    if isinstance(message, ProtocolError):
        raise message
    if message is None:
        raise ProtocolError(if_closed)
    if message["type"] != frame_type:
        raise ProtocolError(f"expected a {frame_type} frame, got {message['type']!r}")
    return message


def _read_frames(stdin: BinaryIO, inbox: queue.Queue) -> None:
    """Reader thread: every frame into `inbox`, then None at end of stream or the error."""
    try:
        while (frame := read_frame_blocking(stdin)) is not None:
            inbox.put(frame)
        inbox.put(None)
    except (ProtocolError, OSError) as exc:
        inbox.put(exc if isinstance(exc, ProtocolError) else ProtocolError(f"cannot read stdin: {exc}"))


def _run_unit(stdin: BinaryIO, stdout: BinaryIO) -> Result:
    inbox: queue.Queue = queue.Queue()
    threading.Thread(target=_read_frames, args=(stdin, inbox), daemon=True).start()
    unit = Unit.from_frame(_expect(inbox.get(), "unit", "stdin closed before the unit frame"))
    if unit.version not in VERSIONS:
        wanted = " or ".join(str(version) for version in VERSIONS)
        raise ProtocolError(f"process API version {unit.version} is not supported (want {wanted})")
    try:
        job = parse_job(unit.payload)
    except BadPayload as exc:
        log.error("bad input: %s", exc)
        return Result(ExitCode.BAD_INPUT, {"items": []}, f"bad input: {exc}")
    log.info("unit %d: job %d, %d items", unit.unit_id, job.job_id, len(job.items))

    stream = ItemStream(unit.version)
    outcomes = _Unit(job, inbox, stdout, stream).run()
    verdicts = [outcome for outcome in outcomes if isinstance(outcome, Verdict)]
    if not stream.streaming:  # version 1: every record in the result, in the unit's order
        for verdict in verdicts:
            stream.add(within_caps(verdict.to_dict()))
    unfinished = len(outcomes) - len(verdicts)
    if unfinished:
        log.warning("%d of %d items left unchecked: the peer's fetch allowance ran out", unfinished, len(outcomes))
        return stream.result(ExitCode.PARTIAL, f"{unfinished} items left unchecked: {_ALLOWANCE_GONE}")
    return stream.result(ExitCode.OK)


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Unbuffered stdin: the reader thread may still be blocked in a read at exit, and a
    # buffered reader's lock held at interpreter shutdown aborts the process.
    stdin = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    stdout = sys.stdout.buffer
    return answer_unit(lambda: _run_unit(stdin, stdout), stdout, log)


if __name__ == "__main__":
    sys.exit(main())
