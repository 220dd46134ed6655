"""The running peer: its parts wired together, and the loop over coordinators.

A peer chooses a coordinator and registers with it (peer.coordinator_choice), leases units
(peer.leasing) and runs each (peer.unit_work), hands the results over (peer.delivery), keeps to
its budget (peer.budget_keeper) and follows its volunteer (peer.controls; its states are
peer.states'). `Agent` builds those parts, serves the volunteer's page, and keeps choosing a
coordinator until it is stopped. The parts read time from the clock it is given (peer.clock).

Every finished unit is written to the outbox before it is reported, and stays there until a
coordinator has answered, so a coordinator restart or a network drop never loses a result.
On stop (SIGTERM) the peer leases nothing more, lets running units finish for a grace period,
releases the leases of those that did not, and flushes the outbox once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

from overlay import wire
from overlay.dht import DhtNode
from overlay.identity import Identity
from overlay.torrent import TorrentSession
from peer.allowance import Allowance
from peer.budget import Budget
from peer.budget_keeper import BudgetKeeper
from peer.bundles import BundleCache
from peer.clock import SYSTEM_CLOCK, Clock
from peer.controls import Pauses, VolunteerControls, bundle_upload_limit
from peer.coordinator_choice import WORKLOADS, CoordinatorChoice
from peer.delivery import Delivery
from peer.egress import Egress, policy_resolver
from peer.idle import AwaySense
from peer.leasing import LeaseEnd, Leasing
from peer.local_page import load_or_create_token, serve_local_page
from peer.outbox import Outbox
from peer.runner import remove_leftovers
from peer.settings import DEFAULT_BUNDLE_UPLOAD_RATE as DEFAULT_BUNDLE_UPLOAD_RATE  # bench uses it from here
from peer.settings import PeerSettings as PeerSettings  # `osaas peer run` builds them from here
from peer.settings import announce_host
from peer.states import PAUSED_BY_VOLUNTEER as PAUSED_BY_VOLUNTEER  # the local page's tests use it from here
from peer.states import state_of
from peer.status import BundleView, PeerStatus, Usage
from peer.tally import WorkTally
from peer.trust import WorkloadTrust
from peer.unit_work import UnitWork
from peer.work_choice import WorkChoice

log = logging.getLogger(__name__)

VERSION = "osaas-peer/0.2"
FINAL_FLUSH = 5.0  # seconds the outbox is given on the way out


class Agent:
    """One volunteer's peer. What the local page reads and changes (peer.local_page's
    PeerControls) is here; the work is done by the parts built below."""

    def __init__(self, settings: PeerSettings, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if settings.coordinator is None and not settings.bootstrap:
            raise ValueError("a peer needs a coordinator URL or DHT bootstrap addresses")
        self.settings = settings
        self._clock = clock
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
        self.allowance = Allowance(settings.budget, settings.data_dir, clock=clock.now)
        away = AwaySense(settings.idle_after, now=clock.time) if settings.idle_after is not None else None
        if away is not None and away.without_x is not None:
            log.warning("--only-when-idle: %s; working only while the osaas screensaver shows", away.without_x)
        self._running: set[asyncio.Task[None]] = set()  # the units under way
        self._pauses = Pauses(self.allowance, away, self._running)
        self._budget_keeper = BudgetKeeper(self.allowance, self._pauses, bundle_upload_rate=settings.bundle_upload_rate)
        self._choice = CoordinatorChoice(
            WorkChoice(settings.coordinator, settings.network, settings.prefer),
            self.identity,
            self._registration,
            clock,
            network_keys=settings.network_keys,
            allow_private=settings.allow_private_coordinators or settings.egress.allow_private,
        )
        self._controls = VolunteerControls(
            self._pauses,
            self.allowance,
            self._choice,
            config_path=settings.config_path,
            bundle_upload_rate=settings.bundle_upload_rate,
            by_url=settings.coordinator is not None,
        )
        self._delivery = Delivery(self.outbox, self.identity)
        self._tally = WorkTally()
        self._working_for: str | None = None  # the coordinator registered with, for the status
        self._bundles: BundleCache | None = None  # while running
        self._dht: DhtNode | None = None  # while running, when coordinators are found in the DHT

    def status(self) -> PeerStatus:
        """What the peer is doing now (peer.status), for the volunteer."""
        allowance = self.allowance.status()
        return PeerStatus(
            peer_id=self.identity.public_hex,
            name=self.settings.name,
            state=state_of(self._pauses.reason, self._working_for, len(self._tally.units)),
            paused=self._pauses.reason,
            resume_at=self._pauses.resume_at(),
            coordinator=self._working_for,
            units=tuple(self._tally.units.values()),
            budget=self.allowance.budget,
            usage=Usage(allowance.used, allowance.period_ends.timestamp(), *self._budget_keeper.recent_rates),
            totals=self._tally.totals,
            recent=tuple(self._tally.recent),
            bundles=tuple(BundleView(*seeded) for seeded in self._bundles.seeding()) if self._bundles else (),
            dht_neighbours=None if self._dht is None else tuple(f"{h}:{p}" for h, p in self._dht.neighbours()),
            sandbox=self.trust.summary(),
            sandboxed=self.trust.sandbox is not None,
        )

    # ---- the volunteer's controls (peer.local_page), kept by peer.controls ------------------

    def pause(self) -> None:
        """Stop working until `resume`: running units are given back at once."""
        self._controls.pause()

    def resume(self) -> None:
        self._controls.resume()

    def set_budget(self, budget: Budget) -> None:
        """Use `budget` from now on, and keep it in the config file for the next start."""
        self._controls.set_budget(budget)

    @property
    def work_choice(self) -> WorkChoice:
        return self._choice.wanted

    @property
    def works_by_url(self) -> bool:
        """Started with a coordinator URL (no DHT node): the choice is a URL, not a network."""
        return self._controls.works_by_url

    def set_work_choice(self, form: Any) -> WorkChoice:
        """Work for whom `form` says from the next lease on (peer.controls)."""
        return self._controls.set_work_choice(form)

    # ---- running ---------------------------------------------------------------------------

    def _registration(self) -> wire.RegisterRequest:
        """What the peer registers with: its capacity follows the budget as it is now."""
        return wire.RegisterRequest(
            name=self.settings.name[: wire.MAX_PEER_NAME] or "peer",
            slots=self.settings.slots,
            workloads=sorted(WORKLOADS),
            version=VERSION,
            capacity=self.allowance.budget.sustainable_rate,
            trusted_owners=self.trust.advertised_owners(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then drain and return."""
        discovering = self.settings.coordinator is None
        async with contextlib.AsyncExitStack() as stack:
            # Coordinators found in the DHT are reached only at addresses the policy allows
            # (peer.discovery); one the volunteer named (--coordinator) wherever it is.
            allow_private = self.settings.allow_private_coordinators or self.settings.egress.allow_private
            connector = None if not discovering else aiohttp.TCPConnector(resolver=policy_resolver(allow_private))
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
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
                    upload_rate=bundle_upload_limit(self.settings.bundle_upload_rate, budget),
                    download_rate=budget.max_down,
                    state_dir=self.settings.data_dir / "torrent",
                    port_mapping=self.settings.port_mapping,
                )
            )
            self._controls.torrents = torrents
            stack.callback(setattr, self._controls, "torrents", None)
            bundles = BundleCache(
                self.settings.data_dir / "bundles",
                torrents,
                identity=self.identity,
                dht=dht,
                announce_host=announce_host(self.settings),
                announce_port=self.settings.public_address[1] if self.settings.public_address else None,
                fetch_timeout=self.settings.bundle_fetch_timeout,
            )
            self._bundles = bundles
            await bundles.start()
            stack.callback(setattr, self, "_bundles", None)  # after the close below: callbacks run last first
            stack.push_async_callback(bundles.close)
            if self.settings.status_port is not None:
                token = load_or_create_token(self.settings.data_dir)
                await stack.enter_async_context(serve_local_page(self.settings.status_port, self, token))
            log.info("peer %s… started", self.identity.public_hex[:12])
            await self._work_for_coordinators(session, egress, bundles, torrents, dht, stop)

    async def _work_for_coordinators(
        self,
        session: aiohttp.ClientSession,
        egress: Egress,
        bundles: BundleCache,
        torrents: TorrentSession,
        dht: DhtNode | None,
        stop: asyncio.Event,
    ) -> None:
        """Work for one coordinator after another until `stop`; then give the running units
        their grace period and flush the outbox once."""
        discovering = dht is not None
        units = UnitWork(
            trust=self.trust,
            egress=egress,
            bundles=bundles,
            delivery=self._delivery,
            tally=self._tally,
            workdir=self.workdir,
            unit_timeout=self.settings.unit_timeout,
            clock=self._clock,
            paused=lambda: self._pauses.reason,
        )
        leasing = Leasing(
            slots=self.settings.slots,
            trust=self.trust,
            pauses=self._pauses,
            choice=self._choice,
            usage=self._budget_keeper.usage,
            running=self._running,
            start_unit=units.work,
            clock=self._clock,
        )
        flusher = asyncio.create_task(self._delivery.flush_loop(session, stop))
        keeper = asyncio.create_task(self._budget_keeper.run(torrents, stop))
        self._pauses.check()  # a cap used up before a restart
        try:
            while not stop.is_set():
                client = await self._choice.choose(session, dht, stop)
                if client is None:
                    break
                end = LeaseEnd.LOST
                lease_seconds = await self._choice.register(client, stop, give_up=discovering)
                if lease_seconds is not None:
                    self._working_for = client.base_url
                    end = await leasing.run(client, stop, give_up=discovering, lease_seconds=lease_seconds)
                elif self._choice.take_change():
                    end = LeaseEnd.CHANGED
                self._working_for = None
                if end is LeaseEnd.LOST and not stop.is_set():
                    log.warning("coordinator %s is not answering; looking for another", client.base_url)
                    self._choice.avoid(client.base_url)
        finally:
            await self._drain()
            for task in (flusher, keeper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.allowance.flush()
            await self._delivery.flush_once(session, deadline=FINAL_FLUSH)

    async def _drain(self) -> None:
        running = self._running
        if not running:
            return
        log.info("stopping: letting %d running unit(s) finish (up to %.0f s)", len(running), self.settings.drain_grace)
        _, unfinished = await asyncio.wait(set(running), timeout=self.settings.drain_grace)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
