"""The peer's lease loop: register, lease units, run workloads, report, repeat.

Every finished unit is written to the outbox before it is reported, and stays there until a
coordinator has answered, so a coordinator restart or a network drop never loses a result.
On stop (SIGTERM) the peer leases nothing more, lets running units finish for a grace period,
releases the leases of those that did not, and flushes the outbox once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp

from overlay import wire
from overlay.http import Rejected, Unavailable
from overlay.identity import Identity
from peer.backoff import backoff_delay
from peer.client import CoordinatorClient
from peer.egress import Egress, EgressConfig
from peer.outbox import Outbox, PendingReport
from peer.runner import WorkloadOutcome, run_workload
from workloads.process_api import ExitCode, Unit

log = logging.getLogger(__name__)

T = TypeVar("T")

# Workloads this peer can run, by name. Signed bundles fetched over BitTorrent replace this table.
WORKLOADS: dict[str, tuple[str, ...]] = {
    "linkcheck": (sys.executable, "-m", "workloads.linkcheck"),
}
VERSION = "osaas-peer/0.1"


@dataclass(frozen=True, slots=True)
class PeerSettings:
    coordinator: str
    data_dir: Path
    name: str = field(default_factory=socket.gethostname)
    slots: int = 4
    unit_timeout: float = 600.0
    drain_grace: float = 10.0
    egress: EgressConfig = field(default_factory=EgressConfig)


class Agent:
    def __init__(self, settings: PeerSettings) -> None:
        self.settings = settings
        self.identity = Identity.load_or_create(settings.data_dir / "identity.key")
        self.outbox = Outbox(settings.data_dir / "outbox")
        self.workdir = settings.data_dir / "work"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._lease_seconds = 60.0

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then drain and return."""
        async with aiohttp.ClientSession() as session, Egress(self.settings.egress) as egress:
            client = CoordinatorClient(self.settings.coordinator, self.identity, session)
            log.info("peer %s… working for %s", self.identity.public_hex[:12], client.base_url)
            if not await self._register(client, stop):
                return
            flusher = asyncio.create_task(self._flush_loop(session, stop))
            running: set[asyncio.Task[None]] = set()
            try:
                await self._lease_loop(client, egress, running, stop)
            finally:
                await self._drain(client, running)
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
                await self._flush_once(session, deadline=5.0)

    # ---- registration and leasing ----------------------------------------------------

    async def _register(self, client: CoordinatorClient, stop: asyncio.Event) -> bool:
        request = wire.RegisterRequest(
            name=self.settings.name[:200] or "peer",
            slots=self.settings.slots,
            workloads=sorted(WORKLOADS),
            version=VERSION,
        )
        answer = await _retry(lambda: client.register(request), stop, "register")
        if answer is None:
            return False
        self._lease_seconds = max(answer.lease_seconds, 1.0)
        return True

    async def _lease_loop(
        self,
        client: CoordinatorClient,
        egress: Egress,
        running: set[asyncio.Task[None]],
        stop: asyncio.Event,
    ) -> None:
        failures = 0
        while not stop.is_set():
            free = self.settings.slots - len(running)
            if free <= 0:
                await _wait_any(running, stop, timeout=None)
                continue
            try:
                answer = await client.lease(wire.LeaseRequest(max_units=free, workloads=sorted(WORKLOADS)))
            except Unavailable as exc:
                delay = backoff_delay(failures, retry_after=exc.retry_after)
                failures += 1
                log.warning("%s; retrying in %.1f s", exc, delay)
                await _wait_any(running, stop, timeout=delay)
                continue
            except Rejected as exc:
                failures += 1
                if exc.status == 403 and await self._register(client, stop):
                    continue
                log.error("coordinator refused to lease: %s", exc)
                await _wait_any(running, stop, timeout=backoff_delay(failures))
                continue
            failures = 0
            for lease in answer.leases:
                task = asyncio.create_task(self._work(client, egress, lease))
                running.add(task)
                task.add_done_callback(running.discard)
            if not answer.leases:
                await _wait_any(running, stop, timeout=answer.retry_after or 1.0)

    async def _drain(self, client: CoordinatorClient, running: set[asyncio.Task[None]]) -> None:
        if not running:
            return
        log.info("stopping: letting %d running unit(s) finish (up to %.0f s)", len(running), self.settings.drain_grace)
        _, unfinished = await asyncio.wait(set(running), timeout=self.settings.drain_grace)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    # ---- one unit ------------------------------------------------------------------------

    async def _work(self, client: CoordinatorClient, egress: Egress, lease: wire.Lease) -> None:
        ref = wire.LeaseRef(unit_id=lease.unit_id, token=lease.token)
        renewer = asyncio.create_task(self._renew_loop(client, ref))
        try:
            outcome = await self._run(egress, lease)
        except Exception as exc:  # a bug of ours must fail this unit, not strand its lease
            log.exception("unit %d: the peer could not run its workload", lease.unit_id)
            outcome = WorkloadOutcome(ExitCode.FAILED, None, f"peer error: {type(exc).__name__}: {exc}", "")
        except asyncio.CancelledError:
            log.info("unit %d interrupted; releasing its lease", lease.unit_id)
            with contextlib.suppress(Unavailable, Rejected, asyncio.TimeoutError):
                await asyncio.wait_for(client.release(ref), timeout=3.0)
            raise
        finally:
            renewer.cancel()
        report = wire.Report(
            unit_id=lease.unit_id,
            token=lease.token,
            exit_code=int(outcome.exit_code),
            payload=outcome.payload,
            error=outcome.error,
        )
        if outcome.exit_code not in (ExitCode.OK, ExitCode.PARTIAL):
            log.warning("unit %d failed (exit %d): %s", lease.unit_id, outcome.exit_code, outcome.error)
        pending = self.outbox.put(client.base_url, report)
        await self._deliver(client, pending)

    async def _run(self, egress: Egress, lease: wire.Lease) -> WorkloadOutcome:
        argv = WORKLOADS.get(lease.workload)
        if argv is None:
            return WorkloadOutcome(ExitCode.BAD_INPUT, None, f"this peer does not run workload {lease.workload!r}", "")
        return await run_workload(
            list(argv),
            Unit(unit_id=lease.unit_id, payload=lease.payload),
            egress.fetch,
            timeout=self.settings.unit_timeout,
            workdir_parent=self.workdir,
        )

    async def _renew_loop(self, client: CoordinatorClient, ref: wire.LeaseRef) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                await client.renew(ref)
            except Unavailable as exc:
                log.warning("could not renew lease of unit %d: %s", ref.unit_id, exc)
            except Rejected as exc:
                log.warning("lease of unit %d is gone (%s); its report will be refused", ref.unit_id, exc)
                return

    # ---- the outbox ----------------------------------------------------------------------

    async def _deliver(self, client: CoordinatorClient, pending: PendingReport) -> Unavailable | None:
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
            log.debug("report of unit %d: accepted=%s %s", pending.report.unit_id, answer.accepted, answer.reason)
        self.outbox.remove(pending)
        return None

    async def _flush_once(self, session: aiohttp.ClientSession, deadline: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._flush_all(session), timeout=deadline)

    async def _flush_all(self, session: aiohttp.ClientSession) -> Unavailable | None:
        """Send every report in the outbox; the last reason one of them must be sent again."""
        clients: dict[str, CoordinatorClient] = {}
        trouble = None
        for pending in self.outbox.pending():
            client = clients.setdefault(
                pending.coordinator, CoordinatorClient(pending.coordinator, self.identity, session)
            )
            trouble = await self._deliver(client, pending) or trouble
        return trouble

    async def _flush_loop(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            trouble = await self._flush_all(session)
            if trouble is None:
                failures = 0
                delay = 2.0
            else:
                delay = backoff_delay(failures, retry_after=trouble.retry_after)
                failures += 1
                log.info("outbox: %s; retrying in %.1f s", trouble, delay)
            await _wait_any(set(), stop, timeout=delay)


async def _wait_any(tasks: set[asyncio.Task[None]], stop: asyncio.Event, timeout: float | None) -> None:
    """Return when a task finishes, `stop` is set, or `timeout` passes."""
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopper, *tasks}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()


async def _retry(call: Callable[[], Awaitable[T]], stop: asyncio.Event, what: str) -> T | None:
    """Call until it succeeds; None if `stop` is set first. Refusals are retried too, slowly."""
    failures = 0
    while not stop.is_set():
        try:
            return await call()
        except (Unavailable, Rejected) as exc:
            retry_after = exc.retry_after if isinstance(exc, Unavailable) else None
            delay = backoff_delay(failures, retry_after=retry_after, cap=30.0 if isinstance(exc, Unavailable) else 60.0)
            failures += 1
            log.warning("%s failed: %s; retrying in %.1f s", what, exc, delay)
            await _wait_any(set(), stop, timeout=delay)
    return None
