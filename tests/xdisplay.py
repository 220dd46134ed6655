"""A virtual X display for tests (Xvfb, from Debian's xvfb, which `make test` installs), and
reading back what was drawn on its root window."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def xvfb(size: tuple[int, int] = (800, 600)) -> Iterator[str]:
    """An Xvfb server on a free display number; yields its DISPLAY (":N")."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (make test installs Debian's xvfb)")
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{size[0]}x{size[1]}x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        with os.fdopen(read) as announced:
            number = announced.readline().strip()
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


class _XImage(ctypes.Structure):
    _fields_ = [
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("xoffset", ctypes.c_int),
        ("format", ctypes.c_int),
        ("data", ctypes.POINTER(ctypes.c_ubyte)),
        ("byte_order", ctypes.c_int),
        ("bitmap_unit", ctypes.c_int),
        ("bitmap_bit_order", ctypes.c_int),
        ("bitmap_pad", ctypes.c_int),
        ("depth", ctypes.c_int),
        ("bytes_per_line", ctypes.c_int),
        ("bits_per_pixel", ctypes.c_int),
    ]


def root_window_rgb(display: str) -> tuple[tuple[int, int], bytes]:
    """(size, RGB bytes row by row) of what the root window of `display` shows now."""
    x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XDisplayWidth.argtypes = x11.XDisplayHeight.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XGetImage.restype = ctypes.POINTER(_XImage)
    x11.XGetImage.argtypes = [
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_ulong,
        ctypes.c_int,
    ]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    connection = x11.XOpenDisplay(display.encode())
    assert connection, f"cannot open {display}"
    try:
        width, height = x11.XDisplayWidth(connection, 0), x11.XDisplayHeight(connection, 0)
        image = x11.XGetImage(
            connection, x11.XDefaultRootWindow(connection), 0, 0, width, height, 0xFFFFFFFF, 2
        ).contents
        assert image.bits_per_pixel == 32, "expected a 24-bit screen stored as 32 bits per pixel"
        raw = ctypes.string_at(image.data, image.bytes_per_line * height)
        rgb = bytearray()
        for y in range(height):
            row = raw[y * image.bytes_per_line : y * image.bytes_per_line + width * 4]
            for x in range(0, len(row), 4):  # BGRX
                rgb += bytes((row[x + 2], row[x + 1], row[x]))
        return (width, height), bytes(rgb)
    finally:
        x11.XCloseDisplay(connection)
