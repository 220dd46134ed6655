"""One leased unit, from the lease to the report: fetch and check its bundle, decide how it may
run (peer.trust), run it (peer.runner) while renewing the lease, and hand the result over
(peer.delivery). A version 2 workload's streamed items go to the coordinator while the unit
runs (peer.streaming); those not acknowledged by its end go with its report.

A unit never strands its lease: given back (released) when the peer may not run its bundle or
is interrupted (a pause, a stop), failed with a reason when the peer itself breaks, and stopped
when its lease can no longer be renewed, because the coordinator may then hand its website to
another peer, and two peers on one host at once would break the politeness promise.

Whose fault a unit's end is decides what it costs. What belongs to this peer (its bundle would
not download here, it may not or cannot run it: no sandbox for a stranger's bundle, a sandbox
that would not build; its budget or the volunteer paused it) gives the unit back as `unable`: no
attempt used, no failure counted against the version, and the unit's host goes to another peer
for a while. What the workload does once it runs, and a bundle that fails its checks, are the
version's, reported as failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overlay import wire
from overlay.http import Rejected, Unavailable
from peer.bundles import BundleCache, FetchFailed
from peer.client import CoordinatorClient
from peer.clock import Clock
from peer.delivery import Delivery
from peer.egress import Egress
from peer.ready import ReadyBundle
from peer.retrying import patiently
from peer.runner import WorkloadOutcome, run_workload
from peer.sandbox import SandboxFailed
from peer.streaming import ItemStreamer
from peer.tally import WorkTally
from peer.trust import Untrusted, WorkloadTrust
from workloads.bundle import BundleError
from workloads.process_api import ExitCode, FetchRequest, FetchResult, Unit

log = logging.getLogger("peer.agent")  # one logger for the whole agent, as before it was split

# A lease is renewed every third of its length; after this many renew intervals without a
# renewal the unit is stopped (the coordinator may re-lease after 2, see unit_sizing.MISSED_RENEWALS).
STOP_UNRENEWED = 1.5
RELEASE_TIMEOUT = 3.0  # seconds a lease's release may take on the way out
THROTTLED = frozenset({429, 503})  # statuses by which a website asks to be left alone


def log_tail(text: str) -> str | None:
    """The last `wire.MAX_LOG` characters of a workload's stderr; None when it said nothing."""
    text = text[-wire.MAX_LOG :]
    return text if text.strip() else None


async def _release(client: CoordinatorClient, lease: wire.Lease, unable: str | None) -> None:
    """Give the lease back, as `unable` (why) when the unit's failure is this peer's."""
    ref = wire.LeaseRef(unit_id=lease.unit_id, token=lease.token, unable=wire.clip(unable) if unable else None)
    with contextlib.suppress(Unavailable, Rejected, asyncio.TimeoutError):
        await asyncio.wait_for(client.release(ref), timeout=RELEASE_TIMEOUT)


def _paused_reason(paused: str) -> str:
    """Why a unit a pause interrupted was given back, as its coordinator logs it."""
    return paused if paused.startswith("paused") else f"paused: {paused}"


def unrenewed_too_long(since_renewal: float, interval: float) -> bool:
    """Whether a unit whose lease was last renewed `since_renewal` seconds ago must stop."""
    return since_renewal >= STOP_UNRENEWED * interval


class UnitWork:
    """Runs the units a running peer leases; one per peer run (it caches what it learnt of
    each coordinator's bundles)."""

    def __init__(
        self,
        *,
        trust: WorkloadTrust,
        egress: Egress,
        bundles: BundleCache,
        delivery: Delivery,
        tally: WorkTally,
        workdir: Path,
        unit_timeout: float,
        clock: Clock,
        paused: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._trust = trust
        self._egress = egress
        self._bundles = bundles
        self._delivery = delivery
        self._tally = tally
        self._workdir = workdir
        self._unit_timeout = unit_timeout
        self._clock = clock
        self._paused = paused  # why the peer is paused now (peer.controls), None while it works
        self._bundle_infos: dict[tuple[str, str, str], wire.BundleInfo] = {}
        self._coordinator_keys: dict[str, str] = {}  # URL -> proven public key (hex)

    async def work(self, client: CoordinatorClient, lease: wire.Lease, lease_seconds: float) -> None:
        """Run the leased unit and report it; its task is cancelled to give the unit back."""
        ref = wire.LeaseRef(unit_id=lease.unit_id, token=lease.token)
        unit = asyncio.current_task()
        assert unit is not None
        renewer = asyncio.create_task(self._renew_loop(client, ref, unit, lease_seconds))

        def lost(_why: str) -> None:
            # A refused batch ends the unit, unless it is ending already (the refusal came of it).
            if not unit.cancelling():
                unit.cancel()

        streamer = ItemStreamer(client, lease, lost)
        deliverer = asyncio.create_task(streamer.run())
        self._tally.started(lease, self._clock.time())
        throttled = [0]  # answers of 429 or 503 the unit's fetches got
        try:
            outcome = await self._run(client, lease, throttled, streamer)
        except (Untrusted, FetchFailed, SandboxFailed) as exc:
            # Not the version's fault nor the unit's but this peer's (it may not run the bundle,
            # could not download it, or could not build the sandbox): give the unit back, no
            # attempt used, and let its host go to another peer for a while.
            log.warning("unit %d given back: %s", lease.unit_id, exc)
            await _release(client, lease, str(exc))
            return
        except Exception as exc:  # a bug of ours must fail this unit, not strand its lease
            log.exception("unit %d: the peer could not run its workload", lease.unit_id)
            outcome = WorkloadOutcome(ExitCode.FAILED, None, f"peer error: {type(exc).__name__}: {exc}", "")
        except asyncio.CancelledError:
            # A pause (the volunteer's, the budget's) is this peer's as well: its host goes on
            # elsewhere meanwhile. A stop, or a lease that could not be renewed, is given back
            # as it is.
            paused = self._paused()
            log.info("unit %d interrupted%s; releasing its lease", lease.unit_id, f" ({paused})" if paused else "")
            deliverer.cancel()
            if streamer.gone is None and streamer.leftover():
                # Its streamed items are done: hand them over before the lease goes.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(streamer.deliver(), timeout=RELEASE_TIMEOUT)
            if streamer.gone is None:
                await _release(client, lease, _paused_reason(paused) if paused else None)
            raise
        finally:
            renewer.cancel()
            deliverer.cancel()
            self._tally.ended(lease.unit_id)
        self._tally.count(outcome, self._clock.time())
        payload, leftover = streamer.final(outcome.exit_code, outcome.payload)
        report = wire.Report(
            unit_id=lease.unit_id,
            token=lease.token,
            exit_code=int(outcome.exit_code),
            payload=payload,
            error=wire.clip(outcome.error),  # a workload's error may be any length; the wire's is capped
            bundle_version=lease.bundle.version if lease.bundle else None,
            # So that the coordinator rests the host that long between units, whoever runs them.
            crawl_delay=self._egress.crawl_delay(lease.host) if lease.host else None,
            throttled=throttled[0],
            # A failed unit's stderr tail goes to its owner (`osaas job logs`), capped.
            log=log_tail(outcome.stderr_tail) if outcome.exit_code not in (ExitCode.OK, ExitCode.PARTIAL) else None,
            streamed=streamer.taken or None,
            items=leftover or None,
        )
        if outcome.exit_code not in (ExitCode.OK, ExitCode.PARTIAL):
            log.warning("unit %d failed (exit %d): %s", lease.unit_id, outcome.exit_code, outcome.error)
        await self._delivery.keep_and_deliver(client, report)

    async def _run(
        self, client: CoordinatorClient, lease: wire.Lease, throttled: list[int], streamer: ItemStreamer
    ) -> WorkloadOutcome:
        if lease.bundle is None:
            return WorkloadOutcome(ExitCode.FAILED, None, "the coordinator named no bundle for this unit", "")
        try:
            ready = await self._ready_bundle(client, lease.bundle)
        except FetchFailed:
            raise  # the peer's trouble: the unit is given back (`work`)
        except (BundleError, Unavailable, Rejected) as exc:
            # Counted against this version by the coordinator: a version peers cannot fetch or
            # trust is a failing version.
            return WorkloadOutcome(
                ExitCode.FAILED, None, f"bundle {lease.bundle.name} {lease.bundle.version}: {exc}", ""
            )
        sandboxed = self._trust.confinement(ready)  # raises Untrusted

        async def fetch(request: FetchRequest) -> FetchResult:
            # Version 2 workloads get what the egress measured too (process API FetchDetails),
            # unless a fetch says it does without.
            result = await self._egress.fetch(request, detailed=ready.api_version >= 2 and request.measure)
            if result.status in THROTTLED:
                throttled[0] += 1
            return result

        async def streamed(record: dict[str, Any], size: int) -> None:
            self._tally.streamed(lease.unit_id, record, self._clock.time())
            await streamer.put(record, size)

        return await run_workload(
            ready.argv if sandboxed is None else ready.sandboxed_argv,
            Unit(unit_id=lease.unit_id, payload=lease.payload, version=ready.api_version),
            fetch if "fetch" in ready.capabilities else None,
            timeout=min(ready.timeout, self._unit_timeout),
            limits=ready.limits,
            env=ready.env if sandboxed is None else ready.sandboxed_env,
            workdir_parent=self._workdir,
            sandbox=sandboxed,
            progressed=lambda done: self._tally.progressed(lease.unit_id, done),
            streamed=streamed,
        )

    async def _ready_bundle(self, client: CoordinatorClient, ref: wire.BundleRef) -> ReadyBundle:
        """The bundle a lease names, fetched and checked (once) and ready to run."""
        key = (client.base_url, ref.name, ref.version)
        info = self._bundle_infos.get(key)
        if info is None:
            info = await patiently(lambda: client.bundle_info(ref.name, ref.version))
            self._bundle_infos[key] = info
        # Bundle names belong to each coordinator (its operator admits the owners), so owner
        # keys are pinned per coordinator key.
        scope = self._coordinator_keys.get(client.base_url)
        if scope is None:
            scope = self._coordinator_keys[client.base_url] = await patiently(client.public_key)
        asked = info

        async def seeds_again() -> list[wire.SwarmAddress]:
            """The coordinator's seeds as it gives them now (it may have restarted meanwhile,
            seeding elsewhere); [] while it does not answer."""
            try:
                fresh = await client.bundle_info(ref.name, ref.version)
            except (Unavailable, Rejected) as exc:
                log.info("bundle %s %s: cannot ask for its seeds again: %s", ref.name, ref.version, exc)
                return []
            if fresh.manifest == asked.manifest:
                self._bundle_infos[key] = fresh
            return list(fresh.seeds)

        return await self._bundles.ensure(ref, info, scope, seeds_again)

    async def _renew_loop(
        self, client: CoordinatorClient, ref: wire.LeaseRef, unit: asyncio.Task[None], lease_seconds: float
    ) -> None:
        """Renew the lease every third of its length. A holder that cannot renew stops the
        unit: once renewals have failed for STOP_UNRENEWED intervals, the coordinator may soon
        hand the unit, and so its website, to another peer (coordinator.unit_sizing), and two
        peers on one host at once would break the politeness promise."""
        interval = lease_seconds / 3
        renewed_at = self._clock.monotonic()
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                await client.renew(ref)
            except Unavailable as exc:
                since = self._clock.monotonic() - renewed_at
                if unrenewed_too_long(since, interval):
                    log.warning("unit %d: lease not renewed for %.0f s (%s); stopping it", ref.unit_id, since, exc)
                    unit.cancel()
                    return
                log.warning("could not renew lease of unit %d: %s", ref.unit_id, exc)
                delay = interval / 4
                continue
            except Rejected as exc:
                log.warning("lease of unit %d is gone (%s); stopping it", ref.unit_id, exc)
                unit.cancel()
                return
            renewed_at = self._clock.monotonic()
            delay = interval
