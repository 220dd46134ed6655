"""Headless Chromium for the web page tests: Debian's chromium (which `make test` installs),
driven by Playwright, which then needs no browser of its own."""

from __future__ import annotations

import shutil

import pytest

# Without the background-networking flags Chromium keeps trying hosts this machine cannot reach.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Where Debian's chromium is; skips the test when it is not installed."""
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    return found
