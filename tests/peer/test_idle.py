"""--only-when-idle: the rules, the screensaver's mark, and the X idle clock on a real (virtual) display."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from peer.idle import MARK_FRESH, AwaySense, IdleError, XIdleClock, active_reason, mark_fresh
from tests.xdisplay import xvfb


def test_the_peer_works_after_enough_quiet_or_while_a_screensaver_is_on() -> None:
    assert (
        active_reason(299.0, False, False, 300.0) == "the computer is in use (working only after 5 min without input)"
    )
    assert active_reason(300.0, False, False, 300.0) is None
    assert active_reason(0.0, True, False, 300.0) is None  # the X server's own screensaver
    assert active_reason(0.0, False, True, 300.0) is None  # the osaas screensaver shows
    assert active_reason(1.0, False, False, 2.5) == "the computer is in use (working only after 2.5 s without input)"


def test_without_x_idle_time_only_the_osaas_screensaver_counts() -> None:
    assert active_reason(None, False, True, 300.0) is None
    assert active_reason(None, False, False, 300.0) == (
        "the osaas screensaver is not showing (no X idle time here: working only while it shows)"
    )


def test_a_mark_counts_while_fresh() -> None:
    assert mark_fresh(100.0, 100.0 + MARK_FRESH)
    assert not mark_fresh(100.0, 100.0 + MARK_FRESH + 0.1)
    assert not mark_fresh(None, 100.0)
    assert not mark_fresh(200.0, 100.0)  # touched "in the future": not a sign of now


def test_no_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(IdleError, match="no X display to read idle time from \\(DISPLAY is not set\\)"):
        XIdleClock()
    with pytest.raises(IdleError, match="cannot open the X display ':4711'"):
        XIdleClock(":4711")


def test_without_a_display_the_sense_goes_by_the_screensaver_mark(tmp_path: Path) -> None:
    mark = tmp_path / "run" / "screensaver-showing"
    sense = AwaySense(300.0, mark, display="")
    assert sense.without_x == "no X display to read idle time from (DISPLAY is not set)"
    reason = sense.reason()
    assert reason is not None and reason.startswith("the osaas screensaver is not showing")
    mark.parent.mkdir()
    mark.touch()
    assert sense.reason() is None
    stale = time.time() - MARK_FRESH - 5
    os.utime(mark, (stale, stale))
    assert sense.reason() is not None


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
