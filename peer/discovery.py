"""Finding a coordinator through the DHT: look up the network's announcements, keep those the
network admitted, prove that each candidate holds the key it announced under, and rank them.

What a peer checks of an announcement before it sends the coordinator anything:
- it stands under `coordinators_key(network, network_key)`, signed by the coordinator's key
  (the DHT node checked the signature and the chain as well; the peer does not rely on that);
- its certificate chain admits that key to the network by the network key, directly or through
  one delegate, and no certificate in it has expired (overlay.certificates `check_chain`);
- its URL's host, if an IP address, passes the workload address policy (peer.address_policy):
  no loopback, private or link-local coordinator unless the volunteer allowed private
  addresses. A host name is checked where it is resolved, at every connection: the peer's
  session resolves through the policy (peer.egress `policy_resolver`), so a name that
  re-binds to 127.0.0.1 later is refused then;
- the server at the URL signs a fresh nonce with the certified key (`prove`).
Every answer is read with overlay.http's size cap.

`rank` is the pure choice: coordinators that failed us recently last; the volunteer's
preferred coordinator first; then those with work waiting before idle ones; among those, the
one with the fewest peers per waiting unit (where help counts most); then the nearest
(round-trip time of the proof).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from overlay import http, wire
from overlay.announcements import NONCE_SIZE, CoordinatorAnnouncement, coordinators_key, hello_message, is_count
from overlay.certificates import CertificateError, check_chain
from overlay.dht import DhtNode
from overlay.identity import verify
from peer.address_policy import describe_refusal, is_allowed

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


def admitted(announcement: CoordinatorAnnouncement, network: str, network_key: bytes, now: float) -> bool:
    """Whether `announcement`'s chain admits its signer to `network` (by `network_key`) at `now`."""
    try:
        check_chain(
            announcement.chain,
            network=network,
            network_key=network_key,
            subject=bytes.fromhex(announcement.public_key),
            now=now,
        )
    except CertificateError as exc:
        log.info("ignoring coordinator %s…: %s", announcement.public_key[:16], exc)
        return False
    return True


async def announcements(dht: DhtNode, network: str, network_key: bytes) -> list[CoordinatorAnnouncement]:
    """The announcements of the coordinators `network` (with `network_key`) admits: signatures
    and certificate chains verified."""
    records = await dht.lookup(coordinators_key(network, network_key))
    now = time.time()
    found = [a for r in records if (a := CoordinatorAnnouncement.from_record(r)) is not None]
    return newest_per_key(a for a in found if a.network == network and admitted(a, network, network_key, now))


def url_refusal(url: str, allow_private: bool) -> str | None:
    """Why the peer will not contact an announced `url` whose host is an IP address, or None.
    (A host name is checked where it is resolved: see the module's docstring.)"""
    try:
        host = URL(url).host
    except (ValueError, TypeError):
        return "not a valid URL"
    if host is None:
        return "no host"
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None  # a name
    return None if is_allowed(ip, allow_private) else describe_refusal(ip)


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
    network_key: bytes,
    *,
    workloads: Collection[str],
    preferred: str | None = None,
    avoid: Collection[str] = (),
    allow_private: bool = False,
) -> list[Candidate]:
    """Proven, admitted coordinators of `network` (with `network_key`) whose URLs pass the
    address policy, best first; empty when none answers. `session` should resolve names
    through the policy (peer.egress `policy_resolver`)."""
    found = []
    for announcement in await announcements(dht, network, network_key):
        refusal = url_refusal(announcement.url, allow_private)
        if refusal is None:
            found.append(announcement)
        else:
            log.info("not contacting coordinator %s: %s", announcement.url[:200], refusal)
    ordered = sorted(found, key=lambda a: (a.url in avoid, a.url != preferred, a.load == 0))[:MAX_PROBED]
    proven = await asyncio.gather(*(prove(session, a) for a in ordered))
    return rank([c for c in proven if c is not None], workloads=workloads, preferred=preferred, avoid=avoid)
