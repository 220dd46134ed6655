"""How much of the volunteer's cap this period has used, kept on disk across restarts.

Periods follow the volunteer's local calendar: a day starts at local midnight, a week on
Monday (ISO 8601 weeks), a month on its first day. `period_key` and `period_end` are pure; the
`UsageLedger` is the small stateful shell that counts bytes (down and up together, as the cap
counts them) and writes the count atomically (overlay.files.atomic_file) as msgpack.

Restarting inside the same period continues from the saved count; in a new period the count
starts from 0. A count saved under another period length (the volunteer changed "/day" to
"/week") is carried into the new period while its own period lasts: over-counting for a while
is the side a budget may err on, under-counting is not.

A file that cannot be decoded is moved aside to `<name>.corrupt` and counting starts from 0.
That can overspend one period's cap once, after disk trouble that atomic writes make rare;
assuming the cap already spent instead would idle a volunteer's machine silently for up to a
month over a file they never look at. The `.corrupt` file and one warning line leave a trace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack

from overlay.files import atomic_file
from peer.budget import PERIODS, Period

log = logging.getLogger(__name__)

# Unsaved usage is written by `add` itself once it reaches either bound, so a crash between
# the callers' periodic flushes loses little.
AUTO_FLUSH_BYTES = 1_000_000
AUTO_FLUSH_SECONDS = 5.0
_FORMAT_VERSION = 1


def period_key(when: datetime, period: Period) -> str:
    """The name of the period `when` falls in: "2024-05-03", "2024-W18" or "2024-05"."""
    if period == "day":
        return when.date().isoformat()
    if period == "week":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{when.year:04d}-{when.month:02d}"
    raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")


def period_end(when: datetime, period: Period) -> datetime:
    """Local midnight starting the period after the one `when` falls in (same tzinfo)."""
    midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight + timedelta(days=1)
    if period == "week":
        return midnight + timedelta(days=7 - when.weekday())
    if period == "month":
        if when.month == 12:
            return midnight.replace(year=when.year + 1, month=1, day=1)
        return midnight.replace(month=when.month + 1, day=1)
    raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")


@dataclass(frozen=True, slots=True)
class _Count:
    period: Period
    key: str
    used: int


class UsageLedger:
    """Bytes used in the current period, against an optional cap (`cap_bytes=None`: no cap)."""

    def __init__(self, path: Path, cap_bytes: int | None, period: Period) -> None:
        if period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
        self._path = path
        self._cap = cap_bytes
        self._period: Period = period
        self._count = _load(path)
        self._saved = self._count
        self._unsaved_bytes = 0
        self._last_flush: datetime | None = None
        self._flush_failing = False

    @property
    def cap_bytes(self) -> int | None:
        return self._cap

    @property
    def period(self) -> Period:
        return self._period

    def reconfigure(self, cap_bytes: int | None, period: Period) -> None:
        """Apply a budget changed at runtime; the count so far is kept (see the module doc)."""
        if period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
        self._cap = cap_bytes
        self._period = period

    def add(self, n: int, now: datetime) -> None:
        """Count `n` bytes moved at local time `now`."""
        if n < 0:
            raise ValueError(f"cannot add a negative number of bytes ({n})")
        current = self._current(now)
        self._count = _Count(current.period, current.key, current.used + n)
        self._unsaved_bytes += n
        if self._last_flush is None:
            self._last_flush = now
        due = now - self._last_flush >= timedelta(seconds=AUTO_FLUSH_SECONDS)
        if self._unsaved_bytes >= AUTO_FLUSH_BYTES or due:
            self._auto_flush(now)

    def used(self, now: datetime) -> int:
        """Bytes used in the period `now` falls in."""
        return self._current(now).used

    def remaining(self, now: datetime) -> int | None:
        """Bytes left before the cap, or None without a cap."""
        if self._cap is None:
            return None
        return max(0, self._cap - self.used(now))

    def exhausted(self, now: datetime) -> bool:
        """Whether the cap is used up until `period_end(now, period)`."""
        return self._cap is not None and self.used(now) >= self._cap

    def flush(self) -> None:
        """Write the count if it changed since the last write; OSError reaches the caller."""
        count = self._count
        if count is None or count == self._saved:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self._path) as f:
            f.write(_encode(count))
        self._saved = count
        self._unsaved_bytes = 0

    def _current(self, now: datetime) -> _Count:
        count = self._count
        if count is None or period_key(now, count.period) != count.key:
            return _Count(self._period, period_key(now, self._period), 0)
        if count.period != self._period:
            return _Count(self._period, period_key(now, self._period), count.used)
        return count

    def _auto_flush(self, now: datetime) -> None:
        self._last_flush = now
        try:
            self.flush()
        except OSError as exc:
            # Counting goes on in memory; one line until writing works again, not one per chunk.
            if not self._flush_failing:
                log.warning("cannot save bandwidth usage to %s: %s", self._path, exc.strerror or exc)
            self._flush_failing = True
        else:
            self._flush_failing = False


def _encode(count: _Count) -> bytes:
    record = {"version": _FORMAT_VERSION, "period": count.period, "key": count.key, "used": count.used}
    return msgpack.packb(record, use_bin_type=True)


def _load(path: Path) -> _Count | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read bandwidth usage from %s (%s); counting this period from 0", path, exc.strerror or exc)
        return None
    try:
        return _decode(data)
    except ValueError as exc:
        aside = path.with_name(path.name + ".corrupt")
        try:
            path.replace(aside)
        except OSError as move_exc:
            problem = move_exc.strerror or move_exc
            log.warning("unreadable bandwidth usage file %s (%s) could not be moved aside: %s", path, exc, problem)
        else:
            log.warning("unreadable bandwidth usage file moved to %s (%s); counting this period from 0", aside, exc)
        return None


def _decode(data: bytes) -> _Count:
    """The saved count; ValueError for anything that is not exactly what `_encode` writes."""
    try:
        record: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"not msgpack: {exc}") from exc
    if not isinstance(record, dict) or record.get("version") != _FORMAT_VERSION:
        raise ValueError("not a version 1 usage record")
    period, key, used = record.get("period"), record.get("key"), record.get("used")
    if period not in PERIODS or not isinstance(key, str):
        raise ValueError("period or key missing or of the wrong type")
    if not isinstance(used, int) or isinstance(used, bool) or used < 0:
        raise ValueError("used is not a non-negative integer")
    return _Count(period, key, used)
