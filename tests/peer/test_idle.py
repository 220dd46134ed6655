"""--only-when-idle: the rule, and the X idle clock on a real (virtual) display."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from peer.idle import IdleError, XIdleClock, active_reason
from tests.xdisplay import xvfb


def test_the_peer_works_after_enough_quiet_or_while_the_screensaver_is_on() -> None:
    assert active_reason(299.0, False, 300.0) == "the computer is in use (working only after 5 min without input)"
    assert active_reason(300.0, False, 300.0) is None
    assert active_reason(0.0, True, 300.0) is None
    assert active_reason(1.0, False, 2.5) == "the computer is in use (working only after 2.5 s without input)"


def test_no_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(IdleError, match="DISPLAY is not set"):
        XIdleClock()
    with pytest.raises(IdleError, match="cannot open the X display ':4711'"):
        XIdleClock(":4711")


def test_the_clock_counts_quiet_time_and_input_resets_it() -> None:
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (make test installs it)")
    with xvfb() as display:
        clock = XIdleClock(display)
        subprocess.run(["sleep", "1.2"], check=True)
        quiet, saver_on = clock.read()
        assert quiet >= 1.0 and saver_on is False
        subprocess.run(["xdotool", "mousemove", "5", "5"], env={**os.environ, "DISPLAY": display}, check=True)
        assert clock.read()[0] < quiet
