"""The XScreenSaver entry: printed by `osaas screensaver install`, added once to ~/.xscreensaver."""

from __future__ import annotations

from pathlib import Path

import pytest

from screensaver.install import InstallError, add_entry, xscreensaver_entry

SETTINGS = """\
# XScreenSaver Preferences File
mode:		random
programs:								      \\
				maze -root				    \\n\\
  "Qix (solid)" 		qix -root -solid -segments 100		    \\n\\
				attraction -root			    \\n
pointerHysteresis:	10
"""


def test_the_entry_goes_first_in_the_list_once_and_nothing_else_changes(tmp_path: Path) -> None:
    config = tmp_path / ".xscreensaver"
    config.write_text(SETTINGS)
    entry = xscreensaver_entry("/opt/osaas/bin/osaas")
    assert entry == '  "osaas peer"  /opt/osaas/bin/osaas screensaver -root \\n\\'
    assert add_entry(config, entry) is True
    lines = config.read_text().splitlines()
    before = SETTINGS.splitlines()
    assert lines == before[:3] + [entry] + before[3:]
    assert add_entry(config, entry) is False
    assert config.read_text().splitlines() == lines


def test_an_empty_list_is_continued_onto_the_entry(tmp_path: Path) -> None:
    config = tmp_path / ".xscreensaver"
    config.write_text("mode: one\nprograms:\nlock: False\n")
    assert add_entry(config, xscreensaver_entry("osaas"))
    assert config.read_text().splitlines() == [
        "mode: one",
        "programs: \\",
        '  "osaas peer"  osaas screensaver -root \\n',
        "lock: False",
    ]


def test_no_settings_file_or_no_list_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / ".xscreensaver"
    with pytest.raises(InstallError, match="does not exist yet"):
        add_entry(missing, xscreensaver_entry("osaas"))
    assert not missing.exists()
    other = tmp_path / "other"
    other.write_text("colour: blue\n")
    with pytest.raises(InstallError, match="no `programs:` list"):
        add_entry(other, xscreensaver_entry("osaas"))
    assert other.read_text() == "colour: blue\n"
