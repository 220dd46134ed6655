"""The port a torrent session listens on when asked for any (port 0): the one chosen last time
if it is free, else one the system has free now, kept in the session's state dir.

Chosen here, not by libtorrent: on an unspecified host (0.0.0.0) libtorrent opens a socket per
interface, each on a random port of its own, and the one port the session reports is not
reachable on every address; with one port named, every interface gets that port. And kept: a
coordinator that restarts keeps seeding where its peers were fetching from.
"""

from __future__ import annotations

import socket
from pathlib import Path

PORT_FILE = "listen_port"


def chosen(state_dir: Path, host: str) -> int:
    """The port to listen on at `host`: the remembered one while it is free."""
    try:
        remembered = int((state_dir / PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        remembered = 0
    if 0 < remembered < 65536 and _is_free(host, remembered):
        return remembered
    return _free(host)


def remember(state_dir: Path, port: int) -> None:
    (state_dir / PORT_FILE).write_text(f"{port}\n")


def _is_free(host: str, port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libtorrent binds
            probe.bind((host, port))
    except OSError:
        return False
    return True


def _free(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
