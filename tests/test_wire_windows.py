"""The window arithmetic of the namespace budget tests (tests/wire_windows.py)."""

from __future__ import annotations

import pytest

from tests.wire_windows import Sample, window_maxima


def even(rate: int, seconds: float, step: float = 0.25) -> list[Sample]:
    count = round(seconds / step) + 1
    return [Sample(i * step, round(rate * i * step), 0) for i in range(count)]


def test_an_even_rate_gives_the_rate_in_every_window() -> None:
    samples = even(1000, 20)
    assert window_maxima(samples, 10, "rx") == pytest.approx(10_000)
    assert window_maxima(samples, 1, "rx") == pytest.approx(1_000)


def test_a_burst_shows_in_the_short_window_and_is_diluted_in_the_long_one() -> None:
    samples = even(1000, 20)
    burst = [Sample(s.at, s.rx + (3000 if s.at >= 5 else 0), s.tx) for s in samples]
    assert window_maxima(burst, 1, "rx") == pytest.approx(4000)
    assert window_maxima(burst, 10, "rx") == pytest.approx(13_000)


def test_a_late_sample_counts_at_its_own_length() -> None:
    samples = [Sample(0, 0, 0), Sample(1.5, 0, 3000), Sample(2.0, 0, 3500)]
    assert window_maxima(samples, 1, "tx") == pytest.approx(2000)  # 3000 bytes over 1.5 s


def test_a_run_shorter_than_a_window_is_one_window() -> None:
    samples = [Sample(0, 0, 0), Sample(4, 8000, 0)]
    assert window_maxima(samples, 10, "rx") == pytest.approx(8000)


def test_one_sample_is_no_window() -> None:
    with pytest.raises(ValueError):
        window_maxima([Sample(0, 0, 0)], 1, "rx")
