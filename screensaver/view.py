"""What the screensaver shows, worked out from the peer's status document (peer.status).

A pure function of the document and nothing else: `scene_of` turns what the peer serves on
127.0.0.1 into a `Scene` the drawing code paints as it is. The document comes over HTTP, so
every value is checked for its type; anything odd shows as unknown rather than stopping the
screensaver. No document at all (no peer answering) is a scene of its own that says how to
start one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from overlay.units import format_rate, format_size

START_COMMAND = "osaas peer run --coordinator URL --data-dir DIR"
RECENT_SHOWN = 30  # URLs in the scrolling list
MAX_NEIGHBOURS = 64  # DHT contacts drawn (a routing table holds a few hundred at most)
MAX_SWARMS = 6

Tone = Literal["good", "bad", "warn", "quiet"]
_TONES: dict[str, Tone] = {"ok": "good", "broken": "bad", "timeout": "warn", "error": "warn", "excluded": "quiet"}


@dataclass(frozen=True, slots=True)
class Gauge:
    """Bandwidth used against what the volunteer allows."""

    label: str
    value: float
    limit: float | None  # None: no limit set
    text: str

    @property
    def fraction(self) -> float | None:
        """How full, 0..1; None without a limit."""
        if not self.limit:
            return None
        return max(0.0, min(1.0, self.value / self.limit))


@dataclass(frozen=True, slots=True)
class CheckedLine:
    url: str
    label: str  # "200", "404", "timeout", ...
    tone: Tone


@dataclass(frozen=True, slots=True)
class Swarm:
    """A bundle version the peer seeds, and how many peers it is connected to for it."""

    label: str  # "linkcheck 0.1.0"
    peers: int


@dataclass(frozen=True, slots=True)
class Scene:
    running: bool  # a peer answered
    name: str
    state: str  # looking, idle, working, paused; "not running" without a peer
    headline: str  # one line: what the peer does now
    detail: str | None  # why it is paused, or how to start a peer
    coordinator: str | None
    hosts: tuple[str, ...]  # websites of the units running now
    checked: tuple[CheckedLine, ...]  # recent URLs, newest first
    ok: int
    broken: int
    units_done: int
    units_failed: int
    gauges: tuple[Gauge, ...]
    neighbours: tuple[str, ...] | None = None  # DHT contacts (host:port); None: no DHT
    swarms: tuple[Swarm, ...] = ()


def not_running(status_url: str) -> Scene:
    return Scene(
        running=False,
        name="osaas",
        state="not running",
        headline="peer not running",
        detail=f"no peer answers at {status_url}; start one with: {START_COMMAND}",
        coordinator=None,
        hosts=(),
        checked=(),
        ok=0,
        broken=0,
        units_done=0,
        units_failed=0,
        gauges=(),
    )


def scene_of(document: Mapping[str, Any] | None, status_url: str) -> Scene:
    """The scene for a status document; `None` when no peer answered at `status_url`."""
    if not isinstance(document, Mapping):
        return not_running(status_url)
    name = _text(document.get("name")) or "peer"
    state = _text(document.get("state")) or "unknown"
    coordinator = _text(document.get("coordinator"))
    units = [u for u in _list(document.get("units")) if isinstance(u, Mapping)]
    totals = _map(document.get("totals"))
    if state == "paused":
        headline, detail = "paused", _text(document.get("paused")) or "no reason given"
    elif state == "looking":
        headline, detail = "looking for a coordinator", None
    elif state == "working":
        headline, detail = f"checking {_count(len(units), 'unit')} for {coordinator or 'a coordinator'}", None
    else:
        headline, detail = f"{state}, for {coordinator or 'no coordinator'}", None
    hosts = tuple(dict.fromkeys(_text(u.get("host")) or "several hosts" for u in units))
    return Scene(
        running=True,
        name=name,
        state=state,
        headline=headline,
        detail=detail,
        coordinator=coordinator,
        hosts=hosts,
        checked=_checked(document.get("recent")),
        ok=_whole(totals.get("items_ok")),
        broken=_whole(totals.get("items_broken")),
        units_done=_whole(totals.get("units_done")),
        units_failed=_whole(totals.get("units_failed")),
        gauges=_gauges(_map(document.get("usage")), _map(document.get("budget"))),
        neighbours=_neighbours(document.get("dht")),
        swarms=tuple(
            Swarm(f"{_text(b.get('name')) or '?'} {_text(b.get('version')) or ''}".strip(), _whole(b.get("peers")))
            for b in _list(document.get("bundles"))[:MAX_SWARMS]
            if isinstance(b, Mapping)
        ),
    )


def _neighbours(dht: Any) -> tuple[str, ...] | None:
    if not isinstance(dht, Mapping):
        return None
    return tuple(n for n in _list(dht.get("neighbours")) if isinstance(n, str))[:MAX_NEIGHBOURS]


def _checked(recent: Any) -> tuple[CheckedLine, ...]:
    lines = []
    for item in reversed(_list(recent)):
        if not isinstance(item, Mapping) or not _text(item.get("url")):
            continue
        result = _text(item.get("result")) or "unknown"
        status = item.get("status")
        label = str(status) if type(status) is int else result
        lines.append(CheckedLine(str(item["url"]), label, _TONES.get(result, "quiet")))
        if len(lines) == RECENT_SHOWN:
            break
    return tuple(lines)


def _gauges(usage: Mapping[str, Any], budget: Mapping[str, Any]) -> tuple[Gauge, ...]:
    down, up, used = _number(usage.get("down_rate")), _number(usage.get("up_rate")), _number(usage.get("used"))
    max_down, max_up, cap = _limit(budget.get("max_down")), _limit(budget.get("max_up")), _limit(budget.get("cap"))
    period = _text(budget.get("cap_period")) or "period"
    return (
        Gauge("download", down, max_down, _of(format_rate(down), format_rate(max_down) if max_down else None)),
        Gauge("upload", up, max_up, _of(format_rate(up), format_rate(max_up) if max_up else None)),
        Gauge(f"used this {period}", used, cap, _of(format_size(int(used)), format_size(int(cap)) if cap else None)),
    )


def _of(value: str, limit: str | None) -> str:
    return f"{value} of {limit}" if limit else f"{value} (no limit)"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        return 0.0
    return float(min(value, 1e18))


def _whole(value: Any) -> int:
    return int(_number(value))


def _limit(value: Any) -> float | None:
    number = _number(value)
    return number if number > 0 else None
