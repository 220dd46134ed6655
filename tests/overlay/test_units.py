"""Sizes and rates for people (overlay.units): one way everywhere, three significant digits."""

from __future__ import annotations

import pytest

from overlay.units import format_rate, format_size


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 kB"),
        (1499, "1.5 kB"),
        (12_345_678, "12.3 MB"),
        (999_499, "999 kB"),
        (999_600, "1 MB"),  # rounds up into the next unit, never "1000 kB"
        (1_500_000_000, "1.5 GB"),
        (10**18, "1 EB"),
    ],
)
def test_format_size_gives_three_significant_digits(n, text):
    assert format_size(n) == text


def test_format_rate_appends_per_second():
    assert format_rate(1_500_000) == "1.5 MB/s"
    assert format_rate(999.6) == "1 kB/s"


def test_fractional_sizes_round_like_whole_ones():
    assert format_size(999.4) == "999 B" and format_size(1499.7) == "1.5 kB"
