from __future__ import annotations

from overlay.announcements import CoordinatorAnnouncement, coordinators_key, valid_network
from peer.discovery import Candidate, newest_per_key, rank


def candidate(
    url: str, *, load: int, peers: int = 0, rtt: float = 0.01, key: str = "", workloads=("linkcheck",)
) -> Candidate:
    return Candidate(CoordinatorAnnouncement(key or url, url, "public", load, peers, tuple(workloads), 1.0), rtt)


def urls(candidates: list[Candidate]) -> list[str]:
    return [c.announcement.url for c in candidates]


def test_work_waiting_and_fewest_peers_per_unit_come_first():
    idle = candidate("http://idle", load=0)
    crowded = candidate("http://crowded", load=10, peers=20)
    needy = candidate("http://needy", load=100, peers=2)
    assert urls(rank([idle, crowded, needy], workloads=["linkcheck"])) == [
        "http://needy",
        "http://crowded",
        "http://idle",
    ]


def test_preference_beats_need_and_failures_rank_last():
    a = candidate("http://a", load=100)
    b = candidate("http://b", load=0)
    assert urls(rank([a, b], workloads=["linkcheck"], preferred="http://b")) == ["http://b", "http://a"]
    assert urls(rank([a, b], workloads=["linkcheck"], preferred="http://b", avoid={"http://b"})) == [
        "http://a",
        "http://b",
    ]


def test_nearest_wins_between_equals_and_workloads_must_match():
    far = candidate("http://far", load=5, rtt=0.2)
    near = candidate("http://near", load=5, rtt=0.01)
    other = candidate("http://other", load=500, workloads=("render",))
    assert urls(rank([far, near, other], workloads=["linkcheck"])) == ["http://near", "http://far"]


def test_newest_announcement_per_coordinator_key():
    old = CoordinatorAnnouncement("k", "http://old", "public", 1, 0, ("linkcheck",), 1.0)
    new = CoordinatorAnnouncement("k", "http://new", "public", 1, 0, ("linkcheck",), 2.0)
    assert newest_per_key([new, old]) == [new]


def test_network_names():
    key = bytes(range(32))
    assert coordinators_key("public", key) == f"osaas/v1/coordinators/public/{key.hex()}"
    for bad in ("", "Public", "a b", "x" * 65, "../etc"):
        assert not valid_network(bad)
