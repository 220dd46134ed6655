"""Finding a coordinator through the DHT: look up the network's announcements, prove that
each candidate holds the key it announced under, and rank them.

`rank` is the pure choice: coordinators that failed us recently last; the volunteer's
preferred coordinator first; then those with work waiting before idle ones; among those, the
one with the fewest peers per waiting unit (where help counts most); then the nearest
(round-trip time of the proof).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import aiohttp

from overlay import http, wire
from overlay.announcements import NONCE_SIZE, CoordinatorAnnouncement, coordinators_key, hello_message, is_count
from overlay.dht import DhtNode
from overlay.identity import verify

log = logging.getLogger(__name__)

MAX_PROBED = 8  # candidates proven at once; the rest are not needed to pick one


@dataclass(frozen=True, slots=True)
class Candidate:
    announcement: CoordinatorAnnouncement
    rtt: float  # seconds the proof took


def rank(
    candidates: Iterable[Candidate],
    *,
    workloads: Collection[str],
    preferred: str | None = None,
    avoid: Collection[str] = (),
) -> list[Candidate]:
    """Candidates that accept one of `workloads` (or all, given `wire.ANY_WORKLOAD`), best first."""

    def order(c: Candidate) -> tuple[bool, bool, bool, float, float, str]:
        a = c.announcement
        return (a.url in avoid, a.url != preferred, a.load == 0, a.peers / max(a.load, 1), c.rtt, a.public_key)

    if wire.ANY_WORKLOAD in workloads:  # a peer that runs whatever bundle it is given
        usable = list(candidates)
    else:
        usable = [c for c in candidates if set(c.announcement.workloads) & set(workloads)]
    return sorted(usable, key=order)


def newest_per_key(announcements: Iterable[CoordinatorAnnouncement]) -> list[CoordinatorAnnouncement]:
    newest: dict[str, CoordinatorAnnouncement] = {}
    for a in announcements:
        if a.public_key not in newest or a.issued_at > newest[a.public_key].issued_at:
            newest[a.public_key] = a
    return list(newest.values())


async def announcements(dht: DhtNode, network: str) -> list[CoordinatorAnnouncement]:
    """What the DHT knows about the coordinators of `network` (signatures verified)."""
    records = await dht.lookup(coordinators_key(network))
    found = [a for r in records if (a := CoordinatorAnnouncement.from_record(r)) is not None]
    return newest_per_key(a for a in found if a.network == network)


async def prove(session: aiohttp.ClientSession, announcement: CoordinatorAnnouncement) -> Candidate | None:
    """The candidate if the server at its URL signs a fresh nonce with the announced key."""
    nonce = os.urandom(NONCE_SIZE)
    started = time.monotonic()
    try:
        answer = await http.call(session, "POST", announcement.url, "/v1/hello", {"nonce": nonce}, timeout=5.0)
    except (http.Unavailable, http.Rejected) as exc:
        log.info("coordinator %s did not answer the proof: %s", announcement.url, exc)
        return None
    rtt = time.monotonic() - started
    signature = answer.get("signature") if isinstance(answer, dict) else None
    key = bytes.fromhex(announcement.public_key)
    if not isinstance(signature, bytes) or not verify(key, hello_message(nonce), signature):
        log.warning("server at %s does not hold the key it was announced with; ignored", announcement.url)
        return None
    load, peers = answer.get("load"), answer.get("peers")
    if is_count(load) and is_count(peers):  # fresher than the announcement, which is minutes old
        announcement = dataclasses.replace(announcement, load=load, peers=peers)
    return Candidate(announcement, rtt)


async def find_coordinators(
    dht: DhtNode,
    session: aiohttp.ClientSession,
    network: str,
    *,
    workloads: Collection[str],
    preferred: str | None = None,
    avoid: Collection[str] = (),
) -> list[Candidate]:
    """Proven coordinators of `network`, best first; empty when none answers."""
    found = await announcements(dht, network)
    ordered = sorted(found, key=lambda a: (a.url in avoid, a.url != preferred, a.load == 0))[:MAX_PROBED]
    proven = await asyncio.gather(*(prove(session, a) for a in ordered))
    return rank([c for c in proven if c is not None], workloads=workloads, preferred=preferred, avoid=avoid)
