"""`python -m workloads.linkcheck`: the asyncio shell that runs one unit of link checks.

Reads the unit from stdin, drives one check.LinkCheck per item, sends their fetches to the
peer on stdout (at most MAX_OUTSTANDING at once), routes the peer's fetch_results back,
sleeps where a check asks to wait, then writes the result frame and exits with its status.
Opens no sockets. Logs to stderr.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import stat
import sys

from workloads.linkcheck.check import Action, Fetch, Item, LinkCheck, Unfinished, Verdict, Wait
from workloads.linkcheck.payload import BadPayload, parse_job, result_payload
from workloads.process_api import (
    PROTOCOL_VERSION,
    ExitCode,
    FetchError,
    FetchRequest,
    FetchResult,
    ProtocolError,
    Result,
    Unit,
    read_frame,
    write_frame,
)

MAX_OUTSTANDING = 16

log = logging.getLogger("workloads.linkcheck")


class _Peer:
    """Our end of the conversation once the unit has arrived: fetches out, results routed in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[FetchResult]] = {}
        self._slots = asyncio.Semaphore(MAX_OUTSTANDING)
        self._exhausted = False

    async def fetch(self, fetch: Fetch) -> FetchResult | None:
        """The peer's answer to `fetch`; None, without asking, once the peer has said `limit`:
        it would answer every later fetch the same way, and kills a workload that keeps asking."""
        async with self._slots:
            if self._exhausted:
                return None
            request = FetchRequest(next(self._ids), fetch.method, fetch.url, fetch.want_body)
            answer = asyncio.get_running_loop().create_future()
            self._waiting[request.id] = answer
            write_frame(self._writer, request.to_frame())
            await self._writer.drain()
            return await answer

    async def route_results(self) -> None:
        """Runs until cancelled; raises ProtocolError when the peer breaks the protocol."""
        while True:
            frame = await read_frame(self._reader)
            if frame is None:
                raise ProtocolError("the peer closed stdin before the unit was done")
            if frame["type"] != "fetch_result":
                raise ProtocolError(f"expected a fetch_result frame, got {frame['type']!r}")
            result = FetchResult.from_frame(frame)
            answer = self._waiting.pop(result.id, None)
            if answer is None:
                raise ProtocolError(f"fetch_result for id {result.id}, which is not outstanding")
            # Set before the answer wakes anyone, so no freed slot is used for a doomed fetch.
            self._exhausted = self._exhausted or result.error == FetchError.LIMIT
            answer.set_result(result)


async def _check(item: Item, peer: _Peer) -> Verdict | Unfinished:
    machine = LinkCheck(item)
    action: Action = machine.start()
    while not isinstance(action, (Verdict, Unfinished)):
        if isinstance(action, Wait):
            await asyncio.sleep(action.seconds)
            action = action.then
        answer = await peer.fetch(action)
        if answer is None:
            return Unfinished(item.url, "fetch allowance used up")
        action = machine.receive(answer)
    return action


async def _run_unit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Result:
    frame = await read_frame(reader)
    if frame is None:
        raise ProtocolError("stdin closed before the unit frame")
    if frame["type"] != "unit":
        raise ProtocolError(f"expected a unit frame first, got {frame['type']!r}")
    unit = Unit.from_frame(frame)
    if unit.version != PROTOCOL_VERSION:
        raise ProtocolError(f"process API version {unit.version} is not supported (want {PROTOCOL_VERSION})")
    try:
        job = parse_job(unit.payload)
    except BadPayload as exc:
        log.error("bad input: %s", exc)
        return Result(ExitCode.BAD_INPUT, {"items": []}, f"bad input: {exc}")
    log.info("unit %d: job %d, %d items", unit.unit_id, job.job_id, len(job.items))

    peer = _Peer(reader, writer)
    router = asyncio.create_task(peer.route_results())
    tasks = [asyncio.create_task(_check(item, peer)) for item in job.items]
    try:
        checks = asyncio.gather(*tasks)
        done, _ = await asyncio.wait({router, checks}, return_when=asyncio.FIRST_COMPLETED)
        if router in done:
            router.result()  # the router only ever finishes by raising
        outcomes = checks.result()
    finally:
        # Whatever happened, no check may write another fetch frame after the result frame.
        router.cancel()
        for task in tasks:
            task.cancel()

    verdicts = [outcome for outcome in outcomes if isinstance(outcome, Verdict)]
    unfinished = len(outcomes) - len(verdicts)
    if unfinished:
        log.warning("%d of %d items left unchecked: the peer's fetch allowance ran out", unfinished, len(outcomes))
        error = f"{unfinished} items left unchecked: fetch allowance used up"
        return Result(ExitCode.PARTIAL, result_payload(verdicts), error)
    return Result(ExitCode.OK, result_payload(verdicts))


async def _stdio() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout.buffer)
    # With no write buffer allowance, drain() returns only once every byte is in the pipe,
    # so the result frame is fully written before the process exits.
    transport.set_write_buffer_limits(high=0)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def _serve() -> int:
    reader, writer = await _stdio()
    try:
        result = await _run_unit(reader, writer)
    except ProtocolError as exc:
        log.error("protocol error: %s", exc)
        result = Result(ExitCode.FAILED, {"items": []}, f"protocol error: {exc}")
    except Exception as exc:
        log.exception("internal failure")
        result = Result(ExitCode.FAILED, {"items": []}, f"internal failure: {type(exc).__name__}")
    try:
        write_frame(writer, result.to_frame())
        await writer.drain()
    except OSError as exc:
        log.error("could not write the result frame: %s", exc)
        return ExitCode.FAILED
    return result.status


def _is_pipe(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # asyncio cannot watch files or /dev/null (it would wait forever), and a peer always
    # gives the workload pipes.
    if not (_is_pipe(sys.stdin.fileno()) and _is_pipe(sys.stdout.fileno())):
        log.error("stdin and stdout must be pipes: this program is run by an osaas peer")
        return ExitCode.FAILED
    try:
        return asyncio.run(_serve())
    except Exception:
        log.exception("internal failure")
        return ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
