"""Runs one work unit in a workload subprocess and supervises the process API conversation.

The workload is not trusted: whatever it does (crash, hang, garbage, floods, lies about its
exit status) fails only its own unit, with a one-line reason, and leaves nothing behind: the
process group is killed, the private working directory removed, no zombie kept. A sandbox that
does not build is no failure of the workload's: `run_workload` raises SandboxFailed for it (see
peer/sandbox.py: the mark a built sandbox writes first).

The workload runs in its own session with resource limits (see peer/platform.py) and a
scrubbed environment: confined in the sandbox (peer/sandbox.py), with a private tmpfs as cwd,
HOME and TMPDIR; or, for a trusted owner's bundle where no sandbox can be built, unconfined in a
fresh directory under the peer's work dir. Its stderr is its log: forwarded to logging
(bounded) and the tail returned with the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peer.platform import ResourceLimits, kill_group, limits_preexec, new_group_options, within_hard_limits
from peer.sandbox import STARTED_MARK, TMP_DIR, Confinement, Sandbox, SandboxFailed
from workloads.process_api import (
    MAX_FRAME,
    ExitCode,
    FetchError,
    FetchRequest,
    FetchResult,
    FrameDecoder,
    Item,
    Progress,
    ProtocolError,
    Result,
    Unit,
    encode_frame,
)

log = logging.getLogger(__name__)
workload_log = logging.getLogger(f"{__name__}.workload")  # workloads' stderr, to silence apart

STDERR_TAIL_BYTES = 4096
MAX_STDOUT_BYTES = 4 * MAX_FRAME
MAX_CONCURRENT_FETCHES = 32
EXIT_GRACE = 5.0  # seconds a workload has to exit once its stdout is done
PIPE_GRACE = 1.0  # seconds for a killed workload's pipes to close
_KEPT_ENV = ("PATH", "LANG", "LC_ALL")  # the volunteer's PYTHONPATH names its own files: not kept
UNIT_DIR_PREFIX = "osaas-unit-"
_SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_READ_CHUNK = 64 * 1024
_MAX_LOG_LINES = 1000
_MAX_LOG_LINE = 2000
_MAX_ERROR = 300

Fetch = Callable[[FetchRequest], Awaitable[FetchResult]]
Progressed = Callable[[int], None]  # a version 2 workload's items done so far
# A version 2 workload's streamed record and its size in bytes (msgpack), handed on while the
# unit runs; the call may wait (the peer holds only so much not yet delivered).
Streamed = Callable[[dict[str, Any], int], Awaitable[None]]
MAX_ITEM_BYTES = 2 * 1024 * 1024  # one streamed record (the coordinator takes at most 1 MiB of it)
NO_FETCH_CAPABILITY = "this bundle did not declare the fetch capability"


@dataclass(frozen=True, slots=True)
class WorkloadOutcome:
    exit_code: ExitCode
    payload: dict[str, Any] | None
    error: str | None  # one line
    stderr_tail: str


class _Fault(Exception):
    """The workload broke the rules; the message is the one-line reason its unit failed."""


class _NotBuilt(_Fault):
    """The sandbox ended, or wrote something else, before its STARTED_MARK: it did not build."""


async def run_workload(
    argv: list[str],
    unit: Unit,
    fetch: Fetch | None,
    *,
    timeout: float = 120.0,
    limits: ResourceLimits = ResourceLimits(),
    max_fetches: int = 10_000,
    workdir_parent: Path | None = None,
    env: Mapping[str, str] | None = None,
    sandbox: Sandboxed | None = None,
    progressed: Progressed | None = None,
    streamed: Streamed | None = None,
) -> WorkloadOutcome:
    """Run `argv` on `unit`, answering its fetches with `fetch`. Never raises for anything
    the workload does; cancellation kills the workload and propagates; SandboxFailed when the
    sandbox did not build (nothing of the workload's ran).

    `fetch` None means the workload may not fetch (its bundle did not declare the capability):
    each fetch it asks for is answered with a `policy` error instead. `env` is added to the
    scrubbed environment (e.g. the bundle's PYTHONPATH); HOME and TMPDIR stay the private
    working directory whatever it says. With `sandbox` the workload runs confined (see
    peer/sandbox.py; `argv` and `env` then name paths as seen inside) in a private tmpfs;
    without, in a fresh directory under `workdir_parent`, removed when it ends. A version 2
    unit's `progress` frames go to `progressed` and its `item` frames to `streamed` (without
    it, they are put first in the result payload's items, as if the workload had not streamed
    them); a version 1 workload that sends either breaks the protocol. A workload that streams
    more items than its unit holds, or a record larger than MAX_ITEM_BYTES, fails."""
    if sandbox is not None:
        # The limits are set inside, once the sandbox is built (peer/sandbox.py).
        command = sandbox.sandbox.command(argv, sandbox.confinement, within_hard_limits(limits))
        # Nothing of the volunteer's environment but the language: its paths do not exist inside.
        parent = {name: os.environ[name] for name in ("LANG", "LC_ALL") if name in os.environ} | {"PATH": _SANDBOX_PATH}
        return await _start_and_supervise(
            command,
            unit,
            fetch,
            timeout,
            limits,
            max_fetches,
            cwd=None,
            env=_scrubbed_env(parent, Path(TMP_DIR), env or {}),
            sandboxed=True,
            progressed=progressed,
            streamed=streamed,
        )
    workdir = Path(tempfile.mkdtemp(prefix=f"{UNIT_DIR_PREFIX}{unit.unit_id}-", dir=workdir_parent))
    try:
        return await _start_and_supervise(
            argv,
            unit,
            fetch,
            timeout,
            limits,
            max_fetches,
            cwd=workdir,
            env=_scrubbed_env(os.environ, workdir, env or {}),
            sandboxed=False,
            progressed=progressed,
            streamed=streamed,
        )
    finally:
        _remove_tree(workdir)


@dataclass(frozen=True, slots=True)
class Sandboxed:
    """How to confine one unit: the sandbox this machine builds and what the unit sees in it."""

    sandbox: Sandbox
    confinement: Confinement


async def _start_and_supervise(
    argv: list[str],
    unit: Unit,
    fetch: Fetch | None,
    timeout: float,
    limits: ResourceLimits,
    max_fetches: int,
    *,
    cwd: Path | None,
    env: dict[str, str],
    sandboxed: bool,
    progressed: Progressed | None,
    streamed: Streamed | None,
) -> WorkloadOutcome:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd or "/",
            env=env,
            preexec_fn=None if sandboxed else limits_preexec(limits),
            **new_group_options(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        if sandboxed:
            raise SandboxFailed(_one_line(f"could not start the sandbox {argv[0]}: {exc}")) from None
        return WorkloadOutcome(ExitCode.FAILED, None, _one_line(f"could not start workload {argv[0]}: {exc}"), "")
    return await _supervise(
        process, unit, fetch, timeout, max_fetches, sandboxed=sandboxed, progressed=progressed, streamed=streamed
    )


def remove_leftovers(workdir_parent: Path) -> int:
    """Remove unit directories a killed peer left behind in `workdir_parent` (run at start,
    before any unit runs); how many there were."""
    count = 0
    for path in workdir_parent.glob(f"{UNIT_DIR_PREFIX}*"):
        _remove_tree(path)
        count += 1
    return count


def _scrubbed_env(parent: Mapping[str, str], home: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment a workload gets: nothing of the volunteer's but what it needs to run,
    plus what its bundle needs (`extra`: a Python bundle's PYTHONPATH)."""
    env = {name: parent[name] for name in _KEPT_ENV if name in parent}
    env.update(extra)
    env["HOME"] = env["TMPDIR"] = str(home)
    return env


async def _supervise(
    process: asyncio.subprocess.Process,
    unit: Unit,
    fetch: Fetch | None,
    timeout: float,
    max_fetches: int,
    *,
    sandboxed: bool,
    progressed: Progressed | None,
    streamed: Streamed | None,
) -> WorkloadOutcome:
    assert process.stderr is not None
    stderr_log = _StderrLog(unit.unit_id)
    stderr_task = asyncio.create_task(stderr_log.pump(process.stderr))
    conversation = _Conversation(process, unit, fetch, max_fetches, sandboxed, progressed, streamed)
    not_built = None
    try:
        try:
            async with asyncio.timeout(timeout):
                exit_code, payload, error = await conversation.run()
        except TimeoutError:
            error = f"workload did not finish within {timeout:g} s and was killed"
            exit_code, payload = ExitCode.FAILED, None
            if not conversation.built:
                not_built = f"the sandbox was not built within {timeout:g} s"
        except _Fault as fault:
            exit_code, payload, error = ExitCode.FAILED, None, str(fault)
            if isinstance(fault, _NotBuilt):
                not_built = str(fault)
    finally:
        kill_group(process)
        await _reap(process, stderr_task)
    if not_built is not None:
        said = stderr_log.tail().strip().splitlines()
        raise SandboxFailed(_one_line(f"{not_built}: {said[-1] if said else 'it said nothing'}"))
    if exit_code is ExitCode.FAILED:
        log.info("unit %d failed: %s", unit.unit_id, error or "the workload gave no reason")
    return WorkloadOutcome(exit_code, payload, _one_line(error) if error else None, stderr_log.tail())


async def _reap(process: asyncio.subprocess.Process, stderr_task: asyncio.Task[None]) -> None:
    """Collect a killed workload: asyncio's wait() returns only once its pipes are closed, so
    unread output is read and dropped; the pipes close when the last process holding them is
    gone, which the group kill ensures unless a process left the group (then we close them)."""
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    stdout_task = asyncio.create_task(_discard(process.stdout))
    _, pending = await asyncio.wait({stdout_task, stderr_task}, timeout=PIPE_GRACE)
    if pending:
        log.warning("pid %d: a process that left the workload's process group still holds its pipes", process.pid)
        for task in pending:
            task.cancel()
        process._transport.close()  # type: ignore[attr-defined]  # no public way to close the pipes
    await process.wait()


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(_READ_CHUNK):
        pass


@dataclass
class _Conversation:
    """One unit's process API conversation: the unit out, fetches served, the result in."""

    process: asyncio.subprocess.Process
    unit: Unit
    fetch: Fetch | None  # None: the workload may not fetch
    max_fetches: int
    sandboxed: bool  # bubblewrap passes on a death by signal N as exit code 128 + N
    progressed: Progressed | None = None  # a version 2 workload's progress goes here
    streamed: Streamed | None = None  # ... and its items; None: kept for the result
    built: bool = field(default=False, init=False)  # the workload may have run (sandbox built or none)
    _mark: bytearray = field(default_factory=bytearray, init=False)
    _fetch_count: int = field(default=0, init=False)
    _items: list[dict[str, Any]] = field(default_factory=list, init=False)  # streamed, without `streamed`
    _item_count: int = field(default=0, init=False)
    _seen_ids: set[int] = field(default_factory=set, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    # Bounds the answers held in memory (each up to the egress body cap) for a workload that
    # asks for many bodies at once but reads its stdin slowly or never.
    _fetch_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_FETCHES), init=False
    )

    async def run(self) -> tuple[ExitCode, dict[str, Any] | None, str | None]:
        self.built = not self.sandboxed
        try:
            async with asyncio.TaskGroup() as group:
                self._write(self.unit.to_frame())
                result = await self._read_until_result(group)
                for task in self._tasks:
                    task.cancel()  # answers nobody will read
        except* _Fault as faults:
            raise faults.exceptions[0] from None
        return await self._finish(result)

    async def _read_until_result(self, group: asyncio.TaskGroup) -> Result | None:
        assert self.process.stdout is not None
        decoder = FrameDecoder()
        received = 0
        while chunk := await self.process.stdout.read(_READ_CHUNK):
            received += len(chunk)
            if received > MAX_STDOUT_BYTES:
                raise _Fault(f"workload wrote more than {MAX_STDOUT_BYTES // (1024 * 1024)} MiB to stdout")
            if not self.built:
                chunk = self._after_mark(chunk)
                if not chunk:
                    continue
            try:
                messages = decoder.feed(chunk)
            except ProtocolError as exc:
                raise _Fault(f"workload broke the process API: {exc}") from None
            for index, message in enumerate(messages):
                result = self._handle(message, group)
                if isinstance(result, Item):
                    await self._on_item(result)
                elif result is not None:
                    if index != len(messages) - 1 or decoder.pending:
                        raise _Fault("workload wrote to stdout after its result")
                    return result
        if not self.built:
            raise _NotBuilt("the sandbox ended before it was built")
        if decoder.pending:
            raise _Fault("workload's stdout ended inside a frame")
        return None

    def _after_mark(self, chunk: bytes) -> bytes:
        """What of `chunk` follows the sandbox's STARTED_MARK (b"" while it is not all here)."""
        self._mark += chunk
        if not STARTED_MARK.startswith(bytes(self._mark[: len(STARTED_MARK)])):
            raise _NotBuilt("the sandbox wrote something else than its mark")
        if len(self._mark) < len(STARTED_MARK):
            return b""
        self.built = True
        return bytes(self._mark[len(STARTED_MARK) :])

    def _handle(self, message: dict[str, Any], group: asyncio.TaskGroup) -> Result | Item | None:
        kind = message["type"]
        try:
            if kind == "fetch":
                self._on_fetch(FetchRequest.from_frame(message), group)
                return None
            if kind == "result":
                return Result.from_frame(message)
            if kind == "progress" and self.unit.version >= 2:
                done = Progress.from_frame(message).done
                if self.progressed is not None:
                    self.progressed(done)
                return None
            if kind == "item" and self.unit.version >= 2:
                return Item.from_frame(message)
        except ProtocolError as exc:
            raise _Fault(f"workload broke the process API: {exc}") from None
        raise _Fault(f"workload sent a frame of unexpected type {kind!r}")

    async def _on_item(self, item: Item) -> None:
        """A streamed record: counted against the unit's items, sized, handed on (which may
        wait: the workload's stdout is not read meanwhile, so it cannot stream faster than
        its items are delivered)."""
        self._item_count += 1
        items = self.unit.payload.get("items")
        most = len(items) if isinstance(items, list) else 0
        if self._item_count > most:
            raise _Fault(f"workload streamed more items than its unit holds ({most})")
        size = len(encode_frame(item.to_frame()))
        if size > MAX_ITEM_BYTES:
            raise _Fault(
                f"workload streamed an item of {size} bytes; at most {MAX_ITEM_BYTES // (1024 * 1024)} MiB are allowed"
            )
        if self.streamed is None:
            self._items.append(item.record)
        else:
            await self.streamed(item.record, size)

    def _on_fetch(self, request: FetchRequest, group: asyncio.TaskGroup) -> None:
        if request.id in self._seen_ids:
            raise _Fault(f"workload reused fetch id {request.id}")
        self._seen_ids.add(request.id)
        self._fetch_count += 1
        if self._fetch_count > 2 * self.max_fetches:
            raise _Fault(f"workload kept fetching after its allowance of {self.max_fetches} fetches was used up")
        if self._fetch_count > self.max_fetches:
            message = f"this unit's allowance of {self.max_fetches} fetches is used up"
            limited = FetchResult(id=request.id, url=request.url, error=FetchError.LIMIT.value, message=message)
            self._write(limited.to_frame())
            return
        if self.fetch is None:
            refused = FetchResult(
                id=request.id, url=request.url, error=FetchError.POLICY.value, message=NO_FETCH_CAPABILITY
            )
            self._write(refused.to_frame())
            return
        task = group.create_task(self._serve(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, request: FetchRequest) -> None:
        assert self.fetch is not None  # checked before the task was made
        async with self._fetch_slots:
            result = await self.fetch(request)
            self._write(result.to_frame())
            assert self.process.stdin is not None
            try:
                await self.process.stdin.drain()
            except ConnectionError:
                pass  # the workload closed its stdin; whether that matters shows on its stdout

    def _write(self, frame: dict[str, Any]) -> None:
        """Queue a frame on the workload's stdin, in call order, without waiting: reading the
        workload's stdout must never wait on the workload reading its stdin."""
        assert self.process.stdin is not None
        if not self.process.stdin.is_closing():
            self.process.stdin.write(encode_frame(frame))

    async def _finish(self, result: Result | None) -> tuple[ExitCode, dict[str, Any] | None, str | None]:
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(EXIT_GRACE):
                if result is not None and await self.process.stdout.read(1):
                    raise _Fault("workload wrote to stdout after its result")
                returncode = await self.process.wait()
                if self.sandboxed and 128 < returncode <= 128 + 64:
                    returncode = 128 - returncode
        except TimeoutError:
            done = "sent its result" if result is not None else "closed its stdout"
            raise _Fault(f"workload {done} but did not exit within {EXIT_GRACE:g} s") from None
        if result is None:
            raise _Fault(f"workload {_describe_exit(returncode)} without a result")
        if returncode != result.status:
            status = ExitCode(result.status)
            raise _Fault(f"workload's result says {status.name} ({status.value}) but it {_describe_exit(returncode)}")
        payload = result.payload
        if self._items and isinstance(payload.get("items"), list):
            payload = payload | {"items": self._items + payload["items"]}
        return ExitCode(result.status), payload, result.error


class _StderrLog:
    """Forwards a workload's stderr lines to logging (up to a limit) and keeps its tail."""

    def __init__(self, unit_id: int) -> None:
        self._unit_id = unit_id
        self._tail = bytearray()
        self._line = bytearray()
        self._lines_logged = 0

    async def pump(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ_CHUNK):
            self._tail += chunk
            del self._tail[:-STDERR_TAIL_BYTES]
            *complete, rest = (bytes(self._line) + chunk).split(b"\n")
            for line in complete:
                self._log(line)
            self._line = bytearray(rest[:_MAX_LOG_LINE])
        if self._line:
            self._log(bytes(self._line))

    def tail(self) -> str:
        return self._tail.decode("utf-8", errors="replace")

    def _log(self, line: bytes) -> None:
        self._lines_logged += 1
        if self._lines_logged <= _MAX_LOG_LINES:
            text = line[:_MAX_LOG_LINE].decode("utf-8", errors="replace").rstrip()
            workload_log.info("unit %d: %s", self._unit_id, text)
        elif self._lines_logged == _MAX_LOG_LINES + 1:
            workload_log.info("unit %d: further log lines are not forwarded", self._unit_id)


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _remove_tree(path: Path) -> None:
    def make_writable_and_retry(function: Callable[[str], object], failed: str, _exc: object) -> None:
        # The workload may have taken away its own write permission on a directory.
        os.chmod(os.path.dirname(failed), 0o700)
        function(failed)

    try:
        shutil.rmtree(path, onerror=make_writable_and_retry)
    except OSError as exc:
        log.warning("could not remove workload directory %s: %s", path, exc)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_ERROR else line[: _MAX_ERROR - 1] + "…"
