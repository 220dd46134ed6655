"""The volunteer's budget: how much bandwidth, how much data per period, and when.

A volunteer states their budget in human units, in a TOML file (`default_config_path()`), on
the command line, or later on the peer's local web page. This module turns those strings into
a validated, frozen `Budget` and back; it never reads the clock (times are arguments) and does
no I/O except reading and writing the file. The token buckets that enforce the rates live in
peer.rate_limit, the per-period usage count in peer.usage.

Units: sizes are bytes, with decimal SI prefixes (kB = KB = 1000, MB, GB, TB, PB, EB) or binary
ones (KiB = 1024, MiB, GiB, ...); prefix letters are case-insensitive. Rates are sizes per
second ("1MB/s", "200kB" also means per second) or bits per second spelled with "bit"
("8Mbit/s"). A lone lowercase "b" in a rate is refused rather than guessed: "200kb/s" means
kilobits to a network engineer and kilobytes to most people, and a wrong guess is off by 8.
In a size, where bits never apply, "2gb" is 2 GB. Caps are a size per period: "2GB/day",
"10GB/week", "50GB/month".

Active hours are the volunteer's local wall-clock times ("08:00-18:00", "22:00-06:30" wraps
past midnight); none means always active.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import platformdirs

from overlay import wire
from overlay.errors import OsaasError
from overlay.files import atomic_file

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = get_args(Period)
# A month counts as its longest, so a rate derived from a monthly cap never outspends the cap.
PERIOD_SECONDS: dict[Period, int] = {"day": 86_400, "week": 7 * 86_400, "month": 31 * 86_400}

# The weight a peer with no rate and no cap reports: a typical home downlink's spare share.
DEFAULT_SUSTAINABLE_RATE = wire.DEFAULT_CAPACITY  # bytes/s, what coordinators assume too
MAX_RATE = 10**15  # 1 PB/s: anything above is a typo, not a budget
MAX_SIZE = 10**18  # 1 EB
MAX_FETCHES = 1000

_T = TypeVar("_T")
_MINUTES_PER_DAY = 24 * 60
_SI_PREFIXES = "kmgtpe"
_NUMBER = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)")
_PER_SECOND = re.compile(r"\s*/\s*s(?:ec)?\s*$", re.IGNORECASE)
_WINDOW = re.compile(r"([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})")

_SIZE_EXAMPLE = "a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"
_RATE_EXAMPLE = "a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s"
_CAP_EXAMPLE = "a cap like 2GB/day, 10GB/week or 50GB/month"
_HOURS_EXAMPLE = "active hours like 08:00-18:00 or 22:00-06:30"


class BudgetError(OsaasError, ValueError):
    """A budget setting a person gave is wrong; the message is one line saying what and how."""


# --- sizes and rates -------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Bytes from "2GB", "500MB", "1.5GiB", "200kB" or "100000"; zero is a size too."""
    _require_text(text, _SIZE_EXAMPLE)
    value = _parse_quantity(text, _SIZE_EXAMPLE, bits_allowed=False)
    return _bounded(text, value, MAX_SIZE, "1 EB", _SIZE_EXAMPLE, zero_ok=True)


def parse_rate(text: str) -> int:
    """Bytes per second from "1MB/s", "200KB/s", "1.5MiB/s", "8Mbit/s" or "200kB"."""
    _require_text(text, _RATE_EXAMPLE)
    quantity = _PER_SECOND.sub("", text, count=1)
    value = _parse_quantity(quantity, _RATE_EXAMPLE, bits_allowed=True, original=text)
    return _bounded(text, value, MAX_RATE, "1 PB/s", _RATE_EXAMPLE, zero_ok=False)


def parse_cap(text: str) -> tuple[int, Period]:
    """Bytes and period from "2GB/day", "10GB/week" or "50GB/month"."""
    _require_text(text, _CAP_EXAMPLE)
    size, slash, name = text.rpartition("/")
    periods = [period for period in PERIODS if period == name.strip().lower()]
    if not slash or not periods:
        raise BudgetError(f"{text!r} is not {_CAP_EXAMPLE}")
    cap = parse_size(size)
    if cap == 0:
        raise BudgetError(f"{text!r} is a cap of nothing; give {_CAP_EXAMPLE} (to stop, pause the peer)")
    return cap, periods[0]


def _parse_quantity(text: str, example: str, *, bits_allowed: bool, original: str | None = None) -> Decimal:
    shown = text if original is None else original
    stripped = text.strip()
    if stripped.startswith("-"):
        raise BudgetError(f"{shown!r} is negative; give {example}")
    match = _NUMBER.fullmatch(stripped)
    if match is None:
        raise BudgetError(f"{shown!r} is not {example}")
    number, unit = match.groups()
    factor = _unit_factor(number, unit, shown, example, bits_allowed=bits_allowed)
    with localcontext() as context:
        context.prec = 60  # exact for every value that passes the bounds check
        return Decimal(number) * factor


def _require_text(text: object, example: str) -> None:
    if not isinstance(text, str):
        raise BudgetError(f"{text!r} is not {example}")


def _unit_factor(number: str, unit: str, shown: str, example: str, *, bits_allowed: bool) -> Decimal:
    """Bytes per unit: "MB" is 10**6, "KiB" 1024, "Mbit" 125000."""
    lowered = unit.lower()
    if lowered.endswith("bit") or lowered.endswith("bits"):
        if not bits_allowed:
            raise BudgetError(f"{shown!r} is in bits; give {example}")
        prefix, per_byte = lowered.removesuffix("s").removesuffix("bit"), Decimal(1) / 8
    elif unit.endswith("B") or (unit.endswith("b") and not bits_allowed):
        prefix, per_byte = lowered[:-1], Decimal(1)
    elif unit.endswith("b"):
        prefix = unit[:-1]
        bytes_text, bits_text = f"{number}{prefix}B/s", f"{number}{prefix}bit/s"
        raise BudgetError(f"{shown!r} is ambiguous: write {bytes_text} for bytes or {bits_text} for bits")
    elif unit == "":
        prefix, per_byte = "", Decimal(1)
    else:
        raise BudgetError(f"{shown!r} has no unit B or bit; give {example}")
    binary = prefix.endswith("i")
    letter = prefix.removesuffix("i")
    if letter == "":
        if binary:
            raise BudgetError(f"{shown!r} is not {example}")
        return per_byte
    if len(letter) != 1 or letter not in _SI_PREFIXES:
        raise BudgetError(f"{shown!r} is not {example}")
    power = _SI_PREFIXES.index(letter) + 1
    return per_byte * (1024**power if binary else 1000**power)


def _bounded(text: str, value: Decimal, limit: int, limit_text: str, example: str, *, zero_ok: bool) -> int:
    if value > limit:
        raise BudgetError(f"{text!r} is more than {limit_text}; give {example}")
    whole = int(value.to_integral_value(rounding=ROUND_HALF_UP))
    if whole == 0 and not zero_ok:
        raise BudgetError(f"{text!r} is less than 1 B/s; give {example} (to stop, pause the peer)")
    return whole


def _exact_size(n: int) -> str:
    """The shortest exact text for `n` bytes, for files: "2GB", "1.5GiB", "1234567B".
    Unlike `format_size` nothing is rounded: parsing it gives `n` back."""
    candidates = [(len(str(n)), f"{n}B")]
    for base, unit_letters, suffix in ((1000, "kMGTPE", "B"), (1024, "KMGTPE", "iB")):
        for power, letter in enumerate(unit_letters, start=1):
            unit = base**power
            if n < unit:
                break
            with localcontext() as context:
                context.prec = 100  # n / 1024**6 has at most 60 decimals: the division is exact
                number = format((Decimal(n) / unit).normalize(), "f")
            candidates.append((len(number.replace(".", "")), f"{number}{letter}{suffix}"))
    return min(candidates, key=lambda candidate: candidate[0])[1]


# --- active hours ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """One daily stretch of active time in minutes after local midnight; `end` may be
    smaller than `start` (the stretch wraps past midnight) and 1440 means midnight at the end."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < _MINUTES_PER_DAY or not 0 <= self.end <= _MINUTES_PER_DAY:
            raise BudgetError(f"active hours {self.start}-{self.end} are not minutes within a day")
        if self.start == self.end:
            raise BudgetError(f"active hours {self} are empty; for all day give no active hours (or 00:00-24:00)")

    @classmethod
    def parse(cls, text: str) -> Window:
        """A window from "08:00-18:00" or "22:00-06:30"; "24:00" may end a window."""
        match = _WINDOW.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise BudgetError(f"{text!r} is not {_HOURS_EXAMPLE}")
        start_h, start_m, end_h, end_m = (int(group) for group in match.groups())
        if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m != 0):
            raise BudgetError(f"{text!r} has a time that is not on a 24-hour clock; give {_HOURS_EXAMPLE}")
        return cls(start_h * 60 + start_m, end_h * 60 + end_m)

    def covers(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def __str__(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


@dataclass(frozen=True, slots=True)
class ActiveHours:
    """When the peer may work, in the volunteer's local time; no windows means always."""

    windows: tuple[Window, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> ActiveHours:
        """Active hours from strings like "08:00-18:00"; a string may hold several, separated
        by commas, and "always" alone means no restriction."""
        if isinstance(items, str):  # one string is one item, not a sequence of characters
            items = [items]
        texts = [part for item in items for part in _split_windows(item)]
        if [text.strip().lower() for text in texts] == ["always"]:
            return cls()
        return cls(tuple(Window.parse(text) for text in texts))

    @property
    def always(self) -> bool:
        return not self.windows

    def contains(self, when: datetime) -> bool:
        """Whether the peer may work at local time `when`."""
        return self._active_at(when.hour * 60 + when.minute)

    def next_change(self, when: datetime) -> datetime | None:
        """When the peer next switches on or off after `when` (same tzinfo, wall-clock
        arithmetic, so across a DST change the switch still happens at the stated clock
        time); None when it never switches (always active, or windows covering every minute)."""
        if self.always:
            return None
        now_active = self.contains(when)
        minute = when.hour * 60 + when.minute
        boundaries = {w.start for w in self.windows} | {w.end % _MINUTES_PER_DAY for w in self.windows}
        # The state can only change at a boundary; the first boundary with the other state is it.
        for ahead in sorted((b - minute) % _MINUTES_PER_DAY or _MINUTES_PER_DAY for b in boundaries):
            if self._active_at((minute + ahead) % _MINUTES_PER_DAY) != now_active:
                return when.replace(second=0, microsecond=0) + timedelta(minutes=ahead)
        return None

    def to_strings(self) -> list[str]:
        return [str(window) for window in self.windows]

    def _active_at(self, minute: int) -> bool:
        return self.always or any(window.covers(minute) for window in self.windows)


def _split_windows(item: str) -> list[str]:
    if not isinstance(item, str):
        raise BudgetError(f"{item!r} is not {_HOURS_EXAMPLE}")
    return [part for part in item.split(",") if part.strip()] or [item]


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


# --- the budget ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    """What the volunteer lends. None means no limit on that axis."""

    max_down: int | None = None  # bytes/s
    max_up: int | None = None  # bytes/s
    cap_bytes: int | None = None  # bytes down + up per cap_period
    cap_period: Period = "day"
    max_fetches: int | None = None  # concurrent fetches
    active_hours: ActiveHours = field(default_factory=ActiveHours)

    def __post_init__(self) -> None:
        _check_int("max_down", self.max_down, 1, MAX_RATE)
        _check_int("max_up", self.max_up, 1, MAX_RATE)
        _check_int("cap_bytes", self.cap_bytes, 1, MAX_SIZE)
        _check_int("max_fetches", self.max_fetches, 1, MAX_FETCHES)
        if self.cap_period not in PERIODS:
            raise BudgetError(f"cap period {self.cap_period!r} is not one of {', '.join(PERIODS)}")
        if not isinstance(self.active_hours, ActiveHours):
            raise BudgetError(f"active_hours must be ActiveHours, not {type(self.active_hours).__name__}")

    @property
    def sustainable_rate(self) -> float:
        """Bytes/s this peer can keep up, the weight coordinators balance load by: the lower
        of max_down and the cap spread evenly over its period. With neither set it is
        DEFAULT_SUSTAINABLE_RATE, because a weight must be a finite number."""
        limits = [float(self.max_down)] if self.max_down is not None else []
        if self.cap_bytes is not None:
            limits.append(self.cap_bytes / PERIOD_SECONDS[self.cap_period])
        return min(limits, default=float(DEFAULT_SUSTAINABLE_RATE))


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BudgetError(f"{name} must be a whole number from {low} to {high}, not {value!r}")


# --- the config file -------------------------------------------------------------------


def default_config_path() -> Path:
    """Where the volunteer's budget file lives on this system."""
    return Path(platformdirs.user_config_dir("osaas")) / "peer.toml"


def load_budget(path: Path) -> Budget:
    """The budget in the TOML file at `path`; a missing file is an empty budget."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Budget()
    except OSError as exc:
        raise BudgetError(f"{path}: cannot read the budget file: {exc.strerror or exc}") from exc
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BudgetError(f'{path}: not UTF-8 text; write it as TOML, e.g. cap = "2GB/day"') from exc
    except tomllib.TOMLDecodeError as exc:
        raise BudgetError(f"{path}: not valid TOML: {_one_line(str(exc))}") from exc
    settings: dict[str, Any] = {}
    for key, value in table.items():
        field_parser = _FILE_KEYS.get(key)
        if field_parser is None:
            raise BudgetError(f"{path}: unknown key {key!r}; known keys are {', '.join(_FILE_KEYS)}")
        try:
            settings.update(field_parser(value))
        except BudgetError as exc:
            raise BudgetError(f"{path}: {key}: {exc}") from exc
    return Budget(**settings)


def budget_texts(budget: Budget) -> dict[str, str]:
    """`budget` as the texts a person would type for it, exact ("" for no limit): what the
    volunteer's page fills its form with, so that saving it unchanged changes nothing."""
    return {
        "max_down": "" if budget.max_down is None else f"{_exact_size(budget.max_down)}/s",
        "max_up": "" if budget.max_up is None else f"{_exact_size(budget.max_up)}/s",
        "cap": "" if budget.cap_bytes is None else f"{_exact_size(budget.cap_bytes)}/{budget.cap_period}",
        "max_fetches": "" if budget.max_fetches is None else str(budget.max_fetches),
        "active_hours": ", ".join(budget.active_hours.to_strings()) if not budget.active_hours.always else "",
    }


def save_budget(path: Path, budget: Budget) -> None:
    """Write `budget` to `path` atomically, in the keys and units `load_budget` reads, each
    value exact (the file is not a status line: it must give back the same budget)."""
    lines = ["# The osaas peer's budget; `osaas peer run` flags override it for one run."]
    if budget.max_down is not None:
        lines.append(f"max_down = {_toml_string(_exact_size(budget.max_down) + '/s')}")
    if budget.max_up is not None:
        lines.append(f"max_up = {_toml_string(_exact_size(budget.max_up) + '/s')}")
    if budget.cap_bytes is not None:
        lines.append(f"cap = {_toml_string(f'{_exact_size(budget.cap_bytes)}/{budget.cap_period}')}")
    if budget.max_fetches is not None:
        lines.append(f"max_fetches = {budget.max_fetches}")
    if not budget.active_hours.always:
        hours = ", ".join(_toml_string(text) for text in budget.active_hours.to_strings())
        lines.append(f"active_hours = [{hours}]")
    owners = _trusted_owners_kept(path)
    if owners:
        lines.append(f"trusted_owners = [{', '.join(_toml_string(key) for key in owners)}]")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(("\n".join(lines) + "\n").encode())


def _trusted_owners_kept(path: Path) -> list[str]:
    """The trusted owner keys in the file about to be replaced: the page changes the budget,
    never whom the volunteer trusts."""
    try:
        keys = tomllib.loads(path.read_text(encoding="utf-8")).get("trusted_owners", [])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    if not isinstance(keys, list):
        return []
    return [key for key in keys if isinstance(key, str) and re.fullmatch(r"[0-9a-fA-F]{64}", key)]


def budget_from(
    config_path: Path | None,
    *,
    max_down: str | None = None,
    max_up: str | None = None,
    daily_cap: str | None = None,
    cap: str | None = None,
    max_fetches: str | int | None = None,
    active_hours: Sequence[str] | None = None,
) -> Budget:
    """The budget for one run: the file at `config_path` (None: no file), overridden by the
    command-line flags that were given (raw strings; None when a flag was not given).
    `daily_cap="2GB"` means `cap="2GB/day"`; giving both is an error."""
    if daily_cap is not None and cap is not None:
        raise BudgetError("give --daily-cap or --cap, not both")
    budget = load_budget(config_path) if config_path is not None else Budget()
    flags: list[tuple[str, object, Callable[[Any], dict[str, Any]]]] = [
        ("--max-down", max_down, lambda text: {"max_down": parse_rate(text)}),
        ("--max-up", max_up, lambda text: {"max_up": parse_rate(text)}),
        ("--daily-cap", daily_cap, lambda text: _cap_fields(parse_cap(f"{text}/day"))),
        ("--cap", cap, lambda text: _cap_fields(parse_cap(text))),
        ("--max-fetches", max_fetches, lambda value: {"max_fetches": _fetches_value(value, from_text=True)}),
        ("--active-hours", active_hours, lambda items: {"active_hours": ActiveHours.parse(items)}),
    ]
    changes: dict[str, Any] = {}
    for flag, value, field_parser in flags:
        if value is None:
            continue
        try:
            changes.update(field_parser(value))
        except BudgetError as exc:
            raise BudgetError(f"{flag}: {exc}") from exc
    return replace(budget, **changes)


def _cap_fields(cap: tuple[int, Period]) -> dict[str, Any]:
    return {"cap_bytes": cap[0], "cap_period": cap[1]}


def _rate_value(value: object) -> int:
    if isinstance(value, str):
        return parse_rate(value)
    number = _typed(value, int, '"1MB/s" or a whole number of bytes per second')
    if not 1 <= number <= MAX_RATE:
        raise BudgetError(f"{number} bytes/s is not from 1 to {MAX_RATE}; give {_RATE_EXAMPLE}")
    return number


def _fetches_value(value: object, *, from_text: bool = False) -> int:
    if from_text and isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,6}\s*", value):
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_FETCHES:
        raise BudgetError(f"{value!r} is not a whole number of concurrent fetches from 1 to {MAX_FETCHES}")
    return value


def _hours_value(value: object) -> ActiveHours:
    items = _typed(value, list, 'an array of strings like ["08:00-18:00"]')
    for item in items:
        _typed(item, str, 'an array of strings like ["08:00-18:00"]')
    return ActiveHours.parse(items)


def _cap_value(value: object) -> tuple[int, Period]:
    return parse_cap(_typed(value, str, 'a string like "2GB/day"'))


# How each key of the file becomes Budget fields.
_FILE_KEYS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "max_down": lambda value: {"max_down": _rate_value(value)},
    "max_up": lambda value: {"max_up": _rate_value(value)},
    "cap": lambda value: _cap_fields(_cap_value(value)),
    "max_fetches": lambda value: {"max_fetches": _fetches_value(value)},
    "active_hours": lambda value: {"active_hours": _hours_value(value)},
    # Not the budget's: whose bundles run where no sandbox can be built (peer.trust reads it).
    "trusted_owners": lambda value: {},
}


def _typed(value: object, kind: type[_T], expected: str) -> _T:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BudgetError(f"must be {expected}, not {_toml_type(value)}")
    return value


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array", dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")


def _toml_string(text: str) -> str:
    # Everything written is made here from digits, unit letters, '/', ':' and '-'.
    assert re.fullmatch(r"[0-9A-Za-z./:\-]*", text), text
    return f'"{text}"'


def _one_line(text: str) -> str:
    return " ".join(text.split())
