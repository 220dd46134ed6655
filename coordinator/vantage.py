"""Vantage points: the rules a store applies to jobs whose model asks for every URL from K
peers in different networks (`JobModel.vantage`, K the job's `input.vantage`). Pure.

- **A peer's network** is the one its lease request came from, as this coordinator sees the
  connection (`network_of`): never what a peer says of itself, which a hostile peer would
  choose so that one machine passed for K vantage points. A TCP connection's source address
  cannot be made up, so K networks take a presence in K networks. By default a network is an
  IPv4 /16 or an IPv6 /48 (what one organisation or ISP region holds); an operator with a small
  or lab network sets longer prefixes (`VantageRules`).
- **Items.** Each URL is K items, one per vantage point (its `replica`, 0..K-1), all of the
  first vantage point's before the second's; a unit holds items of one replica only
  (`host_leasing.form_unit`), so a unit never asks one peer for a URL twice.
- **Who may take a unit**: a peer whose network served no other replica of the same job on
  the same website (`may_serve`), and that did not itself (`peer_label`): a peer with an IPv4
  and an IPv6 address is in two networks but is one vantage point. Per website rather than per URL: a stronger rule, and one
  the store checks with one lookup. Any peer may lease a vantage job's units, not only the
  one the plan gave the website to: the plan knows nothing of networks.
- **The website is not hammered.** Replicas of a website's items are units of that website
  like any other: at most one live lease per website across all its jobs and replicas, its
  pause between units, robots.txt and crawl delay, backoff on 429 and 503. K vantage points
  therefore reach a website one after another, never K at once: a job of a thousand URLs and
  K = 16 would otherwise be 16 peers crawling it together, which is what the platform
  promises websites never to do. A probe takes K units' time per website instead; its
  vantage points measure at slightly different moments, which a probe reports anyway.
- **Fewer networks than K.** A vantage job none of whose units was granted for `wait` seconds
  while replicas still wait (no peer of a new network came) stops waiting: what waits is
  finished with a failure that says how many vantage points answered (`given_up`), so the
  owner sees each missing vantage point as a row rather than a job that never ends.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass

DEFAULT_PREFIX_V4 = 16
DEFAULT_PREFIX_V6 = 48
DEFAULT_WAIT = 600.0  # seconds without a grant before a vantage job stops waiting for networks
UNKNOWN = "unknown"  # a peer whose address is not an IP address (a Unix socket, a test client)


@dataclass(frozen=True, slots=True)
class VantageRules:
    """The operator's choices: how long a prefix makes a network, how long a job waits."""

    prefix_v4: int = DEFAULT_PREFIX_V4
    prefix_v6: int = DEFAULT_PREFIX_V6
    wait: float = DEFAULT_WAIT

    def __post_init__(self) -> None:
        if not 8 <= self.prefix_v4 <= 32 or not 16 <= self.prefix_v6 <= 128:
            raise ValueError("vantage prefixes must be 8..32 for IPv4 and 16..128 for IPv6")
        if not 0 < self.wait <= 7 * 86_400:
            raise ValueError("vantage wait must be above 0 and at most a week")


def network_of(address: str | None, rules: VantageRules) -> str:
    """The network a peer connecting from `address` counts as: its IPv4 /prefix_v4 or IPv6
    /prefix_v6 (an IPv4-mapped IPv6 address as the IPv4 address), else UNKNOWN (all such
    peers share it, so together they are one vantage point)."""
    try:
        ip = ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return UNKNOWN
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = rules.prefix_v4 if ip.version == 4 else rules.prefix_v6
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def may_serve(network: str, replica: int, used: Mapping[int, Collection[str]]) -> bool:
    """May a peer of `network` take a unit of `replica`, when `used` says which networks took
    units of each replica of the same job and website? Not when its network took another."""
    return not any(network in networks for other, networks in used.items() if other != replica)


def peer_label(peer_id: str) -> str:
    """A peer's key among the networks `may_serve` compares, never equal to a network."""
    return f"peer {peer_id}"


def stalled(last_grant: float, now: float, rules: VantageRules) -> bool:
    """Has a vantage job gone `wait` seconds without a unit granted (since `last_grant`, or its
    creation)? Then no peer of a network it still needs is coming soon."""
    return now - last_grant >= rules.wait


def given_up(answered: int, wanted: int, rules: VantageRules) -> str:
    """Why a vantage point's item was given up: fewer networks than asked for."""
    return (
        f"no vantage point left: {answered} of {wanted} networks took this website's items;"
        f" none of another network came within {rules.wait:g} s"
    )
