"""Sizes and rates for people: one way to write them everywhere (status lines, pages, the
dashboard, the screensaver). Decimal units, three significant digits."""

from __future__ import annotations


def format_size(n: float) -> str:
    """A size for status lines, to three significant digits: "1.5 GB", "12.3 MB", "512 B"."""
    n = round(n)
    if n < 1000:
        return f"{n} B"
    units = ("kB", "MB", "GB", "TB", "PB", "EB")
    k = 1
    while k < len(units) and n >= 1000 ** (k + 1):
        k += 1
    text = _three_digits(n / 1000**k)
    if text == "1000" and k < len(units):  # 999.6 kB rounds up to the next unit
        k += 1
        text = _three_digits(n / 1000**k)
    return f"{text} {units[k - 1]}"


def format_rate(bytes_per_second: float) -> str:
    """A rate for status lines: "1.5 MB/s"."""
    return f"{format_size(round(bytes_per_second))}/s"


def _three_digits(value: float) -> str:
    decimals = 2 if value < 10 else 1 if value < 100 else 0
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
