"""`osaas check`: a whole network on this machine for one link check.

An embedded coordinator (SQLite in a temp dir) runs in this process; N peers run as real
`osaas peer run` subprocesses; the job is submitted and watched over HTTP like any owner would.
`osaas probe` runs on the same embedded network (`embedded_coordinator`, `embedded_peers`,
`watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from yarl import URL

from osaas import owner
from overlay import certificates, http
from overlay.errors import OsaasError
from overlay.identity import Identity
from workloads.linkcheck import report

CHECK_NETWORK = "check"  # the embedded network's name in its own DHT


class CheckError(OsaasError):
    """A usage or runtime problem: one line for the user, exit code 2."""


@dataclass(frozen=True, slots=True)
class CheckOptions:
    urls: tuple[str, ...]
    peers: int = 2
    depth: int | None = None
    allow_private: bool = False
    fmt: str = "text"
    output: Path | None = None
    progress: bool = True
    keep: Path | None = None  # where to leave the embedded network's files (a new directory)


def validate_url(text: str) -> str:
    """The URL as the checker will use it, or CheckError saying what is wrong with it."""
    try:
        url = URL(text.strip())
    except (ValueError, TypeError) as exc:
        raise CheckError(f"not a valid URL: {text!r} ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise CheckError(f"not an absolute http(s) URL: {text!r}")
    return str(url.with_fragment(None))


async def run_check(options: CheckOptions, console: Console) -> list[dict[str, Any]]:
    """Check `options.urls` with an embedded network; return the result items."""
    seeds = [validate_url(u) for u in options.urls]
    if not 1 <= options.peers <= 64:
        raise CheckError("--peers must be between 1 and 64")
    if options.keep is not None:
        try:
            options.keep.mkdir(parents=True)
        except OSError as exc:
            raise CheckError(f"cannot keep the files in {options.keep}: {exc.strerror or exc}") from None
    kept = contextlib.nullcontext(str(options.keep)) if options.keep is not None else None
    with kept or tempfile.TemporaryDirectory(prefix="osaas-check-") as tmp:
        workdir = Path(tmp)
        async with (
            embedded_coordinator(workdir) as network,
            embedded_peers(options.peers, options.allow_private, network, workdir) as peers,
        ):
            coordinator_url = network.coordinator_url
            async with aiohttp.ClientSession() as session:
                job_input = {"urls": seeds, "depth": options.depth}
                try:
                    job_id = await owner.submit(session, coordinator_url, network.operator, "linkcheck", job_input)
                except http.Rejected as exc:
                    raise CheckError(f"the job was refused: {exc}") from exc
                await watch(
                    session,
                    coordinator_url,
                    network.operator,
                    job_id,
                    "checking links",
                    console,
                    options.progress,
                    lambda: peers_gone(peers, workdir),
                )
                items = report.items(await owner.results(session, coordinator_url, network.operator, job_id))
    _refuse_unreachable_seeds(seeds, items)
    return items


def _refuse_unreachable_seeds(seeds: list[str], items: list[dict[str, Any]]) -> None:
    by_url = {item["url"]: item for item in items}
    failed = [by_url[s] for s in seeds if s in by_url and by_url[s]["status"] is None and by_url[s]["result"] != "ok"]
    if failed and len(failed) == len(seeds):
        first = failed[0]
        raise CheckError(f"cannot check {first['url']}: {first.get('error') or first['result']}")


@dataclass(frozen=True, slots=True)
class EmbeddedNetwork:
    coordinator_url: str
    bootstrap: str  # HOST:PORT of the embedded coordinator's DHT node
    operator: Identity  # the embedded coordinator's key: it signs the link-check bundle and the job
    network_key: str  # hex: the embedded network's own key, which admitted the coordinator


@contextlib.asynccontextmanager
async def embedded_coordinator(workdir: Path) -> AsyncIterator[EmbeddedNetwork]:
    """The embedded coordinator with its DHT node, announced in network CHECK_NETWORK. The
    network is this check's own: a network key made for it admits the coordinator (as
    `osaas network keygen` and `osaas network admit` would) and is forgotten afterwards."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[int] = loop.create_future()
    identity = Identity.generate()
    network_key = Identity.generate()
    now = time.time()
    certificate = certificates.issue(
        network_key, identity.public_key, CHECK_NETWORK, certificates.COORDINATOR, now + 86400.0, now
    )
    admission = certificates.Admission(CHECK_NETWORK, network_key.public_key, (certificate,))
    from coordinator.api import serve as serve_coordinator  # heavy: only when a check runs
    from overlay.dht import DhtNode

    async with DhtNode(("127.0.0.1", 0)) as dht:
        task = asyncio.create_task(
            serve_coordinator(
                "127.0.0.1",
                0,
                workdir / "coordinator.sqlite",
                lease_seconds=30.0,
                # Its peers are this machine running one check, like one link checker: the
                # per-host connection limit and robots crawl delay pace them, not pauses between units.
                host_min_delay=0.0,
                # One machine is one vantage point: its peers checking each other's answers
                # would only fetch every problem twice.
                rechecks=False,
                dht=dht,
                identity=identity,
                admission=admission,
                ready=lambda port: None if ready.done() else ready.set_result(port),
            )
        )
        try:
            waited: set[asyncio.Future[Any]] = {task, ready}
            done, _ = await asyncio.wait(waited, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            if ready not in done:
                if task.done() and task.exception():
                    raise CheckError(f"the embedded coordinator did not start: {task.exception()}")
                raise CheckError("the embedded coordinator did not start within 30 s")
            host, port = dht.address
            yield EmbeddedNetwork(
                f"http://127.0.0.1:{ready.result()}", f"{host}:{port}", identity, network_key.public_hex
            )
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@contextlib.asynccontextmanager
async def embedded_peers(
    count: int, allow_private: bool, network: EmbeddedNetwork, workdir: Path
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Peer processes that know only the DHT bootstrap address: they find the coordinator."""
    processes: list[asyncio.subprocess.Process] = []
    try:
        for i in range(count):
            argv = [
                sys.executable,
                "-m",
                "osaas",
                "peer",
                "run",
                "--bootstrap",
                network.bootstrap,
                "--dht-listen",
                "127.0.0.1:0",
                "--network",
                CHECK_NETWORK,
                "--network-key",
                network.network_key,
                # The embedded coordinator listens on 127.0.0.1; the targets follow --allow-private.
                "--allow-private-coordinators",
                "--data-dir",
                str(workdir / f"peer-{i}"),
                "--name",
                f"check-peer-{i}",
                "--status-port",
                "off",
                # The bundle is this installation's own link checker: it may run even where
                # no sandbox can be built (the peer then says so in its log).
                "--trust-owner",
                network.operator.public_hex,
            ]
            if allow_private:
                argv.append("--allow-private")
            with open(workdir / f"peer-{i}.log", "wb") as log_file:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file
                    )
                )
        yield processes
    finally:
        await _stop_all(processes)


async def _stop_all(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def peers_gone(peers: list[asyncio.subprocess.Process], workdir: Path) -> str | None:
    """Why the embedded network cannot finish a job: every peer exited (its log's last line)."""
    if not all(p.returncode is not None for p in peers):
        return None
    log_tail = (workdir / "peer-0.log").read_text(errors="replace").strip().splitlines()[-1:]
    return "every peer exited before the job finished: " + (log_tail[0] if log_tail else "no log")


async def watch(
    session: aiohttp.ClientSession,
    coordinator_url: str,
    key: Identity,
    job_id: int,
    label: str,
    console: Console,
    show_progress: bool,
    stopped: Callable[[], str | None] = lambda: None,
    poll: float = 0.2,
) -> None:
    """Show a job's progress until it is done; CheckError when `stopped` says why it cannot."""
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False, disable=not show_progress) as progress:
        bar = progress.add_task("job", total=None)
        while True:
            status = await owner.status(session, coordinator_url, key, job_id)
            progress.update(bar, total=max(status.items_total, 1), completed=status.items_done)
            if status.state == "done":
                return
            if status.state == "cancelled":
                raise CheckError(f"job {job_id} was cancelled")
            reason = stopped()
            if reason is not None:
                raise CheckError(reason)
            await asyncio.sleep(poll)


def write_report(items: list[dict[str, Any]], fmt: str, output: Path | None) -> None:
    text = report.render(items, fmt)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CheckError(f"cannot write {output}: {exc.strerror or exc}") from exc
