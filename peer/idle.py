"""Is the person at this machine away? For `osaas peer run --only-when-idle`.

The X server counts the time since the last key press or pointer move; its screensaver
extension (XScreenSaverQueryInfo, in libXss) tells it, and says whether the server's own
screensaver is on. `XIdleClock` reads that through ctypes, so nothing needs compiling; the
rule on what it reads is the pure `away_reason`. A machine with no X display cannot tell,
and `XIdleClock` says so when it is made, before the peer starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

DEFAULT_IDLE_AFTER = 300.0  # seconds without input before the peer works
_SCREEN_SAVER_ON = 1  # XScreenSaverInfo.state


class IdleError(Exception):
    """Idle time cannot be read here: one line for the user."""


def active_reason(idle_seconds: float, saver_on: bool, idle_after: float) -> str | None:
    """Why the peer must not work now (the person is using the machine), or None."""
    if saver_on or idle_seconds >= idle_after:
        return None
    return f"the computer is in use (working only after {_duration(idle_after)} without input)"


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
            raise IdleError("--only-when-idle needs an X display to tell when the computer is idle (DISPLAY is not set)")
        x11, xss = _library("X11", "libx11-6"), _library("Xss", "libxss1")
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XDefaultRootWindow.restype = ctypes.c_ulong
        x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        xss.XScreenSaverQueryExtension.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)
        ]
        xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_Info)
        xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(_Info)]
        self._display = x11.XOpenDisplay(name.encode())
        if not self._display:
            raise IdleError(f"--only-when-idle: cannot open the X display {name!r}")
        event, error = ctypes.c_int(), ctypes.c_int()
        if not xss.XScreenSaverQueryExtension(self._display, ctypes.byref(event), ctypes.byref(error)):
            raise IdleError(f"--only-when-idle: the X display {name!r} has no screensaver extension to ask")
        self._root = x11.XDefaultRootWindow(self._display)
        self._info = xss.XScreenSaverAllocInfo()
        self._xss = xss

    def read(self) -> tuple[float, bool]:
        """(seconds since the last input, whether the server's screensaver is on)."""
        if not self._xss.XScreenSaverQueryInfo(self._display, self._root, self._info):
            return 0.0, False  # cannot tell: count the person as present
        info = self._info.contents
        return info.idle / 1000.0, info.state == _SCREEN_SAVER_ON


def _library(name: str, package: str) -> ctypes.CDLL:
    found = ctypes.util.find_library(name)
    if found is None:
        raise IdleError(f"--only-when-idle needs lib{name} (Debian package {package})")
    return ctypes.CDLL(found)


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"
