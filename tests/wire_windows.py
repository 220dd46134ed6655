"""Windows over interface byte counters: the most bytes any window of a given length carried.

Pure: samples in, a number out. Used by the namespace tests of the budget
(tests/test_netns_budget.py) and tested in tests/test_wire_windows.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Sample:
    """The interface's counters at one moment: seconds (monotonic), bytes received and sent."""

    at: float
    rx: int
    tx: int


def window_maxima(samples: list[Sample], seconds: float, direction: Literal["rx", "tx"]) -> float:
    """The most bytes per `seconds` over any window from one sample to the first sample at
    least `seconds` later, scaled to `seconds` (a window a little longer than asked, because
    samples are taken when they can be, is counted at its own length). A run shorter than one
    window counts as one window of the whole run."""
    if len(samples) < 2:
        raise ValueError("a window needs at least two samples")
    best = 0.0
    j = 0
    for i, first in enumerate(samples):
        j = max(j, i + 1)
        while j < len(samples) and samples[j].at - first.at < seconds:
            j += 1
        if j == len(samples):
            if i > 0:
                break
            j = len(samples) - 1  # the whole run is shorter than one window
        last = samples[j]
        moved = getattr(last, direction) - getattr(first, direction)
        best = max(best, moved * seconds / max(last.at - first.at, seconds))
    return best
