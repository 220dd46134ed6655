"""The peer's status, for the volunteer: what it is doing, as a JSON document on 127.0.0.1.

`PeerStatus` is the view, built by the agent (`Agent.status`) from what it knows and turned into
JSON by `to_json`; the volunteer's local page (peer.local_page) serves it as `GET /status` on
the loopback address only, so only this machine sees it. `osaas peer status` prints it; the
screensaver and the local page show it.

The document (times are Unix seconds, sizes bytes, rates bytes/s; null means none or unknown):

    {"peer_id": hex, "name": str,
     "state": "looking" | "idle" | "working" | "paused",   no coordinator yet / no work / units / not working
     "paused": str | null, "resume_at": float | null,      why not, and until when at the latest
     "coordinator": url | null,
     "units": [{"unit_id", "job_id", "host", "items", "started_at", "done"}, ...],   done: null unless its workload says
     "budget": {"max_down", "max_up", "cap", "cap_period", "max_fetches", "active_hours": [str]},
     "usage": {"used", "period_ends", "down_rate", "up_rate"},
     "totals": {"units_done", "units_failed", "items_reported", "items_ok", "items_broken"},
     "recent": [{"url", "result", "status", "at"}, ...],     the last URLs checked, oldest first
     "bundles": [{"name", "version", "peers", "uploaded", "capabilities": [str]}, ...],
                                                            versions it holds and seeds, and what each may do
     "dht": {"neighbours": ["host:port", ...]} | null,       null when it does not use the DHT
     "sandbox": str, "sandboxed": bool}                     whether workloads run confined (peer.trust)

`result` is what the link-check workload says of a URL: ok, broken, timeout, error or excluded;
`status` its HTTP status, null when there was no answer. Keys may be added in later versions;
readers ignore the ones they do not know.

The other way round, one sign goes from the screensaver to the peer: while it shows (full
screen, or as a screensaver hack) it touches `screensaver_mark()` in the user's runtime dir
every second and removes it when it ends; `--only-when-idle` counts the person as away while
the mark is fresh (peer.idle). Only the same user can write there, and no web page can.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from overlay.units import format_rate, format_size
from peer.budget import Budget
from peer.states import State as State  # the peer's states live in peer.states
from peer.states import state_of as state_of

DEFAULT_STATUS_PORT = 8701
STATUS_HOST = "127.0.0.1"  # never another address: the status is the volunteer's own business


def screensaver_mark() -> Path:
    """The file the screensaver touches every second while it shows ($XDG_RUNTIME_DIR/osaas)."""
    return platformdirs.user_runtime_path("osaas") / "screensaver-showing"


@dataclass(frozen=True, slots=True)
class UnitView:
    unit_id: int
    job_id: int
    host: str | None  # the website the unit checks (scheme://host:port)
    items: int
    started_at: float
    done: int | None = None  # items done so far, where its workload says (process API version 2)


@dataclass(frozen=True, slots=True)
class Usage:
    used: int  # bytes down + up in the cap's current period
    period_ends: float
    down_rate: float  # over the last second
    up_rate: float


@dataclass(frozen=True, slots=True)
class Totals:
    units_done: int = 0  # reported with a result (exit 0 or 1)
    units_failed: int = 0
    items_reported: int = 0
    items_ok: int = 0
    items_broken: int = 0


@dataclass(frozen=True, slots=True)
class Checked:
    """One URL the peer checked, as its workload reported it."""

    url: str
    result: str
    status: int | None
    at: float


RECENT_KEPT = 50  # URLs (or items) the status shows
MAX_SHOWN = 300  # characters of an item's name or result shown


@dataclass(frozen=True, slots=True)
class BundleView:
    """A bundle version the peer holds and seeds, and its swarm as the peer sees it."""

    name: str
    version: str
    peers: int  # connected in its swarm now
    uploaded: int  # bytes seeded to others since the peer started
    capabilities: tuple[str, ...] = ()  # what it may do besides computing (its manifest's list)


def checked_items(payload: Any, at: float) -> list[Checked]:
    """The well-formed items of a result payload (the coordinator judges the rest), named by
    their `url` or, in jobs of items and records, their `item` (clipped): a link check's with
    its result, another workload's as "done"."""
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return []
    checked = []
    for item in items:
        if not isinstance(item, dict):
            continue
        name = item.get("url", item.get("item"))
        if not isinstance(name, str):
            continue
        result = item.get("result")
        checked.append(
            Checked(
                name if len(name) <= MAX_SHOWN else name[: MAX_SHOWN - 1] + "…",
                result if isinstance(result, str) and len(result) <= MAX_SHOWN else "done",
                item.get("status") if type(item.get("status")) is int else None,
                at,
            )
        )
    return checked


@dataclass(frozen=True, slots=True)
class PeerStatus:
    peer_id: str
    name: str
    state: State
    paused: str | None
    resume_at: float | None
    coordinator: str | None
    units: tuple[UnitView, ...]
    budget: Budget
    usage: Usage
    totals: Totals
    recent: tuple[Checked, ...] = ()
    bundles: tuple[BundleView, ...] = ()
    dht_neighbours: tuple[str, ...] | None = None  # host:port; None: the peer does not use the DHT
    sandbox: str = ""  # one line: whether workloads run confined, and if not whose run (peer.trust)
    sandboxed: bool = False


def to_json(status: PeerStatus) -> dict[str, Any]:
    document = dataclasses.asdict(status)
    document["units"] = [dataclasses.asdict(unit) for unit in status.units]
    document["recent"] = [dataclasses.asdict(item) for item in status.recent]
    document["bundles"] = [dataclasses.asdict(bundle) for bundle in status.bundles]
    del document["dht_neighbours"]
    document["dht"] = None if status.dht_neighbours is None else {"neighbours": list(status.dht_neighbours)}
    budget = status.budget
    document["budget"] = {
        "max_down": budget.max_down,
        "max_up": budget.max_up,
        "cap": budget.cap_bytes,
        "cap_period": budget.cap_period,
        "max_fetches": budget.max_fetches,
        "active_hours": budget.active_hours.to_strings(),
    }
    return document


def status_text(document: Mapping[str, Any]) -> str:
    """The status document (as served) in a few lines for a person. Tolerates missing keys:
    it may come from a newer or older peer."""
    name = document.get("name") or "peer"
    state = document.get("state", "unknown")
    where = document.get("coordinator")
    if state == "paused":
        lines = [f"{name}: paused: {document.get('paused') or 'no reason given'}"]
    elif state == "looking":
        lines = [f"{name}: looking for a coordinator"]
    else:
        lines = [f"{name}: {state}, for {where}"]
    units = document.get("units") or []
    for unit in units:
        lines.append(f"  unit {unit.get('unit_id')}: {unit.get('items')} URLs on {unit.get('host') or 'several hosts'}")
    usage, budget = document.get("usage") or {}, document.get("budget") or {}
    used = format_size(int(usage.get("used") or 0))
    cap = budget.get("cap")
    of_cap = f" of {format_size(int(cap))} this {budget.get('cap_period', 'day')}" if cap else " this period"
    rates = f"{format_rate(usage.get('down_rate') or 0)} down, {format_rate(usage.get('up_rate') or 0)} up"
    limits = ", ".join(
        f"{label} {format_rate(budget[key])}"
        for key, label in (("max_down", "down"), ("max_up", "up"))
        if budget.get(key)
    )
    lines.append(f"  used {used}{of_cap}; now {rates}" + (f" (limits: {limits})" if limits else ""))
    totals = document.get("totals") or {}
    lines.append(
        f"  done: {totals.get('units_done', 0)} units, {totals.get('items_reported', 0)} URLs"
        f" ({totals.get('items_ok', 0)} ok, {totals.get('items_broken', 0)} broken);"
        f" {totals.get('units_failed', 0)} failed"
    )
    return "\n".join(lines)
