"""Is the person at this machine away? For `osaas peer run --only-when-idle`.

Two signs, either one enough. The X server counts the time since the last key press or pointer
move; its screensaver extension (XScreenSaverQueryInfo, in libXss) tells it, and says whether
the server's own screensaver is on. `XIdleClock` reads that through ctypes, so nothing needs
compiling. And the osaas screensaver, while it shows, keeps a mark file fresh
(`peer.status.screensaver_mark`). A machine without X idle time (no display, no libXss) has
the second sign only: the peer then works while the screensaver shows. `AwaySense` reads both;
the rules on what it reads are the pure `active_reason` and `mark_fresh`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable
from pathlib import Path

from overlay.errors import OsaasError
from peer.status import screensaver_mark

DEFAULT_IDLE_AFTER = 300.0  # seconds without input before the peer works
MARK_FRESH = 3.0  # seconds a mark counts after its last touch (the screensaver touches it every second)
_SCREEN_SAVER_ON = 1  # XScreenSaverInfo.state


class IdleError(OsaasError):
    """Idle time cannot be read here: one line for the user."""


def active_reason(idle_seconds: float | None, saver_on: bool, showing: bool, idle_after: float) -> str | None:
    """Why the peer must not work now (the person may be using the machine), or None.
    `idle_seconds` None: this machine has no X idle time; `showing`: the osaas screensaver shows."""
    if showing or saver_on:
        return None
    if idle_seconds is None:
        return "the osaas screensaver is not showing (no X idle time here: working only while it shows)"
    if idle_seconds >= idle_after:
        return None
    return f"the computer is in use (working only after {_duration(idle_after)} without input)"


def mark_fresh(touched_at: float | None, now: float) -> bool:
    """Was the screensaver's mark touched within MARK_FRESH seconds of `now` (None: no mark)?"""
    return touched_at is not None and abs(now - touched_at) <= MARK_FRESH


class _Info(ctypes.Structure):
    _fields_ = [
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),  # milliseconds
        ("event_mask", ctypes.c_ulong),
    ]


class XIdleClock:
    """The X server's idle time, through its screensaver extension."""

    def __init__(self, display: str | None = None) -> None:
        name = display if display is not None else os.environ.get("DISPLAY")
        if not name:
            raise IdleError("no X display to read idle time from (DISPLAY is not set)")
        x11, xss = _library("X11", "libx11-6"), _library("Xss", "libxss1")
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XDefaultRootWindow.restype = ctypes.c_ulong
        x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        xss.XScreenSaverQueryExtension.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_int),
        ]
        xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_Info)
        xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(_Info)]
        self._display = x11.XOpenDisplay(name.encode())
        if not self._display:
            raise IdleError(f"cannot open the X display {name!r}")
        event, error = ctypes.c_int(), ctypes.c_int()
        if not xss.XScreenSaverQueryExtension(self._display, ctypes.byref(event), ctypes.byref(error)):
            raise IdleError(f"the X display {name!r} has no screensaver extension to ask")
        self._root = x11.XDefaultRootWindow(self._display)
        self._info = xss.XScreenSaverAllocInfo()
        self._xss = xss

    def read(self) -> tuple[float, bool]:
        """(seconds since the last input, whether the server's screensaver is on)."""
        if not self._xss.XScreenSaverQueryInfo(self._display, self._root, self._info):
            return 0.0, False  # cannot tell: count the person as present
        info = self._info.contents
        return info.idle / 1000.0, info.state == _SCREEN_SAVER_ON


class AwaySense:
    """Both signs of an absent person, read when asked. `without_x` says why there is no X
    idle time here (None when there is)."""

    def __init__(
        self,
        idle_after: float,
        mark: Path | None = None,
        display: str | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.idle_after = idle_after
        self._now = now  # Unix seconds, to tell the mark's age by
        self.mark = mark if mark is not None else screensaver_mark()
        self.without_x: str | None = None
        self._clock: XIdleClock | None = None
        try:
            self._clock = XIdleClock(display)
        except IdleError as exc:
            self.without_x = str(exc)

    def reason(self) -> str | None:
        """Why the peer must not work now, or None (active_reason)."""
        idle, saver_on = self._clock.read() if self._clock is not None else (None, False)
        try:
            touched_at: float | None = self.mark.stat().st_mtime
        except OSError:
            touched_at = None
        return active_reason(idle, saver_on, mark_fresh(touched_at, self._now()), self.idle_after)


def _library(name: str, package: str) -> ctypes.CDLL:
    found = ctypes.util.find_library(name)
    if found is None:
        raise IdleError(f"no lib{name} to read X idle time with (Debian package {package})")
    return ctypes.CDLL(found)


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"
