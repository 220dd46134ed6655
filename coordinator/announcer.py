"""Announcing this coordinator in the DHT: a signed record, re-published well before it
expires, carrying the coordinator's URL, network, load, the workloads it accepts and the
network's certificate of its key (its `Admission`); on a clean shutdown a short-lived
withdrawal, carrying the certificate too, replaces it. Once the certificate has expired
nothing more is announced (peers and DHT nodes would refuse it), and the log says so."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from coordinator.store import Store
from overlay import records
from overlay.announcements import MAX_WORKLOADS, CoordinatorAnnouncement, coordinators_key
from overlay.certificates import Admission, encode_chain
from overlay.dht import DhtNode
from overlay.identity import Identity
from overlay.wire import JobStatus

log = logging.getLogger(__name__)

RECORD_TTL = 120.0
WITHDRAWAL_TTL = 30.0
PEER_ACTIVE_WINDOW = 300.0  # a peer heard from this recently counts as one of ours


def backlog(jobs: Iterable[JobStatus]) -> int:
    """Work units not yet done across running jobs: the load peers compare coordinators by."""
    return sum(job.units_total - job.units_done for job in jobs if job.state == "running")


class Announcer:
    def __init__(
        self,
        dht: DhtNode,
        identity: Identity,
        store: Store,
        *,
        url: str,
        admission: Admission,
        ttl: float = RECORD_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dht = dht
        self._identity = identity
        self._store = store
        self._url = url
        self._admission = admission
        self._network = admission.network
        self._key = coordinators_key(admission.network, admission.network_key)
        self._ttl = ttl
        self._clock = clock
        self._expiry_said = False

    async def _announcement(self) -> CoordinatorAnnouncement:
        jobs = await self._store.list_jobs()
        return CoordinatorAnnouncement(
            public_key=self._identity.public_hex,
            url=self._url,
            network=self._network,
            load=backlog(jobs),
            peers=await self._store.peer_count(self._clock() - PEER_ACTIVE_WINDOW),
            workloads=await self._workloads(),
            issued_at=self._clock(),
            chain=self._admission.chain,
        )

    async def _workloads(self) -> tuple[str, ...]:
        """The bundles a job may name here: those with a stable version (at most the record's 64)."""
        names = sorted(b.name for b in await self._store.list_bundles() if b.stable is not None)
        return tuple(names[:MAX_WORKLOADS])

    async def announce_once(self) -> int:
        """Publish a fresh announcement; how many DHT nodes stored it."""
        now = self._clock()
        if now >= self._admission.expires_at:
            if not self._expiry_said:
                self._expiry_said = True
                log.error(
                    "not announced: the network's certificate of this coordinator expired; peers no longer find"
                    " it (`osaas network admit` a new one, then restart with --network-cert)"
                )
            return 0
        announcement = await self._announcement()
        ttl = min(self._ttl, self._admission.expires_at - now)
        record = records.sign(self._identity, self._key, announcement.payload(), now, ttl)
        stored = await self._dht.publish(self._key, record)
        if stored:
            log.debug("announced %s in network %r on %d DHT nodes", self._url, self._network, stored)
        elif not self._dht.neighbours():
            log.info("no other DHT node yet: %s is announced on this node only", self._url)
        else:
            log.warning("could not announce %s: no other DHT node stored the record (will retry)", self._url)
        return stored

    async def run(self) -> None:
        """Announce now and every third of the record's lifetime, until cancelled."""
        while True:
            try:
                stored = await self.announce_once()
                if not stored and not self._dht.neighbours():
                    await self._dht.bootstrap_again()  # the bootstrap node may have been down
            except Exception:  # a failed round must not end announcing
                log.exception("announcing failed")
                stored = 0
            await asyncio.sleep(self._ttl / 3 if stored else min(5.0, self._ttl / 3))

    async def withdraw(self) -> None:
        now = self._clock()
        if now >= self._admission.expires_at:
            return
        payload = {"withdrawn": True, "cert": encode_chain(self._admission.chain)}
        ttl = min(WITHDRAWAL_TTL, self._admission.expires_at - now)
        record = records.sign(self._identity, self._key, payload, now, ttl)
        stored = await self._dht.publish(self._key, record)
        log.info("withdrew the announcement of %s from %d DHT nodes", self._url, stored)
