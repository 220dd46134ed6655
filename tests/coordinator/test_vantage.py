"""Vantage points as pure rules: what a network is, who may take a replica, which items a new
unit of a vantage job holds, and when a job stops waiting for networks."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import host_leasing, url_jobs, vantage
from coordinator.host_leasing import WaitingItem
from coordinator.vantage import UNKNOWN, VantageRules

RULES = VantageRules()


def test_a_network_is_an_ipv4_16_or_an_ipv6_48_by_default() -> None:
    assert vantage.network_of("203.0.113.7", RULES) == "203.0.0.0/16"
    assert vantage.network_of("2001:db8:1:2::9", RULES) == "2001:db8:1::/48"
    assert vantage.network_of("::ffff:198.51.100.3", RULES) == "198.51.0.0/16"  # IPv4-mapped
    assert vantage.network_of("fe80::1%eth0", RULES) == "fe80::/48"
    # Not an IP address (a Unix socket, no address): all such peers are one vantage point.
    assert vantage.network_of(None, RULES) == vantage.network_of("garbage", RULES) == UNKNOWN
    lab = VantageRules(prefix_v4=32, prefix_v6=128)
    assert vantage.network_of("10.231.0.2", lab) != vantage.network_of("10.231.0.3", lab)
    with pytest.raises(ValueError, match="prefixes"):
        VantageRules(prefix_v4=33)


@settings(max_examples=200, deadline=None)
@given(a=st.ip_addresses(v=4), b=st.ip_addresses(v=4), prefix=st.integers(8, 32))
def test_two_addresses_share_a_network_exactly_when_they_share_the_prefix(
    a: IPv4Address, b: IPv4Address, prefix: int
) -> None:
    rules = VantageRules(prefix_v4=prefix)
    same = int(a) >> (32 - prefix) == int(b) >> (32 - prefix)
    assert (vantage.network_of(str(a), rules) == vantage.network_of(str(b), rules)) == same


@settings(max_examples=200, deadline=None)
@given(
    used=st.dictionaries(st.integers(0, 4), st.sets(st.sampled_from("ABCDE"), max_size=3), max_size=5),
    network=st.sampled_from("ABCDEF"),
    replica=st.integers(0, 4),
)
def test_a_network_serves_at_most_one_replica_of_a_website(
    used: dict[int, set[str]], network: str, replica: int
) -> None:
    allowed = vantage.may_serve(network, replica, used)
    others = {n for r, networks in used.items() if r != replica for n in networks}
    assert allowed == (network not in others)
    if allowed:  # once it took the replica, no other replica may go to it
        after = {**used, replica: {*used.get(replica, set()), network}}
        assert not any(vantage.may_serve(network, other, after) for other in range(5) if other != replica)


@settings(max_examples=150, deadline=None)
@given(
    urls=st.integers(1, 6),
    k=st.integers(1, 5),
    size=st.integers(1, 8),
    refused=st.sets(st.integers(0, 4)),
)
def test_a_vantage_unit_holds_one_replica_of_each_url_at_most(urls: int, k: int, size: int, refused: set[int]) -> None:
    job = url_jobs.JobInput(tuple(f"http://a.test/{i}" for i in range(urls)), None, k)
    seeds = url_jobs.seed_items(job, crawl=False, vantage=k)
    assert len(seeds) == urls * k and {s.replica for s in seeds} == set(range(k))
    waiting = [WaitingItem(7, i, s.url, s.crawl, s.replica) for i, s in enumerate(seeds)]
    # A second job behind it on the same website, without vantage points.
    waiting += [WaitingItem(8, 100 + i, f"http://a.test/other{i}", True) for i in range(2)]
    formed = host_leasing.form_unit(waiting, lambda job_id: size, lambda job_id, r: job_id != 7 or r not in refused)
    assert formed is not None
    if 0 in refused:  # its next vantage point is not the asking peer's to be: the next job goes
        assert formed.job_id == 8
        return
    assert formed.job_id == 7 and formed.replica == 0
    urls_in_unit = [url for url, _ in formed.items]
    assert urls_in_unit == [f"http://a.test/{i}" for i in range(min(urls, size))]  # once each, in order


def test_a_job_stops_waiting_for_networks_only_after_the_wait() -> None:
    rules = VantageRules(wait=60.0)
    assert not vantage.stalled(1000.0, 1059.0, rules)
    assert vantage.stalled(1000.0, 1060.0, rules)
    assert vantage.given_up(2, 5, rules) == (
        "no vantage point left: 2 of 5 networks took this website's items; none of another network came within 60 s"
    )
