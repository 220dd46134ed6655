"""The peer's status: the document and its text for a person (served by peer.local_page)."""

from __future__ import annotations

from typing import Any

from peer.budget import ActiveHours, Budget
from peer.status import (
    MAX_SHOWN,
    BundleView,
    Checked,
    PeerStatus,
    Totals,
    UnitView,
    Usage,
    checked_items,
    state_of,
    status_text,
    to_json,
)


def a_status(**changes: object) -> PeerStatus:
    fields: dict[str, Any] = dict(
        peer_id="ab" * 32,
        name="kitchen",
        state="working",
        paused=None,
        resume_at=None,
        coordinator="http://coordinator.test:8700",
        units=(UnitView(7, 3, "http://a.test:80", 20, 1000.0),),
        budget=Budget(max_down=1_000_000, cap_bytes=2_000_000_000, active_hours=ActiveHours.parse(["08:00-18:00"])),
        usage=Usage(used=1_500_000, period_ends=2000.0, down_rate=250_000.0, up_rate=0.0),
        totals=Totals(units_done=4, units_failed=1, items_reported=80, items_ok=70, items_broken=10),
        recent=(Checked("http://a.test/", "ok", 200, 990.0), Checked("http://a.test/gone", "broken", 404, 995.0)),
        bundles=(BundleView("linkcheck", "0.1.0", 3, 120_000, ("fetch",)),),
        dht_neighbours=("10.0.0.2:4000", "10.0.0.3:4000"),
    )
    fields.update(changes)
    return PeerStatus(**fields)


def test_state_follows_pause_coordinator_and_units() -> None:
    assert state_of("outside active hours", "http://c.test", 2) == "paused"
    assert state_of(None, None, 0) == "looking"
    assert state_of(None, "http://c.test", 0) == "idle"
    assert state_of(None, "http://c.test", 1) == "working"


def test_the_document_and_its_text_say_what_the_peer_does() -> None:
    document = to_json(a_status())
    assert document["budget"] == {
        "max_down": 1_000_000,
        "max_up": None,
        "cap": 2_000_000_000,
        "cap_period": "day",
        "max_fetches": None,
        "active_hours": ["08:00-18:00"],
    }
    assert document["units"] == [
        {"unit_id": 7, "job_id": 3, "host": "http://a.test:80", "items": 20, "started_at": 1000.0, "done": None}
    ]
    assert document["recent"][1] == {"url": "http://a.test/gone", "result": "broken", "status": 404, "at": 995.0}
    assert document["bundles"] == [
        {"name": "linkcheck", "version": "0.1.0", "peers": 3, "uploaded": 120_000, "capabilities": ("fetch",)}
    ]
    assert document["dht"] == {"neighbours": ["10.0.0.2:4000", "10.0.0.3:4000"]}
    assert to_json(a_status(dht_neighbours=None))["dht"] is None
    text = status_text(document)
    assert text.splitlines() == [
        "kitchen: working, for http://coordinator.test:8700",
        "  unit 7: 20 URLs on http://a.test:80",
        "  used 1.5 MB of 2 GB this day; now 250 kB/s down, 0 B/s up (limits: down 1 MB/s)",
        "  done: 4 units, 80 URLs (70 ok, 10 broken); 1 failed",
    ]
    paused = to_json(
        a_status(state="paused", paused="transfer cap of 2 GB/day used up until 2026-11-28 00:00", units=())
    )
    assert (
        status_text(paused).splitlines()[0]
        == "kitchen: paused: transfer cap of 2 GB/day used up until 2026-11-28 00:00"
    )
    assert status_text({}).splitlines()[0] == "peer: unknown, for None"  # an odd document still prints


def test_checked_items_keeps_the_well_formed_ones_of_any_payload() -> None:
    payload = {
        "items": [
            {"url": "http://a.test/", "result": "ok", "status": 200},
            {"url": "http://a.test/x", "result": "timeout", "status": None},
            {"url": "http://a.test/y", "result": "broken", "status": True},  # not a status: kept without one
            {"url": "http://a.test/z", "status": 301, "dns": 0.01},  # another workload's record (a probe's)
            {"item": "sha256:ab12", "words": 3},  # a job of items names its item so
            {"item": "x" * 10_000},  # clipped for the page
            {"url": 5, "result": "ok"},
            "garbage",
            None,
        ]
    }
    assert checked_items(payload, 7.0) == [
        Checked("http://a.test/", "ok", 200, 7.0),
        Checked("http://a.test/x", "timeout", None, 7.0),
        Checked("http://a.test/y", "broken", None, 7.0),
        Checked("http://a.test/z", "done", 301, 7.0),
        Checked("sha256:ab12", "done", None, 7.0),
        Checked("x" * (MAX_SHOWN - 1) + "…", "done", None, 7.0),
    ]
    assert checked_items(None, 7.0) == checked_items({"items": "no"}, 7.0) == []
