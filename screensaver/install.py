"""The screensaver as an XScreenSaver hack: its entry in the `programs:` list of ~/.xscreensaver.

XScreenSaver keeps its whole list of hacks in that file (written the first time its settings
are opened); an entry is `"Name"  command -root`, one per line, each line continued with a
backslash after its `\\n`.
`add_entry` puts ours first in the list and changes nothing else; the file is replaced whole,
so a crash leaves the old one.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from overlay.errors import OsaasError

NAME = "osaas peer"
MARK = "screensaver -root"


class InstallError(OsaasError):
    """The entry cannot be added: one line for the user."""


def program_path() -> str:
    """How XScreenSaver should start osaas: the `osaas` script beside this Python, else on PATH."""
    beside = Path(sys.executable).with_name("osaas")
    if beside.exists():
        return str(beside)
    found = shutil.which("osaas")
    return found if found else f"{sys.executable} -m osaas"


def xscreensaver_entry(program: str) -> str:
    """The line for the `programs:` list of ~/.xscreensaver that runs this screensaver."""
    return f'  "{NAME}"  {program} {MARK} \\n\\'


def add_entry(config: Path, entry: str) -> bool:
    """Add `entry` to the programs of XScreenSaver's `config`; False when one is there already."""
    try:
        text = config.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InstallError(
            f"{config} does not exist yet: open XScreenSaver's settings once (xscreensaver-settings) so that it"
            " writes its list of screensavers, then run this again"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InstallError(f"cannot read {config}: {exc}") from exc
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if line.lstrip().startswith("programs:")), None)
    if at is None:
        raise InstallError(f"{config} has no `programs:` list; is it XScreenSaver's settings file?")
    if any(f'"{NAME}"' in line and MARK in line for line in lines):
        return False
    if lines[at].rstrip().endswith("\\"):
        lines.insert(at + 1, entry)
    else:  # an empty list: continue it onto our entry, which then ends it
        lines[at] = lines[at].rstrip() + " \\"
        lines.insert(at + 1, entry.removesuffix("\\"))
    staged = config.with_name(config.name + ".osaas-new")
    staged.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(staged, config)
    return True
