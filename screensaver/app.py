"""The screensaver program: reads the local peer's status and paints it, live.

Where it draws:
- a window (default), or the whole screen (`fullscreen`);
- a window someone else made: XScreenSaver starts its hacks with `-window-id ID` or `-root`
  and the window in `$XSCREENSAVER_WINDOW`; SDL draws into it through `SDL_WINDOWID`.

A thread asks the peer for its status once a second (127.0.0.1 only: the status is the
volunteer's business); the drawing loop never waits on the network. `frames` and `snapshot`
end the program after so many frames and save the last one as a PNG (tests, previews).

Full screen or in a given window it is a screensaver: nobody is at the computer. It says so to
a peer run with `--only-when-idle` by keeping `peer.status.screensaver_mark()` fresh (touched
every second, removed at the end, SIGTERM included, which is how XScreenSaver ends a hack). A
window of its own says nothing: someone may be watching it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlay.errors import OsaasError

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import pygame

from peer.status import STATUS_HOST, screensaver_mark
from screensaver.draw import Painter
from screensaver.view import scene_of

FPS = 30
POLL_SECONDS = 1.0
MAX_STATUS_BYTES = 1 << 20  # a status document is a few kB; more is not a peer's
DEFAULT_SIZE = (1280, 720)


class ScreensaverError(OsaasError):
    """The screensaver cannot start: one line for the user."""


@dataclass(frozen=True, slots=True)
class Options:
    status_port: int
    fullscreen: bool = False
    window_id: int | None = None  # draw into this X window
    size: tuple[int, int] = DEFAULT_SIZE
    frames: int | None = None  # stop after this many frames
    snapshot: Path | None = None  # save the last frame here


def status_url(port: int) -> str:
    return f"http://{STATUS_HOST}:{port}/status"


def fetch_status(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """The peer's status document, or None when no peer answers with one."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(MAX_STATUS_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if len(body) > MAX_STATUS_BYTES:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


class ShowingMark:
    """The sign to the peer that the screensaver shows: a file touched now and then."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._touched = -float("inf")

    def touch(self, every: float = POLL_SECONDS) -> None:
        now = time.monotonic()
        if now - self._touched < every:
            return
        self._touched = now
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path.touch()
        except OSError:
            pass  # no runtime dir to write to: the peer goes by X idle time alone

    def remove(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass


class StatusPoller:
    """The latest status document, refreshed by a daemon thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._latest = fetch_status(url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="status-poller", daemon=True)
        self._thread.start()

    @property
    def latest(self) -> dict[str, Any] | None:
        return self._latest

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._latest = fetch_status(self.url)


def window_from_environment(root: bool, window_id: str | None) -> int | None:
    """The X window to draw into, as XScreenSaver hands it over, or None for our own window."""
    given = window_id or os.environ.get("XSCREENSAVER_WINDOW")
    if given:
        try:
            return int(given, 0)
        except ValueError:
            raise ScreensaverError(f"window id {given!r} is not a number (decimal or 0x hex)") from None
    if root:
        return _root_window()
    return None


def _root_window() -> int:
    import ctypes
    import ctypes.util

    library = ctypes.util.find_library("X11")
    if library is None:
        raise ScreensaverError("-root needs libX11, which this machine does not have")
    x11 = ctypes.CDLL(library)
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    display = x11.XOpenDisplay(None)
    if not display:
        raise ScreensaverError("-root: cannot open the X display (is DISPLAY set?)")
    return int(x11.XDefaultRootWindow(display))


def run(options: Options) -> None:
    """Show the peer's status until the window closes (or `frames` have been drawn)."""
    if options.window_id is not None:
        os.environ["SDL_WINDOWID"] = str(options.window_id)
    try:
        pygame.display.init()
    except pygame.error as exc:
        raise ScreensaverError(f"no display to draw on ({exc}); is DISPLAY set?") from exc
    # Ended by a signal, it still removes its mark and closes the display (SystemExit unwinds).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    showing = ShowingMark(screensaver_mark()) if options.fullscreen or options.window_id is not None else None
    try:
        screen = _open_screen(options)
        painter = Painter(screen.get_size())
        poller = StatusPoller(status_url(options.status_port))
        clock = pygame.time.Clock()
        started = time.monotonic()
        drawn = 0
        try:
            while options.frames is None or drawn < options.frames:
                if _asked_to_quit(options):
                    break
                if showing is not None:
                    showing.touch()
                if screen.get_size() != painter.size:
                    painter = Painter(screen.get_size())
                painter.draw(screen, scene_of(poller.latest, poller.url), time.monotonic() - started)
                pygame.display.flip()
                drawn += 1
                clock.tick(FPS)
            if options.snapshot is not None:
                pygame.image.save(screen, str(options.snapshot))
        finally:
            poller.stop()
    finally:
        if showing is not None:
            showing.remove()
        pygame.display.quit()


def _open_screen(options: Options) -> pygame.Surface:
    try:
        if options.window_id is not None:
            return pygame.display.set_mode((0, 0))
        if options.fullscreen:
            pygame.mouse.set_visible(False)
            return pygame.display.set_mode((0, 0), pygame.FULLSCREEN)
        pygame.display.set_caption("osaas peer")
        return pygame.display.set_mode(options.size, pygame.RESIZABLE)
    except pygame.error as exc:
        raise ScreensaverError(f"cannot open the screen: {exc}") from exc


def _asked_to_quit(options: Options) -> bool:
    for event in pygame.event.get():
        if event.type == pygame.QUIT:
            return True
        if event.type == pygame.KEYDOWN and event.key in (pygame.K_ESCAPE, pygame.K_q):
            return True
        # Full screen, it behaves as a screensaver: any key or click ends it.
        if options.fullscreen and event.type in (pygame.KEYDOWN, pygame.MOUSEBUTTONDOWN):
            return True
    return False
