"""The volunteer's budget: units, active hours, the Budget rules, the file and the flags."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.units import format_rate, format_size
from peer.budget import (
    DEFAULT_SUSTAINABLE_RATE,
    MAX_RATE,
    MAX_SIZE,
    PERIOD_SECONDS,
    ActiveHours,
    Budget,
    BudgetError,
    Window,
    budget_from,
    default_config_path,
    load_budget,
    parse_cap,
    parse_rate,
    parse_size,
    save_budget,
)

# --- sizes, rates, caps ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GB", 2_000_000_000),
        ("500MB", 500_000_000),
        ("1.5GiB", 1_610_612_736),
        ("200kB", 200_000),
        ("200KB", 200_000),
        ("100000", 100_000),
        ("0", 0),
        ("2gb", 2_000_000_000),  # bits never apply to sizes, so b is a byte here
        (" 1.5 GiB ", 1_610_612_736),
        ("1KiB", 1024),
        ("1kib", 1024),
        ("3MiB", 3 * 1024**2),
        ("1TB", 10**12),
        ("1EB", 10**18),
        (".5kB", 500),
        ("5.", 5),
        ("1.0005kB", 1001),  # rounded half up to a whole byte
        ("100B", 100),
    ],
)
def test_sizes_parse_in_si_and_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "'' is not a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("-1MB", "'-1MB' is negative; give a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("nan", "'nan' is not a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("inf", "'inf' is not a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("1e9", "'1e9' is not a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("2G", "'2G' has no unit B or bit; give a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("5XB", "'5XB' is not a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("2Gbit", "'2Gbit' is in bits; give a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("1,5GB", "'1,5GB' is not a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("iB", "'iB' is not a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("5iB", "'5iB' is not a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("١٢MB", "'١٢MB' is not a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("2EB", "'2EB' is more than 1 EB; give a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("9" * 400, f"'{'9' * 400}' is more than 1 EB; give a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
    ],
)
def test_bad_sizes_say_what_is_wrong_in_one_line(text, message):
    with pytest.raises(BudgetError) as caught:
        parse_size(text)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_budget_error_is_a_value_error():
    assert issubclass(BudgetError, ValueError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1MB/s", 1_000_000),
        ("200KB/s", 200_000),
        ("200kB/s", 200_000),
        ("1.5MiB/s", 1_572_864),
        ("8Mbit/s", 1_000_000),
        ("8mbit/s", 1_000_000),
        ("8MBit/s", 1_000_000),
        ("8 Mbits/s", 1_000_000),
        ("1Gbit/s", 125_000_000),
        ("12bit/s", 2),  # 1.5 bytes rounds half up
        ("200kB", 200_000),  # a rate without /s is per second
        ("1MB /s", 1_000_000),
        ("1MB/sec", 1_000_000),
        ("1MB/S", 1_000_000),
        ("1000", 1000),
        ("1PB/s", MAX_RATE),
        ("0.5B/s", 1),
    ],
)
def test_rates_parse_in_bytes_and_bits_per_second(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("200kb/s", "'200kb/s' is ambiguous: write 200kB/s for bytes or 200kbit/s for bits"),
        ("100b/s", "'100b/s' is ambiguous: write 100B/s for bytes or 100bit/s for bits"),
        ("2mb", "'2mb' is ambiguous: write 2mB/s for bytes or 2mbit/s for bits"),
        (
            "0MB/s",
            "'0MB/s' is less than 1 B/s; give a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s (to stop, pause the peer)",
        ),
        (
            "0.4B/s",
            "'0.4B/s' is less than 1 B/s; give a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s (to stop, pause the peer)",
        ),
        ("-1MB/s", "'-1MB/s' is negative; give a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s"),
        ("2PB/s", "'2PB/s' is more than 1 PB/s; give a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s"),
        ("1MB/day", "'1MB/day' is not a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s"),
        ("fast", "'fast' is not a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s"),
        ("/s", "'/s' is not a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s"),
        ("inf/s", "'inf/s' is not a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s"),
        ("NaN", "'NaN' is not a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s"),
    ],
)
def test_bad_rates_say_what_is_wrong_in_one_line(text, message):
    with pytest.raises(BudgetError) as caught:
        parse_rate(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GB/day", (2_000_000_000, "day")),
        ("10GB/week", (10_000_000_000, "week")),
        ("50GB/month", (50_000_000_000, "month")),
        ("50GB/Month", (50_000_000_000, "month")),
        ("2 GB / day", (2_000_000_000, "day")),
        ("1.5GiB/day", (1_610_612_736, "day")),
    ],
)
def test_caps_parse_with_their_period(text, expected):
    assert parse_cap(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2GB", "'2GB' is not a cap like 2GB/day, 10GB/week or 50GB/month"),
        ("2GB/year", "'2GB/year' is not a cap like 2GB/day, 10GB/week or 50GB/month"),
        ("2GB/s", "'2GB/s' is not a cap like 2GB/day, 10GB/week or 50GB/month"),
        (
            "0GB/day",
            "'0GB/day' is a cap of nothing; give a cap like 2GB/day, 10GB/week or 50GB/month (to stop, pause the peer)",
        ),
        ("-2GB/day", "'-2GB' is negative; give a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        ("lots/day", "'lots' is not a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
    ],
)
def test_bad_caps_say_what_is_wrong(text, message):
    with pytest.raises(BudgetError) as caught:
        parse_cap(text)
    assert str(caught.value) == message


@given(st.integers(min_value=0, max_value=MAX_SIZE))
def test_format_size_parses_back_within_half_a_percent(n):
    back = parse_size(format_size(n))
    assert abs(back - n) <= 0.005 * n + 0.5


@given(st.integers(min_value=1, max_value=MAX_RATE))
def test_format_rate_parses_back_within_half_a_percent(n):
    back = parse_rate(format_rate(n))
    assert abs(back - n) <= 0.005 * n + 0.5


# --- active hours ----------------------------------------------------------------------


def _at(hour: int, minute: int = 0, second: int = 0, day: int = 6) -> datetime:
    return datetime(2024, 5, day, hour, minute, second)


def test_window_parses_and_prints_back():
    assert Window.parse("08:00-18:00") == Window(8 * 60, 18 * 60)
    assert Window.parse(" 8:05 - 18:30 ") == Window(485, 1110)
    assert Window.parse("22:00-24:00") == Window(1320, 1440)
    assert str(Window.parse("22:00-06:30")) == "22:00-06:30"
    assert str(Window.parse("00:00-24:00")) == "00:00-24:00"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8-18", "'8-18' is not active hours like 08:00-18:00 or 22:00-06:30"),
        ("", "'' is not active hours like 08:00-18:00 or 22:00-06:30"),
        (
            "25:00-26:00",
            "'25:00-26:00' has a time that is not on a 24-hour clock; give active hours like 08:00-18:00 or 22:00-06:30",
        ),
        (
            "08:60-09:00",
            "'08:60-09:00' has a time that is not on a 24-hour clock; give active hours like 08:00-18:00 or 22:00-06:30",
        ),
        (
            "24:00-06:00",
            "'24:00-06:00' has a time that is not on a 24-hour clock; give active hours like 08:00-18:00 or 22:00-06:30",
        ),
        (
            "20:00-24:30",
            "'20:00-24:30' has a time that is not on a 24-hour clock; give active hours like 08:00-18:00 or 22:00-06:30",
        ),
        ("08:00-08:00", "active hours 08:00-08:00 are empty; for all day give no active hours (or 00:00-24:00)"),
        ("00:00-00:00", "active hours 00:00-00:00 are empty; for all day give no active hours (or 00:00-24:00)"),
    ],
)
def test_bad_windows_say_what_is_wrong(text, message):
    with pytest.raises(BudgetError) as caught:
        Window.parse(text)
    assert str(caught.value) == message


def test_day_window_contains_its_start_but_not_its_end():
    hours = ActiveHours.parse(["08:00-18:00"])
    assert [hours.contains(_at(h, m)) for h, m in [(7, 59), (8, 0), (12, 0), (17, 59), (18, 0), (23, 0)]] == [
        False,
        True,
        True,
        True,
        False,
        False,
    ]


def test_window_wrapping_past_midnight():
    hours = ActiveHours.parse(["22:00-06:30"])
    assert [hours.contains(_at(h, m)) for h, m in [(21, 59), (22, 0), (0, 0), (6, 29), (6, 30), (12, 0)]] == [
        False,
        True,
        True,
        True,
        False,
        False,
    ]


def test_no_windows_is_always_active_and_never_changes():
    hours = ActiveHours.parse([])
    assert hours.always
    assert hours.contains(_at(3)) and hours.contains(_at(15))
    assert hours.next_change(_at(3)) is None
    assert ActiveHours.parse(["always"]) == ActiveHours()
    assert ActiveHours.parse([" Always "]) == ActiveHours()


def test_always_cannot_be_mixed_with_windows():
    with pytest.raises(BudgetError, match=r"^'always' is not active hours like"):
        ActiveHours.parse(["always", "08:00-09:00"])


def test_several_windows_in_a_list_or_separated_by_commas():
    listed = ActiveHours.parse(["08:00-12:00", "13:00-18:00"])
    assert ActiveHours.parse(["08:00-12:00, 13:00-18:00"]) == listed
    assert ActiveHours.parse("08:00-12:00,13:00-18:00") == listed
    assert listed.to_strings() == ["08:00-12:00", "13:00-18:00"]
    assert [listed.contains(_at(h, 30)) for h in (7, 8, 12, 13, 18)] == [False, True, False, True, False]


def test_next_change_switches_on_and_off():
    hours = ActiveHours.parse(["08:00-18:00"])
    assert hours.next_change(_at(7, 30, 15)) == _at(8, 0)
    assert hours.next_change(_at(8, 0)) == _at(18, 0)
    assert hours.next_change(_at(17, 59, 59)) == _at(18, 0)
    assert hours.next_change(_at(18, 0)) == _at(8, 0, day=7)
    assert hours.next_change(_at(23, 0)) == _at(8, 0, day=7)


def test_next_change_across_midnight_and_between_touching_windows():
    wrapping = ActiveHours.parse(["22:00-06:30"])
    assert wrapping.next_change(_at(23, 0)) == _at(6, 30, day=7)
    assert wrapping.next_change(_at(12, 0)) == _at(22, 0)
    # 18:00 ends one window and starts the next: no switch there.
    touching = ActiveHours.parse(["08:00-18:00", "18:00-20:00"])
    assert touching.next_change(_at(9, 0)) == _at(20, 0)
    overlapping = ActiveHours.parse(["08:00-12:00", "10:00-14:00"])
    assert overlapping.next_change(_at(9, 0)) == _at(14, 0)


def test_windows_covering_the_whole_day_never_change():
    assert ActiveHours.parse(["00:00-24:00"]).next_change(_at(5)) is None
    assert ActiveHours.parse(["06:00-18:00", "18:00-06:00"]).next_change(_at(5)) is None


def test_next_change_keeps_the_volunteers_time_zone():
    berlin = ZoneInfo("Europe/Berlin")
    hours = ActiveHours.parse(["08:00-18:00"])
    # The night of 2024-03-31 loses an hour; the switch is still at 08:00 on the wall clock.
    before = datetime(2024, 3, 30, 20, 0, tzinfo=berlin)
    switch = hours.next_change(before)
    assert switch == datetime(2024, 3, 31, 8, 0, tzinfo=berlin)
    assert switch is not None and switch.utcoffset() == timedelta(hours=2)
    aware_utc = datetime(2024, 5, 6, 7, 59, tzinfo=UTC)
    assert hours.next_change(aware_utc) == datetime(2024, 5, 6, 8, 0, tzinfo=UTC)


@given(
    st.lists(
        st.tuples(st.integers(0, 1439), st.integers(0, 1440)).filter(lambda w: w[0] != w[1]),
        max_size=4,
    ),
    st.integers(0, 1439),
)
def test_next_change_is_the_first_minute_the_state_differs(windows, minute):
    hours = ActiveHours(tuple(Window(start, end) for start, end in windows))
    now = datetime(2024, 5, 6) + timedelta(minutes=minute)
    change = hours.next_change(now)
    ahead = [now + timedelta(minutes=k) for k in range(1, 1441)]
    first_different = next((t for t in ahead if hours.contains(t) != hours.contains(now)), None)
    assert change == first_different


# --- the Budget ------------------------------------------------------------------------


def test_sustainable_rate_is_the_lower_of_max_down_and_the_spread_cap():
    assert Budget().sustainable_rate == DEFAULT_SUSTAINABLE_RATE == 10_000_000
    assert Budget(max_down=1_000_000).sustainable_rate == 1_000_000
    assert Budget(cap_bytes=8_640_000_000, cap_period="day").sustainable_rate == 100_000
    assert Budget(max_down=50_000, cap_bytes=8_640_000_000).sustainable_rate == 50_000
    assert Budget(cap_bytes=7 * 86_400, cap_period="week").sustainable_rate == 1.0
    assert Budget(cap_bytes=31 * 86_400 * 3, cap_period="month").sustainable_rate == 3.0
    assert PERIOD_SECONDS == {"day": 86_400, "week": 604_800, "month": 2_678_400}
    # Upload and concurrency do not change the weight.
    assert Budget(max_up=5, max_fetches=1).sustainable_rate == DEFAULT_SUSTAINABLE_RATE


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_down": 0}, "max_down must be a whole number from 1 to 1000000000000000, not 0"),
        ({"max_up": -5}, "max_up must be a whole number from 1 to 1000000000000000, not -5"),
        ({"max_down": 1.5}, "max_down must be a whole number from 1 to 1000000000000000, not 1.5"),
        ({"max_down": True}, "max_down must be a whole number from 1 to 1000000000000000, not True"),
        ({"cap_bytes": 0}, "cap_bytes must be a whole number from 1 to 1000000000000000000, not 0"),
        ({"max_fetches": 0}, "max_fetches must be a whole number from 1 to 1000, not 0"),
        ({"max_fetches": 1001}, "max_fetches must be a whole number from 1 to 1000, not 1001"),
        ({"cap_period": "year"}, "cap period 'year' is not one of day, week, month"),
        ({"active_hours": ["08:00-18:00"]}, "active_hours must be ActiveHours, not list"),
    ],
)
def test_budget_refuses_impossible_values(fields, message):
    with pytest.raises(BudgetError) as caught:
        Budget(**fields)
    assert str(caught.value) == message


# --- the file --------------------------------------------------------------------------


def test_default_config_path_is_peer_toml_in_the_user_config_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path() == tmp_path / "osaas" / "peer.toml"


def test_missing_file_is_an_empty_budget(tmp_path):
    assert load_budget(tmp_path / "absent.toml") == Budget()


def test_file_with_every_key(tmp_path):
    path = tmp_path / "peer.toml"
    path.write_text(
        'max_down = "1MB/s"\nmax_up = 250000\ncap = "10GB/week"\nmax_fetches = 8\n'
        'active_hours = ["08:00-18:00", "22:00-06:30"]\n'
    )
    assert load_budget(path) == Budget(
        max_down=1_000_000,
        max_up=250_000,
        cap_bytes=10_000_000_000,
        cap_period="week",
        max_fetches=8,
        active_hours=ActiveHours((Window(480, 1080), Window(1320, 390))),
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            'speed = "1MB/s"\n',
            "unknown key 'speed'; known keys are max_down, max_up, cap, max_fetches, active_hours, trusted_owners",
        ),
        (
            "[peer]\nmax_down = 1\n",
            "unknown key 'peer'; known keys are max_down, max_up, cap, max_fetches, active_hours, trusted_owners",
        ),
        ('max_down = "fast"\n', "max_down: 'fast' is not a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s"),
        (
            "max_down = 0\n",
            "max_down: 0 bytes/s is not from 1 to 1000000000000000; give a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s",
        ),
        ("max_down = 1.5\n", 'max_down: must be "1MB/s" or a whole number of bytes per second, not a float'),
        ("max_up = true\n", 'max_up: must be "1MB/s" or a whole number of bytes per second, not a boolean'),
        ("max_up = [1]\n", 'max_up: must be "1MB/s" or a whole number of bytes per second, not an array'),
        ("cap = 2000\n", 'cap: must be a string like "2GB/day", not an integer'),
        ('cap = "2GB"\n', "cap: '2GB' is not a cap like 2GB/day, 10GB/week or 50GB/month"),
        ('max_fetches = "8"\n', "max_fetches: '8' is not a whole number of concurrent fetches from 1 to 1000"),
        ("max_fetches = 0\n", "max_fetches: 0 is not a whole number of concurrent fetches from 1 to 1000"),
        (
            'active_hours = "08:00-18:00"\n',
            'active_hours: must be an array of strings like ["08:00-18:00"], not a string',
        ),
        ("active_hours = [8]\n", 'active_hours: must be an array of strings like ["08:00-18:00"], not an integer'),
        ('active_hours = ["8 to 6"]\n', "active_hours: '8 to 6' is not active hours like 08:00-18:00 or 22:00-06:30"),
        ("max_down = \n", "not valid TOML: Invalid value (at line 1, column 12)"),
        ('max_down = "1MB/s"\nmax_down = "2MB/s"\n', "not valid TOML: Cannot overwrite a value (at line 2, column 19)"),
    ],
)
def test_bad_files_name_the_file_and_the_key_in_one_line(tmp_path, content, problem):
    path = tmp_path / "peer.toml"
    path.write_text(content)
    with pytest.raises(BudgetError) as caught:
        load_budget(path)
    assert str(caught.value) == f"{path}: {problem}"


def test_a_file_that_is_not_text_or_not_readable(tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BudgetError) as caught:
        load_budget(binary)
    assert str(caught.value) == f'{binary}: not UTF-8 text; write it as TOML, e.g. cap = "2GB/day"'
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    with pytest.raises(BudgetError) as caught:
        load_budget(directory)
    assert str(caught.value) == f"{directory}: cannot read the budget file: Is a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file(tmp_path):
    path = tmp_path / "peer.toml"
    path.write_text('cap = "2GB/day"\n')
    path.chmod(0)
    with pytest.raises(BudgetError) as caught:
        load_budget(path)
    assert str(caught.value) == f"{path}: cannot read the budget file: Permission denied"


def test_save_writes_exact_human_units_and_loads_back(tmp_path):
    path = tmp_path / "new dir" / "peer.toml"
    budget = Budget(
        max_down=1_572_864,
        max_up=200_000,
        cap_bytes=2_000_000_000,
        cap_period="day",
        max_fetches=6,
        active_hours=ActiveHours.parse(["08:00-12:00", "22:00-06:30"]),
    )
    save_budget(path, budget)
    assert path.read_text().splitlines()[1:] == [
        'max_down = "1.5MiB/s"',
        'max_up = "200kB/s"',
        'cap = "2GB/day"',
        "max_fetches = 6",
        'active_hours = ["08:00-12:00", "22:00-06:30"]',
    ]
    assert load_budget(path) == budget
    save_budget(path, Budget())
    assert load_budget(path) == Budget()
    assert [p.name for p in path.parent.iterdir()] == ["peer.toml"]  # no temp files left


_rates = st.none() | st.integers(1, MAX_RATE)
_windows = st.tuples(st.integers(0, 1439), st.integers(0, 1440)).filter(lambda w: w[0] != w[1])


@given(
    max_down=_rates,
    max_up=_rates,
    cap=st.none() | st.tuples(st.integers(1, MAX_SIZE), st.sampled_from(["day", "week", "month"])),
    max_fetches=st.none() | st.integers(1, 1000),
    windows=st.lists(_windows, max_size=3),
)
def test_any_budget_survives_the_file_exactly(tmp_path_factory, max_down, max_up, cap, max_fetches, windows):
    path = tmp_path_factory.mktemp("budget") / "peer.toml"
    budget = Budget(
        max_down=max_down,
        max_up=max_up,
        cap_bytes=cap[0] if cap else None,
        cap_period=cap[1] if cap else "day",
        max_fetches=max_fetches,
        active_hours=ActiveHours(tuple(Window(s, e) for s, e in windows)),
    )
    save_budget(path, budget)
    assert load_budget(path) == budget


# --- flags over the file ---------------------------------------------------------------


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "peer.toml"
    path.write_text('max_down = "1MB/s"\nmax_up = "100kB/s"\ncap = "50GB/month"\nactive_hours = ["08:00-18:00"]\n')
    return path


def test_without_flags_the_file_decides(tmp_path):
    assert budget_from(_config(tmp_path)) == Budget(
        max_down=1_000_000,
        max_up=100_000,
        cap_bytes=50_000_000_000,
        cap_period="month",
        active_hours=ActiveHours.parse(["08:00-18:00"]),
    )


def test_flags_win_over_the_file(tmp_path):
    budget = budget_from(
        _config(tmp_path),
        max_down="8Mbit/s",
        daily_cap="2GB",
        max_fetches="3",
        active_hours=["always"],
    )
    assert budget == Budget(
        max_down=1_000_000,
        max_up=100_000,
        cap_bytes=2_000_000_000,
        cap_period="day",
        max_fetches=3,
        active_hours=ActiveHours(),
    )
    assert budget_from(_config(tmp_path), cap="10GB/week", max_up="1MiB/s", active_hours=["22:00-06:00"]) == Budget(
        max_down=1_000_000,
        max_up=1_048_576,
        cap_bytes=10_000_000_000,
        cap_period="week",
        active_hours=ActiveHours.parse(["22:00-06:00"]),
    )


def test_no_config_path_means_flags_only(tmp_path):
    assert budget_from(None) == Budget()
    assert budget_from(None, max_fetches=4) == Budget(max_fetches=4)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"max_down": "200kb/s"}, "--max-down: '200kb/s' is ambiguous: write 200kB/s for bytes or 200kbit/s for bits"),
        (
            {"max_up": "0"},
            "--max-up: '0' is less than 1 B/s; give a rate like 1MB/s, 200kB/s, 1.5MiB/s or 8Mbit/s (to stop, pause the peer)",
        ),
        ({"daily_cap": "2GB/week"}, "--daily-cap: '2GB/week' is not a size like 2GB, 500MB, 1.5GiB or 100000 (bytes)"),
        (
            {"daily_cap": "0"},
            "--daily-cap: '0/day' is a cap of nothing; give a cap like 2GB/day, 10GB/week or 50GB/month (to stop, pause the peer)",
        ),
        ({"cap": "2GB"}, "--cap: '2GB' is not a cap like 2GB/day, 10GB/week or 50GB/month"),
        ({"cap": "2GB/day", "daily_cap": "1GB"}, "give --daily-cap or --cap, not both"),
        ({"max_fetches": "many"}, "--max-fetches: 'many' is not a whole number of concurrent fetches from 1 to 1000"),
        ({"max_fetches": "0"}, "--max-fetches: 0 is not a whole number of concurrent fetches from 1 to 1000"),
        ({"max_fetches": "²"}, "--max-fetches: '²' is not a whole number of concurrent fetches from 1 to 1000"),
        ({"active_hours": ["9-5"]}, "--active-hours: '9-5' is not active hours like 08:00-18:00 or 22:00-06:30"),
    ],
)
def test_bad_flags_name_the_flag(tmp_path, flags, message):
    with pytest.raises(BudgetError) as caught:
        budget_from(_config(tmp_path), **flags)
    assert str(caught.value) == message


def test_a_bad_file_is_reported_even_when_flags_are_good(tmp_path):
    path = tmp_path / "peer.toml"
    path.write_text("max_down = 'x'\n")
    with pytest.raises(BudgetError, match=r"peer\.toml: max_down: 'x' is not a rate"):
        budget_from(path, max_down="1MB/s")
