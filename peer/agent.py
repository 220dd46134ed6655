"""The peer's lease loop: register, lease units, fetch their bundles, run them, report, repeat.

Every finished unit is written to the outbox before it is reported, and stays there until a
coordinator has answered, so a coordinator restart or a network drop never loses a result.
On stop (SIGTERM) the peer leases nothing more, lets running units finish for a grace period,
releases the leases of those that did not, and flushes the outbox once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from overlay import wire
from overlay.dht import DhtNode
from overlay.http import Rejected, Unavailable
from overlay.identity import Identity
from overlay.torrent import TorrentError, TorrentSession
from peer import work_choice
from peer.allowance import Allowance
from peer.backoff import backoff_delay
from peer.budget import Budget, save_budget
from peer.bundles import BundleCache, ReadyBundle
from peer.client import CoordinatorClient
from peer.discovery import find_coordinators
from peer.egress import Egress, EgressConfig
from peer.idle import AwaySense
from peer.local_page import load_or_create_token, serve_local_page
from peer.outbox import Outbox, PendingReport
from peer.runner import WorkloadOutcome, remove_leftovers, run_workload
from peer.sandbox import DEFAULT_PROGRAM as DEFAULT_SANDBOX_PROGRAM
from peer.status import (
    DEFAULT_STATUS_PORT,
    RECENT_KEPT,
    BundleView,
    Checked,
    PeerStatus,
    Totals,
    UnitView,
    Usage,
    checked_items,
    state_of,
)
from peer.trust import Untrusted, WorkloadTrust
from peer.work_choice import WorkChoice
from workloads.bundle import BundleError
from workloads.process_api import ExitCode, Unit

log = logging.getLogger(__name__)

T = TypeVar("T")

# The peer runs whatever signed bundle a unit names: it fetches, checks and caches it itself.
WORKLOADS = [wire.ANY_WORKLOAD]
VERSION = "osaas-peer/0.2"
DEFAULT_BUNDLE_UPLOAD_RATE = 1_000_000  # bytes/s this peer seeds bundles to other peers


LOST_AFTER = 3  # consecutive unanswered calls before a discovered coordinator counts as gone
AVOID_SECONDS = 120.0  # how long a coordinator that failed us ranks last
IDLE_RECHECK = 30.0  # seconds without work before looking for a coordinator that needs us more
# A lease is renewed every third of its length; after this many renew intervals without a
# renewal the unit is stopped (the coordinator may re-lease after 2, see unit_sizing.MISSED_RENEWALS).
STOP_UNRENEWED = 1.5
PAUSED_BY_VOLUNTEER = "paused by the volunteer (resume on the local page)"
BUDGET_TICK = 1.0  # seconds between charging bundle traffic to the budget and checking for a pause


class _LeaseEnd(enum.Enum):
    STOPPED = "stopped"
    CHANGED = "changed"  # the volunteer chose to work for someone else
    LOST = "lost"  # the coordinator stopped answering
    IDLE = "idle"  # no work for a while: another coordinator may need this peer more


@dataclass(frozen=True, slots=True)
class PeerSettings:
    data_dir: Path
    coordinator: str | None = None  # an explicit coordinator URL; None: find one in the DHT
    bootstrap: tuple[tuple[str, int], ...] = ()
    network: str = "public"
    prefer: str | None = None  # the volunteer's preferred coordinator URL, if it is announced
    dht_listen: tuple[str, int] = ("0.0.0.0", 0)
    name: str = field(default_factory=socket.gethostname)
    slots: int = 4
    unit_timeout: float = 600.0
    drain_grace: float = 10.0
    egress: EgressConfig = field(default_factory=EgressConfig)
    torrent_listen: tuple[str, int] = ("0.0.0.0", 0)
    bundle_upload_rate: int | None = DEFAULT_BUNDLE_UPLOAD_RATE
    bundle_fetch_timeout: float = 60.0  # seconds without progress before a bundle fetch fails
    budget: Budget = field(default_factory=Budget)
    status_port: int | None = DEFAULT_STATUS_PORT  # on 127.0.0.1; 0: any free port; None: not served
    config_path: Path | None = None  # where a budget changed on the local page is kept; None: nowhere
    # Work only after this many seconds without input (X11), or while the osaas screensaver
    # shows (peer.idle); None: always.
    idle_after: float | None = None
    # Owner keys (hex) whose bundles run where no sandbox can be built; with a sandbox, every
    # admitted owner's bundles run, confined (peer.trust).
    trusted_owners: frozenset[str] = frozenset()
    sandbox_program: str = DEFAULT_SANDBOX_PROGRAM


class Agent:
    def __init__(self, settings: PeerSettings) -> None:
        if settings.coordinator is None and not settings.bootstrap:
            raise ValueError("a peer needs a coordinator URL or DHT bootstrap addresses")
        self.settings = settings
        self.identity = Identity.load_or_create(settings.data_dir / "identity.key")
        self.outbox = Outbox(settings.data_dir / "outbox")
        self.workdir = settings.data_dir / "work"
        self.workdir.mkdir(parents=True, exist_ok=True)
        if removed := remove_leftovers(self.workdir):
            log.info(
                "removed %d unit director%s left by a peer that was stopped mid-unit",
                removed,
                "y" if removed == 1 else "ies",
            )
        hidden = [settings.data_dir] + ([settings.config_path.parent] if settings.config_path is not None else [])
        self.trust = WorkloadTrust.detect(settings.trusted_owners, hidden, settings.sandbox_program)
        self._lease_seconds = 60.0
        self._avoid: dict[str, float] = {}  # coordinator URL -> until when it ranks last
        self._current: str | None = None  # the discovered coordinator we work for
        self._bundles: BundleCache | None = None  # set while running
        self._bundle_infos: dict[tuple[str, str, str], wire.BundleInfo] = {}
        self._coordinator_keys: dict[str, str] = {}  # URL -> proven public key (hex)
        self.allowance = Allowance(settings.budget, settings.data_dir)
        self._running: set[asyncio.Task[None]] = set()
        self._paused: str | None = None  # why the peer takes no work now
        self._recent_rates = (0.0, 0.0)  # bytes/s down, up over the last budget tick
        self._working_for: str | None = None  # the coordinator registered with, for the status
        self._units: dict[int, UnitView] = {}  # the running units, for the status
        self._totals = Totals()
        self._away = AwaySense(settings.idle_after) if settings.idle_after is not None else None
        if self._away is not None and self._away.without_x is not None:
            log.warning("--only-when-idle: %s; working only while the osaas screensaver shows", self._away.without_x)
        self._dht: DhtNode | None = None  # while running, when coordinators are found in the DHT
        self._torrents: TorrentSession | None = None  # while running
        self._held = False  # paused by the volunteer (local page)
        self._choice = WorkChoice(settings.coordinator, settings.network, settings.prefer)
        self._rechoose = asyncio.Event()  # the choice changed: leave the coordinator worked for
        self._recent: collections.deque[Checked] = collections.deque(maxlen=RECENT_KEPT)

    def status(self) -> PeerStatus:
        """What the peer is doing now (peer.status), for the volunteer."""
        allowance = self.allowance.status()
        # When it resumes by itself, for the budget's pauses; the volunteer's and the idle rule's have no end.
        budget_pause = self._paused is not None and self._paused == self.allowance.pause_reason()
        resume_at = self.allowance.resume_at() if budget_pause else None
        return PeerStatus(
            peer_id=self.identity.public_hex,
            name=self.settings.name,
            state=state_of(self._paused, self._working_for, len(self._units)),
            paused=self._paused,
            resume_at=resume_at.timestamp() if resume_at is not None else None,
            coordinator=self._working_for,
            units=tuple(self._units.values()),
            budget=self.allowance.budget,
            usage=Usage(allowance.used, allowance.period_ends.timestamp(), *self._recent_rates),
            totals=self._totals,
            recent=tuple(self._recent),
            bundles=tuple(BundleView(*seeded) for seeded in self._bundles.seeding()) if self._bundles else (),
            dht_neighbours=None if self._dht is None else tuple(f"{h}:{p}" for h, p in self._dht.neighbours()),
            sandbox=self.trust.summary(),
            sandboxed=self.trust.sandbox is not None,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then drain and return."""
        discovering = self.settings.coordinator is None
        async with contextlib.AsyncExitStack() as stack:
            session = await stack.enter_async_context(aiohttp.ClientSession())
            egress = await stack.enter_async_context(Egress(self.settings.egress, self.allowance))
            dht = None
            if discovering:
                dht = await stack.enter_async_context(
                    DhtNode(
                        self.settings.dht_listen,
                        self.settings.bootstrap,
                        state_path=self.settings.data_dir / "dht-contacts.msgpack",
                    )
                )
                self._dht = dht
                stack.callback(setattr, self, "_dht", None)
            budget = self.allowance.budget
            torrents = await stack.enter_async_context(
                TorrentSession(
                    self.settings.torrent_listen,
                    upload_rate=_lowest(self.settings.bundle_upload_rate, budget.max_up),
                    download_rate=budget.max_down,
                    state_dir=self.settings.data_dir / "torrent",
                )
            )
            self._torrents = torrents
            stack.callback(setattr, self, "_torrents", None)
            self._bundles = BundleCache(
                self.settings.data_dir / "bundles",
                torrents,
                identity=self.identity,
                dht=dht,
                announce_host=_announce_host(self.settings),
                fetch_timeout=self.settings.bundle_fetch_timeout,
            )
            await self._bundles.start()
            stack.callback(setattr, self, "_bundles", None)  # after the close below: callbacks run last first
            stack.push_async_callback(self._bundles.close)
            if self.settings.status_port is not None:
                token = load_or_create_token(self.settings.data_dir)
                await stack.enter_async_context(serve_local_page(self.settings.status_port, self, token))
            log.info("peer %s… started", self.identity.public_hex[:12])
            flusher = asyncio.create_task(self._flush_loop(session, stop))
            keeper = asyncio.create_task(self._budget_loop(torrents, stop))
            running = self._running
            self._set_paused(self._pause_reason())  # a cap used up before a restart
            try:
                while not stop.is_set():
                    client = await self._choose(session, dht, stop)
                    if client is None:
                        break
                    end = _LeaseEnd.LOST
                    if await self._register(client, stop, give_up=discovering):
                        self._working_for = client.base_url
                        end = await self._lease_loop(client, egress, running, stop, give_up=discovering)
                    elif self._rechoose.is_set():
                        self._rechoose.clear()
                        end = _LeaseEnd.CHANGED
                    self._working_for = None
                    if end is _LeaseEnd.LOST and not stop.is_set():
                        log.warning("coordinator %s is not answering; looking for another", client.base_url)
                        self._avoid[client.base_url] = time.monotonic() + AVOID_SECONDS
            finally:
                await self._drain(running)
                for task in (flusher, keeper):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                self.allowance.flush()
                await self._flush_once(session, deadline=5.0)

    # ---- choosing a coordinator, registration and leasing -------------------------------

    async def _choose(
        self, session: aiohttp.ClientSession, dht: DhtNode | None, stop: asyncio.Event
    ) -> CoordinatorClient | None:
        """The explicit coordinator, or the best one the DHT knows; None once stopped."""
        if dht is None:
            assert self._choice.coordinator is not None
            log.info("working for %s", self._choice.coordinator)
            return CoordinatorClient(self._choice.coordinator, self.identity, session)
        failures = 0
        while not stop.is_set():
            now = time.monotonic()
            avoid = {url for url, until in self._avoid.items() if until > now}
            choice = self._choice
            candidates = await find_coordinators(
                dht, session, choice.network, workloads=WORKLOADS, preferred=choice.prefer, avoid=avoid
            )
            if candidates:
                best = candidates[0].announcement
                if best.url == self._current:
                    return CoordinatorClient(best.url, self.identity, session)
                self._current = best.url
                log.info(
                    "working for %s (coordinator %s…, load %d, %d peers, %.0f ms away)",
                    best.url,
                    best.public_key[:12],
                    best.load,
                    best.peers,
                    candidates[0].rtt * 1000,
                )
                return CoordinatorClient(best.url, self.identity, session)
            delay = backoff_delay(failures, cap=15.0)
            failures += 1
            log.info("no coordinator of network %r found yet; looking again in %.1f s", choice.network, delay)
            await _wait_any(set(), stop, timeout=delay)
            if not dht.neighbours():
                await dht.bootstrap_again()
        return None

    async def _register(self, client: CoordinatorClient, stop: asyncio.Event, *, give_up: bool) -> bool:
        request = wire.RegisterRequest(
            name=self.settings.name[:200] or "peer",
            slots=self.settings.slots,
            workloads=sorted(WORKLOADS),
            version=VERSION,
            capacity=self.allowance.budget.sustainable_rate,
            trusted_owners=self.trust.advertised_owners(),
        )
        registering = asyncio.create_task(
            _retry(lambda: client.register(request), stop, "register", LOST_AFTER if give_up else None)
        )
        rechosen = asyncio.create_task(self._rechoose.wait())
        try:
            await asyncio.wait({registering, rechosen}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            rechosen.cancel()
            if not registering.done():  # the volunteer chose another coordinator meanwhile
                registering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await registering
        answer = registering.result() if not registering.cancelled() else None
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
        *,
        give_up: bool,
    ) -> _LeaseEnd:
        """Lease and start units until stopped or, with `give_up` (a discovered coordinator),
        until the coordinator stops answering or has had no work for a while."""
        failures = 0
        idle_since: float | None = None
        while not stop.is_set():
            if self._rechoose.is_set():
                self._rechoose.clear()
                return _LeaseEnd.CHANGED
            if give_up and failures >= LOST_AFTER:
                return _LeaseEnd.LOST
            if self._paused is not None:
                await self._wait_for_resume(stop)
                idle_since = None
                continue
            free = self.settings.slots - len(running)
            if free <= 0:
                await _wait_any(running, stop, timeout=None)
                continue
            try:
                answer = await client.lease(
                    wire.LeaseRequest(
                        max_units=free,
                        workloads=sorted(WORKLOADS),
                        usage=self._usage(),
                        trusted_owners=self.trust.advertised_owners(),
                    )
                )
            except Unavailable as exc:
                delay = backoff_delay(failures, retry_after=exc.retry_after)
                failures += 1
                log.warning("%s; retrying in %.1f s", exc, delay)
                await _wait_any(running, stop, timeout=delay)
                continue
            except Rejected as exc:
                failures += 1
                if exc.status == 403 and await self._register(client, stop, give_up=give_up):
                    continue
                log.error("coordinator refused to lease: %s", exc)
                await _wait_any(running, stop, timeout=backoff_delay(failures))
                continue
            failures = 0
            for lease in answer.leases:
                task = asyncio.create_task(self._work(client, egress, lease))
                running.add(task)
                task.add_done_callback(running.discard)
            if answer.leases:
                idle_since = None
                continue
            now = time.monotonic()
            idle_since = idle_since or now
            if give_up and not running and now - idle_since >= IDLE_RECHECK:
                return _LeaseEnd.IDLE
            await _wait_any(running, stop, timeout=answer.retry_after or 1.0)
        return _LeaseEnd.STOPPED

    # ---- the volunteer's budget ------------------------------------------------------------

    def _usage(self) -> wire.PeerUsage:
        status = self.allowance.status()
        down, up = self._recent_rates
        return wire.PeerUsage(capacity=status.capacity, used=status.used, cap=status.cap, down_rate=down, up_rate=up)

    async def _budget_loop(self, torrents: TorrentSession, stop: asyncio.Event) -> None:
        """Charge bundle traffic to the budget, and pause or resume work as it says."""
        moved: dict[bytes, tuple[int, int]] = {}  # info-hash -> (down, up) already charged
        last_used = self.allowance.down.used, self.allowance.up.used
        while not stop.is_set():
            await _wait_any(set(), stop, timeout=BUDGET_TICK)
            down = up = 0
            for info_hash in torrents.torrents():
                with contextlib.suppress(TorrentError):  # removed since the listing
                    stats = torrents.stats(info_hash)
                    before = moved.get(info_hash, (0, 0))
                    down += max(stats.total_download - before[0], 0)
                    up += max(stats.total_upload - before[1], 0)
                    moved[info_hash] = (stats.total_download, stats.total_upload)
            if down or up:
                self.allowance.charge(down=down, up=up)
            used = self.allowance.down.used, self.allowance.up.used
            # Refunds of unused reservations can make a tick's count go down: not a negative rate.
            self._recent_rates = (
                max(used[0] - last_used[0], 0) / BUDGET_TICK,
                max(used[1] - last_used[1], 0) / BUDGET_TICK,
            )
            last_used = used
            self._set_paused(self._pause_reason())

    # ---- the volunteer's controls (peer.local_page) ----------------------------------------

    def pause(self) -> None:
        """Stop working until `resume`: running units are given back at once."""
        self._held = True
        self._set_paused(self._pause_reason())

    def resume(self) -> None:
        self._held = False
        self._set_paused(self._pause_reason())

    def set_budget(self, budget: Budget) -> None:
        """Use `budget` from now on, and keep it in the config file for the next start."""
        if self.settings.config_path is not None:
            save_budget(self.settings.config_path, budget)
        self.allowance.reconfigure(budget)
        if self._torrents is not None:
            self._torrents.set_rates(
                upload_rate=_lowest(self.settings.bundle_upload_rate, budget.max_up), download_rate=budget.max_down
            )
        self._set_paused(self._pause_reason())

    @property
    def work_choice(self) -> WorkChoice:
        return self._choice

    @property
    def works_by_url(self) -> bool:
        """Started with a coordinator URL (no DHT node): the choice is a URL, not a network."""
        return self.settings.coordinator is not None

    def set_work_choice(self, form: Any) -> WorkChoice:
        """Work for whom `form` says (peer.work_choice.changed), from the next lease on, and keep
        it beside the config file; raises WorkChoiceError, changing nothing, for a bad form.
        Units under way finish and are reported to the coordinator that leased them."""
        choice = work_choice.changed(self._choice, form, by_url=self.works_by_url)
        if self.settings.config_path is not None:
            work_choice.save(self.settings.config_path.with_name(work_choice.WORK_FILE), choice)
        if choice != self._choice:
            log.info(
                "the volunteer chose to work for %s",
                choice.coordinator
                or f"network {choice.network!r}" + (f", {choice.prefer} first" if choice.prefer else ""),
            )
            self._choice = choice
            self._current = None
            self._rechoose.set()
        return choice

    def _pause_reason(self) -> str | None:
        """Why the peer must not work now: the volunteer paused it, the person is at the
        computer (--only-when-idle), or the budget says so (cap used up, outside active hours);
        None to work."""
        if self._held:
            return PAUSED_BY_VOLUNTEER
        if self._away is not None:
            reason = self._away.reason()
            if reason is not None:
                return reason
        return self.allowance.pause_reason()

    def _set_paused(self, reason: str | None) -> None:
        if reason == self._paused:
            return
        if reason is None:
            log.info("resuming work: %s is over", self._paused)
        else:
            log.warning("pausing work: %s; giving back %d running unit(s)", reason, len(self._running))
            for task in self._running:
                task.cancel()  # each releases its lease on the way out (see _work)
        self._paused = reason

    async def _wait_for_resume(self, stop: asyncio.Event) -> None:
        """Wait a budget tick (the budget loop lifts the pause) or until stopped."""
        await _wait_any(set(), stop, timeout=BUDGET_TICK)

    async def _drain(self, running: set[asyncio.Task[None]]) -> None:
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
        unit = asyncio.current_task()
        assert unit is not None
        renewer = asyncio.create_task(self._renew_loop(client, ref, unit))
        items = lease.payload.get("items")
        self._units[lease.unit_id] = UnitView(
            lease.unit_id, lease.job_id, lease.host, len(items) if isinstance(items, list) else 0, time.time()
        )
        try:
            outcome = await self._run(client, egress, lease)
        except Untrusted as exc:
            # Not the version's fault nor the unit's: give it back for a peer that may run it.
            log.warning("unit %d given back: %s", lease.unit_id, exc)
            with contextlib.suppress(Unavailable, Rejected, asyncio.TimeoutError):
                await asyncio.wait_for(client.release(ref), timeout=3.0)
            return
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
            self._units.pop(lease.unit_id, None)
        self._count(outcome)
        report = wire.Report(
            unit_id=lease.unit_id,
            token=lease.token,
            exit_code=int(outcome.exit_code),
            payload=outcome.payload,
            error=outcome.error,
            bundle_version=lease.bundle.version if lease.bundle else None,
            # So that the coordinator rests the host that long between units, whoever runs them.
            crawl_delay=egress.crawl_delay(lease.host) if lease.host else None,
        )
        if outcome.exit_code not in (ExitCode.OK, ExitCode.PARTIAL):
            log.warning("unit %d failed (exit %d): %s", lease.unit_id, outcome.exit_code, outcome.error)
        pending = self.outbox.put(client.base_url, report)
        await self._deliver(client, pending)

    def _count(self, outcome: WorkloadOutcome) -> None:
        totals = self._totals
        if outcome.exit_code in (ExitCode.OK, ExitCode.PARTIAL):
            checked = checked_items(outcome.payload, time.time())
            self._recent.extend(checked)
            self._totals = replace(
                totals,
                units_done=totals.units_done + 1,
                items_reported=totals.items_reported + len(checked),
                items_ok=totals.items_ok + sum(1 for item in checked if item.result == "ok"),
                items_broken=totals.items_broken + sum(1 for item in checked if item.result == "broken"),
            )
        else:
            self._totals = replace(totals, units_failed=totals.units_failed + 1)

    async def _run(self, client: CoordinatorClient, egress: Egress, lease: wire.Lease) -> WorkloadOutcome:
        if lease.bundle is None:
            return WorkloadOutcome(ExitCode.FAILED, None, "the coordinator named no bundle for this unit", "")
        try:
            ready = await self._ready_bundle(client, lease.bundle)
        except (BundleError, Unavailable, Rejected) as exc:
            # Counted against this version by the coordinator: a version peers cannot fetch or
            # trust is a failing version.
            return WorkloadOutcome(
                ExitCode.FAILED, None, f"bundle {lease.bundle.name} {lease.bundle.version}: {exc}", ""
            )
        sandboxed = self.trust.confinement(ready)  # raises Untrusted
        return await run_workload(
            ready.argv if sandboxed is None else ready.sandboxed_argv,
            Unit(unit_id=lease.unit_id, payload=lease.payload),
            egress.fetch if "fetch" in ready.capabilities else None,
            timeout=min(ready.timeout, self.settings.unit_timeout),
            limits=ready.limits,
            env=ready.env if sandboxed is None else ready.sandboxed_env,
            workdir_parent=self.workdir,
            sandbox=sandboxed,
        )

    async def _ready_bundle(self, client: CoordinatorClient, ref: wire.BundleRef) -> ReadyBundle:
        """The bundle a lease names, fetched and checked (once) and ready to run."""
        assert self._bundles is not None, "units run only while the agent runs"
        key = (client.base_url, ref.name, ref.version)
        info = self._bundle_infos.get(key)
        if info is None:
            info = await _patiently(lambda: client.bundle_info(ref.name, ref.version))
            self._bundle_infos[key] = info
        # Bundle names belong to each coordinator (its operator admits the owners), so owner
        # keys are pinned per coordinator key.
        scope = self._coordinator_keys.get(client.base_url)
        if scope is None:
            scope = self._coordinator_keys[client.base_url] = await _patiently(client.public_key)
        return await self._bundles.ensure(ref, info, scope)

    async def _renew_loop(self, client: CoordinatorClient, ref: wire.LeaseRef, unit: asyncio.Task[None]) -> None:
        """Renew the lease every third of its length. A holder that cannot renew stops the
        unit: once renewals have failed for STOP_UNRENEWED intervals, the coordinator may soon
        hand the unit, and so its website, to another peer (coordinator.unit_sizing), and two
        peers on one host at once would break the politeness promise."""
        interval = self._lease_seconds / 3
        renewed_at = time.monotonic()
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                await client.renew(ref)
            except Unavailable as exc:
                if time.monotonic() - renewed_at >= STOP_UNRENEWED * interval:
                    log.warning(
                        "unit %d: lease not renewed for %.0f s (%s); stopping it",
                        ref.unit_id,
                        time.monotonic() - renewed_at,
                        exc,
                    )
                    unit.cancel()
                    return
                log.warning("could not renew lease of unit %d: %s", ref.unit_id, exc)
                delay = interval / 4
                continue
            except Rejected as exc:
                log.warning("lease of unit %d is gone (%s); stopping it", ref.unit_id, exc)
                unit.cancel()
                return
            renewed_at = time.monotonic()
            delay = interval

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
        """Send every report in the outbox, several to one coordinator in batches; the last
        reason one of them must be sent again."""
        by_coordinator: dict[str, list[PendingReport]] = {}
        for pending in self.outbox.pending():
            by_coordinator.setdefault(pending.coordinator, []).append(pending)
        trouble = None
        for url, pendings in by_coordinator.items():
            client = CoordinatorClient(url, self.identity, session)
            for start in range(0, len(pendings), wire.MAX_REPORT_BATCH):
                trouble = await self._deliver_batch(client, pendings[start : start + wire.MAX_REPORT_BATCH]) or trouble
        return trouble

    async def _deliver_batch(self, client: CoordinatorClient, pendings: list[PendingReport]) -> Unavailable | None:
        if len(pendings) == 1:
            return await self._deliver(client, pendings[0])
        try:
            verdicts = await client.report_batch([pending.report for pending in pendings])
        except Unavailable as exc:
            log.info("%d reports kept for later: %s", len(pendings), exc)
            return exc
        except Rejected as exc:
            # A coordinator without the batch endpoint (404), or one refusing the batch as a
            # whole: each report on its own then, as before batches existed.
            log.info("report batch refused (%s); sending the %d reports one by one", exc, len(pendings))
            trouble = None
            for pending in pendings:
                trouble = await self._deliver(client, pending) or trouble
            return trouble
        for pending, verdict in zip(pendings, verdicts, strict=False):
            if not verdict.accepted:
                log.warning("report of unit %d refused: %s", verdict.unit_id, verdict.reason)
            self.outbox.remove(pending)
        log.info("%d reports delivered in one batch", len(pendings))
        return None

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


async def _patiently(call: Callable[[], Awaitable[T]]) -> T:
    """A call a unit depends on, retried while the coordinator is only busy (LOST_AFTER tries)."""
    for failures in range(LOST_AFTER):
        try:
            return await call()
        except Unavailable as exc:
            if failures + 1 == LOST_AFTER:
                raise
            await asyncio.sleep(backoff_delay(failures, retry_after=exc.retry_after, cap=10.0))
    raise AssertionError("unreachable")


async def _retry(
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
            await _wait_any(set(), stop, timeout=delay)
    return None


_UNSPECIFIED = ("", "0.0.0.0", "::")


def _announce_host(settings: PeerSettings) -> str | None:
    """The address other peers can reach this peer's bundle seeding at: the listen address if
    one was given, else the local address of the route towards the network (behind NAT this is
    the private address; peers elsewhere then reach this one only through their own
    connections). None when there is no way to tell."""
    for host, _ in (settings.torrent_listen, settings.dht_listen):
        if host not in _UNSPECIFIED:
            return host
    target = settings.bootstrap[0][0] if settings.bootstrap else URL(settings.coordinator or "").host
    if not target:
        return None
    try:
        family = socket.AF_INET6 if ":" in target else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((target, 9))  # UDP: no packet is sent, only a route chosen
            return str(probe.getsockname()[0])
    except OSError:
        return None


def _lowest(*rates: int | None) -> int | None:
    """The lowest of the given limits; None (no limit) when none is given."""
    given = [rate for rate in rates if rate is not None]
    return min(given) if given else None
