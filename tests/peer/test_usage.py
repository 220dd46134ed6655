"""The usage ledger: local calendar periods, counts that survive restarts, bad files set aside."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.usage import AUTO_FLUSH_BYTES, UsageLedger, period_end, period_key

MONDAY = datetime(2024, 5, 6, 13, 30)  # ISO week 19 of 2024


def _saved(path) -> dict:
    return msgpack.unpackb(path.read_bytes())


# --- periods ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "period", "key"),
    [
        (MONDAY, "day", "2024-05-06"),
        (MONDAY, "week", "2024-W19"),
        (datetime(2024, 5, 5, 23, 59), "week", "2024-W18"),  # Sunday ends the ISO week
        (datetime(2024, 12, 30, 0, 0), "week", "2025-W01"),  # ISO years start on a Monday
        (datetime(2024, 1, 1), "week", "2024-W01"),
        (MONDAY, "month", "2024-05"),
        (datetime(987, 2, 1), "month", "0987-02"),
    ],
)
def test_period_keys(when, period, key):
    assert period_key(when, period) == key


@pytest.mark.parametrize(
    ("when", "period", "end"),
    [
        (MONDAY, "day", datetime(2024, 5, 7)),
        (datetime(2024, 5, 6), "day", datetime(2024, 5, 7)),
        (datetime(2024, 5, 8, 9), "week", datetime(2024, 5, 13)),
        (datetime(2024, 5, 6), "week", datetime(2024, 5, 13)),
        (datetime(2024, 5, 12, 23, 59), "week", datetime(2024, 5, 13)),
        (datetime(2024, 2, 10), "month", datetime(2024, 3, 1)),
        (datetime(2024, 12, 31, 23, 59), "month", datetime(2025, 1, 1)),
        (datetime(2024, 1, 31), "day", datetime(2024, 2, 1)),
    ],
)
def test_period_ends_at_the_next_local_midnight_that_starts_a_period(when, period, end):
    assert period_end(when, period) == end


def test_period_end_keeps_the_volunteers_time_zone():
    berlin = ZoneInfo("Europe/Berlin")
    end = period_end(datetime(2024, 3, 30, 22, 0, tzinfo=berlin), "day")
    assert end == datetime(2024, 3, 31, 0, 0, tzinfo=berlin)
    assert end.tzinfo is berlin


def test_unknown_periods_are_refused(tmp_path):
    for call in (lambda: period_key(MONDAY, "year"), lambda: period_end(MONDAY, "year")):  # type: ignore[arg-type]  # no such period, on purpose
        with pytest.raises(ValueError, match=r"^period must be one of day, week, month, not 'year'$"):
            call()
    with pytest.raises(ValueError, match=r"^period must be one of day, week, month, not 'year'$"):
        UsageLedger(tmp_path / "usage", 1000, "year")  # type: ignore[arg-type]  # no such period, on purpose


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.sampled_from(["day", "week", "month"]),
)
def test_period_end_is_where_the_key_changes(when, period):
    end = period_end(when, period)
    assert when < end
    assert period_key(end - timedelta(microseconds=1), period) == period_key(when, period)
    assert period_key(end, period) != period_key(when, period)
    assert (end.hour, end.minute, end.second, end.microsecond) == (0, 0, 0, 0)


# --- counting --------------------------------------------------------------------------


def test_counts_and_the_exhausted_flag(tmp_path):
    ledger = UsageLedger(tmp_path / "usage", cap_bytes=1000, period="day")
    assert (ledger.used(MONDAY), ledger.remaining(MONDAY), ledger.exhausted(MONDAY)) == (0, 1000, False)
    ledger.add(999, MONDAY)
    assert (ledger.used(MONDAY), ledger.remaining(MONDAY), ledger.exhausted(MONDAY)) == (999, 1, False)
    ledger.add(1, MONDAY)
    assert (ledger.used(MONDAY), ledger.remaining(MONDAY), ledger.exhausted(MONDAY)) == (1000, 0, True)
    ledger.add(50, MONDAY)  # bytes already in flight when the cap was reached still count
    assert (ledger.used(MONDAY), ledger.remaining(MONDAY), ledger.exhausted(MONDAY)) == (1050, 0, True)
    tomorrow = MONDAY + timedelta(days=1)
    assert (ledger.used(tomorrow), ledger.remaining(tomorrow), ledger.exhausted(tomorrow)) == (0, 1000, False)


def test_without_a_cap_nothing_is_exhausted(tmp_path):
    ledger = UsageLedger(tmp_path / "usage", cap_bytes=None, period="month")
    ledger.add(10**15, MONDAY)
    assert ledger.used(MONDAY) == 10**15
    assert ledger.remaining(MONDAY) is None
    assert ledger.exhausted(MONDAY) is False


def test_a_new_period_starts_from_zero_while_running(tmp_path):
    ledger = UsageLedger(tmp_path / "usage", cap_bytes=5000, period="day")
    ledger.add(4000, datetime(2024, 5, 6, 23, 59, 59))
    ledger.add(300, datetime(2024, 5, 7, 0, 0, 1))
    assert ledger.used(datetime(2024, 5, 7, 12)) == 300
    ledger.flush()
    assert _saved(tmp_path / "usage") == {"version": 1, "period": "day", "key": "2024-05-07", "used": 300}


def test_weekly_and_monthly_counts_span_days(tmp_path):
    weekly = UsageLedger(tmp_path / "weekly", cap_bytes=None, period="week")
    weekly.add(100, MONDAY)
    weekly.add(100, MONDAY + timedelta(days=6))  # Sunday
    assert weekly.used(MONDAY + timedelta(days=6)) == 200
    assert weekly.used(MONDAY + timedelta(days=7)) == 0
    monthly = UsageLedger(tmp_path / "monthly", cap_bytes=None, period="month")
    monthly.add(100, datetime(2024, 5, 1))
    monthly.add(100, datetime(2024, 5, 31, 23, 59))
    assert monthly.used(datetime(2024, 5, 15)) == 200
    assert monthly.used(datetime(2024, 6, 1)) == 0


def test_negative_bytes_are_refused(tmp_path):
    ledger = UsageLedger(tmp_path / "usage", cap_bytes=None, period="day")
    with pytest.raises(ValueError, match=r"^cannot add a negative number of bytes \(-1\)$"):
        ledger.add(-1, MONDAY)
    assert ledger.used(MONDAY) == 0


def test_reconfigure_changes_the_cap_and_keeps_the_count(tmp_path):
    ledger = UsageLedger(tmp_path / "usage", cap_bytes=None, period="day")
    ledger.add(700, MONDAY)
    ledger.reconfigure(500, "day")
    assert (ledger.cap_bytes, ledger.period) == (500, "day")
    assert ledger.exhausted(MONDAY)
    ledger.reconfigure(1000, "week")  # today's 700 count towards this week: never undercount
    assert (ledger.used(MONDAY), ledger.remaining(MONDAY)) == (700, 300)
    ledger.add(10, MONDAY)
    ledger.flush()
    assert _saved(tmp_path / "usage") == {"version": 1, "period": "week", "key": "2024-W19", "used": 710}


# --- surviving restarts ----------------------------------------------------------------


def test_a_restart_in_the_same_period_continues_the_count(tmp_path):
    path = tmp_path / "state" / "usage.msgpack"
    first = UsageLedger(path, cap_bytes=10_000, period="day")
    first.add(1234, MONDAY)
    first.flush()
    assert _saved(path) == {"version": 1, "period": "day", "key": "2024-05-06", "used": 1234}
    second = UsageLedger(path, cap_bytes=10_000, period="day")
    assert second.used(MONDAY + timedelta(hours=5)) == 1234
    second.add(766, MONDAY + timedelta(hours=5))
    second.flush()
    assert UsageLedger(path, cap_bytes=10_000, period="day").used(MONDAY) == 2000


def test_a_restart_in_a_new_period_starts_from_zero(tmp_path):
    path = tmp_path / "usage"
    first = UsageLedger(path, cap_bytes=1000, period="day")
    first.add(1000, MONDAY)
    first.flush()
    second = UsageLedger(path, cap_bytes=1000, period="day")
    assert second.exhausted(MONDAY)
    tomorrow = MONDAY + timedelta(days=1)
    assert (second.used(tomorrow), second.exhausted(tomorrow)) == (0, False)
    second.add(5, tomorrow)
    second.flush()
    assert _saved(path) == {"version": 1, "period": "day", "key": "2024-05-07", "used": 5}


def test_a_restart_with_a_longer_period_carries_the_count_while_it_lasts(tmp_path):
    path = tmp_path / "usage"
    daily = UsageLedger(path, cap_bytes=None, period="day")
    daily.add(400, MONDAY)
    daily.flush()
    monthly = UsageLedger(path, cap_bytes=1000, period="month")
    assert monthly.used(MONDAY) == 400
    assert monthly.used(MONDAY + timedelta(days=1)) == 0  # the saved day is over


def test_flush_writes_only_what_changed(tmp_path):
    path = tmp_path / "usage"
    ledger = UsageLedger(path, cap_bytes=None, period="day")
    ledger.flush()
    assert not path.exists()
    ledger.add(10, MONDAY)
    ledger.flush()
    path.unlink()
    ledger.flush()
    assert not path.exists()
    ledger.add(1, MONDAY)
    ledger.flush()
    assert _saved(path)["used"] == 11
    assert sorted(p.name for p in tmp_path.iterdir()) == ["usage"]  # no temp files left behind


def test_add_flushes_by_itself_after_a_megabyte_or_five_seconds(tmp_path):
    path = tmp_path / "usage"
    ledger = UsageLedger(path, cap_bytes=None, period="day")
    ledger.add(AUTO_FLUSH_BYTES - 1, MONDAY)
    assert not path.exists()
    ledger.add(1, MONDAY)
    assert _saved(path)["used"] == AUTO_FLUSH_BYTES
    ledger.add(10, MONDAY + timedelta(seconds=4.9))
    assert _saved(path)["used"] == AUTO_FLUSH_BYTES
    ledger.add(10, MONDAY + timedelta(seconds=5))
    assert _saved(path)["used"] == AUTO_FLUSH_BYTES + 20


def test_a_failing_automatic_flush_logs_once_and_counting_goes_on(tmp_path, caplog):
    blocker = tmp_path / "not a dir"
    blocker.write_bytes(b"")
    ledger = UsageLedger(blocker / "usage", cap_bytes=None, period="day")
    caplog.clear()  # the failed read at start has its own line
    with caplog.at_level(logging.WARNING, logger="peer.usage"):
        ledger.add(AUTO_FLUSH_BYTES, MONDAY)
        ledger.add(AUTO_FLUSH_BYTES, MONDAY)
    assert ledger.used(MONDAY) == 2 * AUTO_FLUSH_BYTES
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot save bandwidth usage to {blocker / 'usage'}: File exists"
    ]
    with pytest.raises(OSError):
        ledger.flush()


# --- bad files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xc1garbage",
        b"\x91\x91",  # truncated
        msgpack.packb([1, "day", "2024-05-06", 5]),
        msgpack.packb({"version": 2, "period": "day", "key": "2024-05-06", "used": 5}),
        msgpack.packb({"version": 1, "period": "year", "key": "2024", "used": 5}),
        msgpack.packb({"version": 1, "period": "day", "key": 20240506, "used": 5}),
        msgpack.packb({"version": 1, "period": "day", "key": "2024-05-06", "used": "5"}),
        msgpack.packb({"version": 1, "period": "day", "key": "2024-05-06", "used": -5}),
        msgpack.packb({"version": 1, "period": "day", "key": "2024-05-06", "used": True}),
        msgpack.packb({"version": 1, "period": "day", "key": "2024-05-06"}),
        msgpack.packb({"version": 1, "period": "day", "key": "2024-05-06", "used": 5}) + b"\x00",
        msgpack.packb({1: 2}),
    ],
)
def test_a_corrupt_file_is_set_aside_and_counting_starts_from_zero(tmp_path, caplog, content):
    path = tmp_path / "usage.msgpack"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="peer.usage"):
        ledger = UsageLedger(path, cap_bytes=100, period="day")
    assert ledger.used(MONDAY) == 0
    assert not path.exists()
    assert (tmp_path / "usage.msgpack.corrupt").read_bytes() == content
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith(f"unreadable bandwidth usage file moved to {path}.corrupt (")
    assert message.endswith("); counting this period from 0") and "\n" not in message
    ledger.add(7, MONDAY)
    ledger.flush()
    assert UsageLedger(path, cap_bytes=100, period="day").used(MONDAY) == 7


def test_an_unreadable_file_is_left_alone_and_counting_starts_from_zero(tmp_path, caplog):
    path = tmp_path / "usage"
    path.mkdir()
    with caplog.at_level(logging.WARNING, logger="peer.usage"):
        ledger = UsageLedger(path, cap_bytes=100, period="day")
    assert ledger.used(MONDAY) == 0
    assert path.is_dir()
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read bandwidth usage from {path} (Is a directory); counting this period from 0"
    ]
